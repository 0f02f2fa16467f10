"""Data files in the formats people have, read into the CoNLL reader's rows (`ner.data.conll.FEATURES`).

By extension: ``.json``, ``.jsonl`` and ``.ndjson`` are JSON, ``.csv`` is CSV, anything else is CoNLL
(`ner.data.conll`; `ner.data.loading` loads each split's file with its reader). A JSON file is JSON lines,
or one array of records, or an object whose ``"data"`` is that array (`ner.data.records`). Its first
record says what all of them are:

- span annotations: a ``"text"`` string and its entities in ``"spans"``, ``"entities"`` or
  ``"label"`` (`ner.data.spans`: doccano, Label Studio JSON-min, Prodigy/spaCy);
- token rows, as the Hugging Face ``run_ner.py`` example reads them: a list of words in ``"tokens"``
  (or ``"words"``) and a list of tags in ``"ner_tags"`` (or ``"tags"``); tags are strings (``B-PER``)
  or integers, which ``--label_list`` names (the first label is tag 0).

``text_column``/``label_column`` name other fields. A CSV file has a header row and token rows; a
list cell is JSON (``["EU", "rejects"]``), a Python list (``['EU', 'rejects']``, as pandas writes
one) or words separated by spaces; in CSV a tag written as digits is an integer.

Every row becomes ``words``, ``tags``, ``document_id``, ``doc_start`` and ``line`` (the 1-based file
line where the record starts, `ner.data.records`). Consecutive records with the same ``"document_id"`` form one document
(for ``--context_size``); a record without one is a document of its own. Anything that cannot be read
as given raises `DataFileError` at ``path:line``: nothing is padded, cut or skipped.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ner.data.records import csv_records, json_records
from ner.data.schemes import is_tag
from ner.data.spans import SPAN_FIELDS, parse_spans, words_and_tags
from ner.errors import DataFileError

logger = logging.getLogger(__name__)

JSON_EXTENSIONS = (".json", ".jsonl", ".ndjson")
CSV_EXTENSIONS = (".csv",)
WORD_FIELDS = ("tokens", "words")  # looked for in this order when no column is named
TAG_FIELDS = ("ner_tags", "tags")
DOCUMENT_FIELD = "document_id"
_DIGITS = re.compile(r"[0-9]+")
_BREAKS = ("\t", "\n", "\r")  # a word holding one would break the tab-separated predictions file


def file_format(path: str | os.PathLike) -> str:
    """``json``, ``csv`` or ``conll``, from the extension."""
    suffix = Path(path).suffix.lower()
    return "json" if suffix in JSON_EXTENSIONS else "csv" if suffix in CSV_EXTENSIONS else "conll"


@dataclass
class _Layout:
    """What the first record showed: the kind of records and the fields that hold words and tags (or text and spans)."""

    kind: str  # "tokens" or "spans"
    words: str  # the field of words (tokens) or of the text (spans)
    tags: str  # the field of tags (tokens) or of the spans (spans)


def _layout(path: str, line: int, record: Any, text_column: str | None, label_column: str | None) -> _Layout:
    if not isinstance(record, dict):
        raise DataFileError(path, line, f"expected a JSON object per record, found {type(record).__name__}")
    keys = list(record)
    text_field = text_column or "text"
    span_field = label_column or next((name for name in SPAN_FIELDS if name in record), None)
    spans_possible = file_format(path) == "json"  # a CSV cell is always a string: CSV holds token rows only
    if spans_possible and isinstance(record.get(text_field), str) and span_field in record:
        return _Layout("spans", text_field, span_field)
    words = text_column or next((name for name in WORD_FIELDS if name in record), None)
    tags = label_column or next((name for name in TAG_FIELDS if name in record), None)
    if words in record and tags in record:
        return _Layout("tokens", words, tags)
    if spans_possible and isinstance(record.get(text_field), str):
        missing = f'"{label_column}"' if label_column else " or ".join(f'"{name}"' for name in SPAN_FIELDS)
        raise DataFileError(
            path, line, f'the first record has a "{text_field}" string but no spans in {missing} (its fields: {keys}); '
            "give each text its entities, e.g. \"label\": [[0, 5, \"PER\"]], or name the field with --label_column_name",
        )
    raise DataFileError(
        path, line, f"cannot tell the records' fields: the first has {keys}; expected a list of words in \"tokens\" "
        f"and tags in \"ner_tags\", or a \"text\" string with \"spans\"/\"entities\"/\"label\"; name other fields "
        "with --text_column_name and --label_column_name",
    )


class _Tags:
    """Checks a row's tags and turns integers into label names."""

    def __init__(self, path: str, label_names: Sequence[str] | None, label_source: str | None) -> None:
        self.path, self.names, self.source = path, label_names, label_source or "--label_list"
        self.known = set(label_names) if label_names is not None else None

    def tag(self, line: int, position: int, word: str, value: Any, from_csv: bool) -> str:
        where = f"word {position} ({word!r})"
        if from_csv and isinstance(value, str) and _DIGITS.fullmatch(value):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if self.names is None:
                raise DataFileError(
                    self.path, line, f"{where} has the integer tag {value}: integer tags need --label_list FILE naming "
                    "them, one label per line, the first naming tag 0",
                )
            if not 0 <= value < len(self.names):
                raise DataFileError(
                    self.path, line, f"{where} has the tag {value}, but {self.source} names {len(self.names)} labels "
                    f"(tags 0 to {len(self.names) - 1}); add the missing labels to it",
                )
            return self.names[value]
        if not isinstance(value, str) or not is_tag(value):
            digits = isinstance(value, str) and _DIGITS.fullmatch(value)
            hint = "; integer tags must be numbers, not strings" if digits else ""
            raise DataFileError(
                self.path, line, f"{where} has the tag {json.dumps(value, ensure_ascii=False)[:40]}: expected O, or B, I, "
                f"E, S, L or U followed by -TYPE (B-PER, I-LOC, ...), or an integer that --label_list names{hint}",
            )
        if self.known is not None and value not in self.known:
            raise DataFileError(
                self.path, line, f"{where} has the tag {value!r}, which is not in the label list {self.source}; add it "
                "there, or leave out --label_list to build the list from the data",
            )
        return value


