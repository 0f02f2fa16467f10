"""The label list of a run: built from the data or read from ``--label_list``, the data's tags prepared for it
(IOB1 read as IOB2), and the tags a fine-tuned model cannot predict; errors name the file and line of the tag."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ner.data.formats import file_format
from ner.data.records import decode_utf8
from ner.data.schemes import (
    OUTSIDE, build_label_list, count_entity_starts, detect_scheme, is_tag, split_tag, to_iob2,
)
from ner.errors import DataFileError

logger = logging.getLogger(__name__)


def read_label_file(path: str | Path) -> list[str]:
    """A ``--label_list`` file: one label per line, in the order the model should use."""
    labels: list[str] = []
    seen: dict[str, int] = {}
    text = decode_utf8(str(path), 1, Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf"))
    for number, raw in enumerate(text.splitlines(), start=1):
        label = raw.strip()
        if not label:
            continue
        if not is_tag(label):
            raise DataFileError(
                path, number, f"label {label!r} is not 'O' or PREFIX-TYPE with PREFIX one of B, I, E, S, L, U."
            )
        if label in seen:
            raise DataFileError(path, number, f"label {label!r} repeats line {seen[label]}; list each label once.")
        seen[label] = number
        labels.append(label)
    if OUTSIDE not in seen:
        raise DataFileError(path, None, "the label list has no 'O' label; add a line 'O'.")
    return labels


def prepare_tags(raw, files: dict[str, str], label_list_file: str | None = None):
    """Detect the scheme over all splits, convert IOB1 to IOB2, and build or check the label list.

    ``raw`` is a DatasetDict with ``tags`` and ``line`` columns; ``files`` maps its split names to the
    file each came from (for error messages). Returns ``(datasets, label_list, scheme)`` where scheme
    is the one the returned tags use.
    """
    tags_by_split = {split: list(raw[split]["tags"]) for split in raw}
    scheme = detect_scheme(tags for split_tags in tags_by_split.values() for tags in split_tags)
    if scheme in ("IOB1", "IOB2"):
        for split, split_tags in tags_by_split.items():
            opened_by_i = sum(count_entity_starts(tags)[1] for tags in split_tags)
            if opened_by_i and scheme == "IOB1":
                logger.info("%s: IOB1 tags; %d entities opened by I- rewritten as B- (IOB2).", files[split], opened_by_i)
            elif opened_by_i:
                logger.warning(
                    "%s: %d entities open with I- after O or another type, which IOB2 does not allow; "
                    "they are read as B- (as conlleval does).",
                    files[split],
                    opened_by_i,
                )
        raw = raw.map(lambda example: {"tags": to_iob2(example["tags"])}, desc="IOB2 tags")
        tags_by_split = {split: list(raw[split]["tags"]) for split in raw}
        scheme = "IOB2"
    if label_list_file:
        label_list = read_label_file(label_list_file)
        known = set(label_list)
        for split, split_tags in tags_by_split.items():
            for tags, line in zip(split_tags, raw[split]["line"]):
                for offset, tag in enumerate(tags):
                    if tag not in known:
                        where, word = tag_location(files[split], line, offset)
                        raise DataFileError(
                            files[split],
                            where,
                            f"label {tag!r}{word} is not in the label list {label_list_file}; add it there, "
                            "or leave out --label_list to build the list from the data.",
                        )
    else:
        label_list = build_label_list((tags for split_tags in tags_by_split.values() for tags in split_tags), scheme)
    logger.info("Scheme %s, %d labels: %s", scheme, len(label_list), " ".join(label_list))
    return raw, label_list, scheme


def tag_location(path: str, line: int, offset: int) -> tuple[int, str]:
    """Where the ``offset``-th tag of a sentence read at ``line`` is: ``(line, note for the message)``.

    A CoNLL file has a word per line, so the tag's own line; JSON/CSV files and Hub datasets hold a
    sentence per record (row), so the record's line and the word's number in it.
    """
    if os.path.isfile(path) and file_format(path) == "conll":
        return line + offset, ""
    return line, f" (word {offset + 1})"


def check_predictable(raw, files: dict[str, str], label_list: Sequence[str], model_name: str) -> None:
    """Compare the data's tags with the labels a fine-tuned model can predict (``label_list``, its own).

    A training split with a tag outside them is refused at the tag's line: training needs a label for every
    tag, and replacing the trained classifier is for ``--new_classifier`` to ask. In evaluation splits such
    tags stay in the gold and are scored as misses; a warning counts them per type.
    """
    known = set(label_list)
    for split in raw:
        unknown: dict[str, int] = {}
        first_line: int | None = None
        for tags, line in zip(raw[split]["tags"], raw[split]["line"]):
            for offset, tag in enumerate(tags):
                if tag in known:
                    continue
                where, word = tag_location(files[split], line, offset)
                if split == "train":
                    raise DataFileError(
                        files[split],
                        where,
                        f"tag {tag!r}{word} is not one of the labels {model_name} was fine-tuned for ({' '.join(label_list)}). "
                        "Pass --new_classifier to train a new classifier for the data's labels (the trained one is "
                        "discarded), or start from the base encoder.",
                    )
                entity_type = split_tag(tag)[1] or tag
                unknown[entity_type] = unknown.get(entity_type, 0) + 1
                first_line = where if first_line is None else first_line
        if unknown:
            logger.warning(
                "%s: %s tags the model %s cannot predict (its labels: %s); they are scored as misses (first at line %d).",
                files[split],
                ", ".join(f"{count} {entity_type}" for entity_type, count in sorted(unknown.items())),
                model_name,
                " ".join(label_list),
                first_line,
            )
