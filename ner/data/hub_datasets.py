"""Datasets from the Hub (``--dataset_name``) into the same columns as the CoNLL reader."""

from __future__ import annotations

import logging
from typing import Any

import datasets

logger = logging.getLogger(__name__)


def _tag_names(feature: Any) -> list[str] | None:
    """The names of a ``List(ClassLabel)`` feature, or None when the tags are plain strings."""
    inner = getattr(feature, "feature", None)
    return list(inner.names) if hasattr(inner, "names") else None


def load_hub_dataset(
    name: str,
    config_name: str | None = None,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | None = None,
    token: str | None = None,
):
    """Load a token-classification dataset and give it ``words``, ``tags``, ``document_id``, ``doc_start``, ``line``.

    ``line`` is the 1-based row number (error messages say ``name[split]:row``). Columns default to
    ``tokens``/``ner_tags`` (the usual Hub layout), else the first and last list columns.
    """

    raw = datasets.load_dataset(name, config_name, cache_dir=cache_dir, token=token)
    first = next(iter(raw.values()))
    features = first.features
    list_columns = [column for column, feature in features.items() if hasattr(feature, "feature")]
    text_column = text_column or ("tokens" if "tokens" in features else (list_columns[0] if list_columns else None))
    label_column = label_column or ("ner_tags" if "ner_tags" in features else (list_columns[-1] if list_columns else None))
    for what, column in (("--text_column_name", text_column), ("--label_column_name", label_column)):
        if column not in features:
            raise ValueError(
                f"Dataset {name} has columns {list(features)}; pass {what} naming the column of word lists "
                "(text) or tag lists (labels)."
            )
    names = _tag_names(features[label_column])
    logger.info("Dataset %s: words from %r, tags from %r.", name, text_column, label_column)

    def convert(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        tags = batch[label_column]
        return {
            "words": batch[text_column],
            "tags": [[names[t] for t in row] for row in tags] if names else tags,
            "document_id": [0] * len(indices),
            "doc_start": [False] * len(indices),
            "line": [i + 1 for i in indices],
        }

    return datasets.DatasetDict(
        {
            split: dataset.map(
                convert, batched=True, with_indices=True, remove_columns=dataset.column_names, desc=f"Reading {split}"
            )
            for split, dataset in raw.items()
        }
    )