def _cell_list(path: str, line: int, column: str, cell: str) -> list[Any]:
    """A CSV cell as a list: JSON, a Python list literal, or words separated by spaces."""
    stripped = cell.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return stripped.split()
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataFileError(
                path, line, f"column {column!r} starts with [ but is neither a JSON list nor a Python list: "
                f"{stripped[:60]!r}; write it as a JSON list, e.g. [\"EU\", \"rejects\"]",
            ) from None
    if not isinstance(value, list):
        raise DataFileError(path, line, f"column {column!r} is not a list: {stripped[:60]!r}")
    return value


def _words(path: str, line: int, field: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise DataFileError(path, line, f'"{field}" must be a list of words, found {type(value).__name__}')
    if not value:
        raise DataFileError(path, line, f'"{field}" is empty: a row needs at least one word; remove the row')
    for position, word in enumerate(value, start=1):
        if not isinstance(word, str) or not word.strip():
            raise DataFileError(
                path, line, f'"{field}" word {position} is {json.dumps(word)[:40]}: every word must be a string with '
                "a non-space character",
            )
        if any(c in word for c in _BREAKS):
            raise DataFileError(
                path, line, f'"{field}" word {position} {word!r} holds a tab or line break, which the tab-separated '
                "predictions files cannot hold; split it into words or replace the character",
            )
    _check_encodable(path, line, field, value)
    return value


def _check_encodable(path: str, line: int, field: str, strings: Sequence[str]) -> None:
    """Refuse a lone UTF-16 surrogate (JSON's \\ud83d without its pair), which no UTF-8 file can hold."""
    try:
        "".join(strings).encode("utf-8")
    except UnicodeEncodeError as error:
        raise DataFileError(
            path, line, f'"{field}" holds the lone surrogate U+{ord(error.object[error.start]):04X} (half of a UTF-16 '
            "pair); the exporting tool cut an emoji or other character in two: fix the text",
        ) from None


class _Documents:
    """Document numbers: consecutive records with the same document_id are one document; no id, a document alone."""

    def __init__(self, path: str) -> None:
        self.path, self.number, self.previous = path, -1, None

    def next(self, line: int, record: dict[str, Any]) -> tuple[int, bool]:
        key = record.get(DOCUMENT_FIELD)
        key = None if key == "" else key  # an empty CSV cell
        if key is not None and (isinstance(key, bool) or not isinstance(key, (str, int, float))):
            raise DataFileError(
                self.path, line, f'"{DOCUMENT_FIELD}" must be a string or a number, found {json.dumps(key)[:40]}; '
                "records with the same value in a row form one document",
            )
        starts = key is not None and key != self.previous
        if key is None or starts:
            self.number += 1
        self.previous = key
        return self.number, starts


def read_rows(
    path: str | os.PathLike,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
    label_source: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows (words, tags, document_id, doc_start, line) of a JSON or CSV file, token rows or span annotations.

    ``label_names`` name integer tags (tag i is ``label_names[i]``) and, when given, every string tag and
    span type must be among them (``label_source`` is the file named in that error).
    """
    path = os.fspath(path)
    records = csv_records(path) if file_format(path) == "csv" else json_records(path)
    tags = _Tags(path, label_names, label_source)
    documents = _Documents(path)
    layout: _Layout | None = None
    rows = words_read = split = 0
    span_types: Counter[str] = Counter()
    for line, record in records:
        if layout is None:
            layout = _layout(path, line, record, text_column, label_column)
        if not isinstance(record, dict):
            raise DataFileError(path, line, f"expected a JSON object per record, found {type(record).__name__}")
        for field in (layout.words, layout.tags):
            if field not in record:
                empty = " (give [] for a text without entities)" if layout.kind == "spans" else ""
                raise DataFileError(
                    path, line, f'the record has no "{field}" (its fields: {list(record)}); every record needs '
                    f'"{layout.words}" and "{layout.tags}"{empty}',
                )
        document_id, doc_start = documents.next(line, record)
        if layout.kind == "spans":
            text = record[layout.words]
            if not isinstance(text, str):
                raise DataFileError(path, line, f'"{layout.words}" must be a string, found {type(text).__name__}')
            _check_encodable(path, line, layout.words, [text])
            spans = parse_spans(record[layout.tags], text, path, line, layout.tags)
            words, _, row_tags, row_split = words_and_tags(text, spans)
            if not words:
                raise DataFileError(path, line, f'"{layout.words}" holds no words; remove the record')
            known = tags.known
            unknown = next(((w, t) for w, t in zip(words, row_tags) if known is not None and t not in known), None)
            if unknown:
                raise DataFileError(
                    path, line, f"the word {unknown[0]!r} of a {unknown[1][2:]!r} span is tagged {unknown[1]!r}, which "
                    f"is not in the label list {tags.source}; add it there, or leave out --label_list",
                )
            split += row_split
            span_types.update(span.label for span in spans)
        else:
            from_csv = file_format(path) == "csv"
            values = [record[layout.words], record[layout.tags]]
            if from_csv:
                values = [_cell_list(path, line, field, cell) for field, cell in zip((layout.words, layout.tags), values)]
            words = _words(path, line, layout.words, values[0])
            if not isinstance(values[1], list) or len(values[1]) != len(words):
                found = f"{len(values[1])} tags" if isinstance(values[1], list) else type(values[1]).__name__
                raise DataFileError(
                    path, line, f'expected one tag per word in "{layout.tags}": {len(words)} words in "{layout.words}", '
                    f"found {found}",
                )
            row_tags = [tags.tag(line, i, w, value, from_csv) for i, (w, value) in enumerate(zip(words, values[1]), 1)]
        rows += 1
        words_read += len(words)
        yield {"words": words, "tags": row_tags, "document_id": document_id, "doc_start": doc_start, "line": line}
    if layout is None:
        raise DataFileError(path, None, "no records found: the file is empty; expected one record per sentence or text")
    if layout.kind == "spans":
        per_type = ", ".join(f"{label} {count}" for label, count in sorted(span_types.items())) or "none"
        logger.info(
            "%s: %d texts, %d words; %d spans from %r (%s); %d words split at a span boundary",
            path, rows, words_read, sum(span_types.values()), layout.tags, per_type, split,
        )
    else:
        logger.info("%s: %d rows, %d words; words from %r, tags from %r", path, rows, words_read, layout.words, layout.tags)
