"""Loading one data file per split into a `datasets.DatasetDict`, each file read in its format.

CoNLL files alone go through `ner.data.conll.load_conll`, as they always have. Otherwise `DataFilesBuilder`
reads each split's file with its own reader (`ner.data.conll` or `ner.data.formats`, by extension) into the
same features, and keeps the Arrow cache while the files, the options and the readers' code are
unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets.builder import Key

from ner.data import formats
from ner.data.conll import ConllBuilder, ConllConfig, load_conll, load_splits

def _source_hash() -> str:
    # Part of the cache path: a change to any reader never serves stale Arrow files.
    digest = hashlib.sha256()
    for module in ("conll.py", "records.py", "formats.py", "spans.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class DataFilesConfig(ConllConfig):
    """`ConllConfig` and the JSON/CSV fields: which hold the words (or text) and the tags (or spans), and tag names."""

    text_column: str | None = None
    label_column_name: str | None = None
    label_names: tuple[str, ...] | None = None
    label_source: str | None = None


class DataFilesBuilder(ConllBuilder):
    """One split per data file, each read by its format's reader (CoNLL, JSON or CSV)."""

    BUILDER_CONFIG_CLASS = DataFilesConfig

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("hash", _source_hash())
        super().__init__(*args, **kwargs)

    def _generate_examples(self, path: str) -> Iterator[tuple[Key, dict]]:
        if formats.file_format(path) == "conll":
            yield from super()._generate_examples(path)
            return
        rows = formats.read_rows(
            path,
            text_column=self.config.text_column,
            label_column=self.config.label_column_name,
            label_names=self.config.label_names,
            label_source=self.config.label_source,
        )
        for index, row in enumerate(rows):
            yield Key(0, index), row


def load_data_files(
    data_files: dict[str, str],
    *,
    cache_dir: str | None = None,
    word_column: int = 0,
    label_column: int = -1,
    delimiter: str | None = None,
    text_column: str | None = None,
    label_column_name: str | None = None,
    label_names: Sequence[str] | None = None,
    label_source: str | None = None,
) -> datasets.DatasetDict:
    """Read one file per split, each in the format its extension names (`ner.data.formats.file_format`).

    ``word_column``/``label_column``/``delimiter`` are for CoNLL files; ``text_column``,
    ``label_column_name``, ``label_names`` and ``label_source`` for JSON and CSV (`ner.data.formats.read_rows`).
    """
    if data_files and all(formats.file_format(path) == "conll" for path in data_files.values()):
        return load_conll(
            data_files, cache_dir=cache_dir, word_column=word_column, label_column=label_column, delimiter=delimiter
        )
    return load_splits(
        DataFilesBuilder,
        data_files,
        cache_dir=cache_dir,
        word_column=word_column,
        label_column=label_column,
        delimiter=delimiter,
        text_column=text_column,
        label_column_name=label_column_name,
        label_names=tuple(label_names) if label_names is not None else None,
        label_source=label_source,
    )
