"""The inputs and outputs of ``python -m ner predict``: which format a file is (``detect_format``), its inputs as
``Record``s (``read_records``: CoNLL sentences, text lines or files, JSON objects) and the tagged output
(``write_records``: CoNLL, JSON lines, spans). Used by the command (``ner.predict.cli``) and by each process of a
sharded run (``ner.predict.sharded``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ner.data.conll import DOCSTART, read_conll, write_sentence
from ner.data.records import decode_utf8
from ner.data.schemes import as_scored, is_tag
from ner.data.spans import span_output
from ner.errors import DataFileError
from ner.predict.predictor import entity_dicts, split_words

logger = logging.getLogger(__name__)

FORMATS = ("conll", "jsonl", "text")
OUTPUT_FORMATS = ("conll", "jsonl", "spans")  # spans: JSON lines annotation tools load (ner/data/spans.py)
EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl",
    ".conll": "conll", ".conll03": "conll", ".conllu": "conll", ".iob": "conll", ".bio": "conll", ".tsv": "conll",
}
DOCUMENT_FIELD = "document_id"  # JSON lines: consecutive records with the same value form one document
SNIFF_LINES = 20  # non-blank lines looked at to tell the format of a file whose extension does not
SNIFF_LINE_BYTES = 1 << 20  # a longer line is looked at by its start only
_BOM = b"\xef\xbb\xbf"


@dataclass
class Record:
    """One input to tag (a CoNLL sentence, a text line or file, a JSON object) and what its output needs."""

    id: Any
    words: list[str]
    text: str | None = None  # raw text the words were split from; entity offsets index it
    offsets: list[tuple[int, int]] | None = None  # each word's (start, end) in ``text``
    gold: list[str] | None = None  # CoNLL input with a tag column
    document: int | None = None  # records with the same number in a row are one document; None: no document
    doc_start: bool = False  # the first record of a document (a chunk may end before it)
    document_id: Any = None  # the JSON record's own document_id, echoed in the output
    fields: dict[str, Any] | None = None  # the JSON record itself, kept in --output_format spans


# --- the input format ---------------------------------------------------------------------------


def _sniff_lines(path: str) -> list[tuple[str, bool]]:
    """Up to SNIFF_LINES non-blank lines from the start of the file, each with whether it was read whole."""
    lines: list[tuple[str, bool]] = []
    with open(path, "rb") as stream:
        raw = stream.readline(SNIFF_LINE_BYTES).removeprefix(_BOM)
        while raw and len(lines) < SNIFF_LINES:
            whole = raw.endswith(b"\n") or len(raw) < SNIFF_LINE_BYTES
            # Undecodable bytes do not change the shape of a line; the reader reports them with path:line.
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.strip():
                lines.append((text, whole))
            if not whole:
                break  # the rest of a very long line would read as more lines
            raw = stream.readline(SNIFF_LINE_BYTES)
    return lines


def _is_json_object(text: str, whole: bool) -> bool:
    if not text.lstrip().startswith("{"):
        return False
    if not whole:
        return True  # too long to parse here; the JSON reader checks it
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def sniff_format(path: str) -> tuple[str | None, str]:
    """The format the first non-blank lines show (None when they do not tell), and why."""
    lines = _sniff_lines(path)
    if not lines:
        return "text", "it holds no text"
    n = len(lines)
    json_lines = sum(_is_json_object(text, whole) for text, whole in lines)
    if json_lines == n:
        return "jsonl", f"its first {n} non-blank lines are JSON objects"
    if json_lines:
        return None, f"{json_lines} of its first {n} non-blank lines are JSON objects, the others are not"
    if any(text.split(maxsplit=1)[0].lstrip("\ufeff") == DOCSTART for text, _ in lines):
        return "conll", "it has -DOCSTART- lines"
    # A tab inside the line separates columns; one that only indents prose does not.
    tabbed = [text.strip().split("\t") for text, _ in lines if "\t" in text.strip()]
    if tabbed:
        if len(tabbed) < n or len({len(row) for row in tabbed}) > 1:
            return None, "some of its first lines are tab-separated, but not all with the same number of columns"
        fields = [[field.strip() for field in row] for row in tabbed]
        if all(is_tag(row[-1]) for row in fields):
            return "conll", "its first lines are tab-separated columns ending in a tag"
        if any(" " in field for row in fields for field in row):
            return None, "its first lines are tab-separated, but with spaces inside columns and no tag column"
        return "conll", "its first lines are tab-separated columns (no tag column: read without gold tags)"
    rows = [text.split() for text, _ in lines]
    if all(len(row) == 1 for row in rows):
        return None, "its first lines hold one word each: CoNLL words without tags, or one-word text lines?"
    tagged = [row for row in rows if len(row) > 1 and is_tag(row[-1])]
    if len(tagged) == n and n > 1 and len({len(row) for row in rows}) == 1:
        return "conll", f"its first {n} lines are {len(rows[0])} space-separated columns ending in a tag"
    if 2 * len(tagged) >= n:
        return None, f"{len(tagged)} of its first {n} non-blank lines end in a word that reads as a tag (O, B-X, ...)"
    return "text", "its first lines are neither CoNLL token lines nor JSON objects"


def detect_format(path: str, input_format: str | None = None, *, text_per_file: bool = False) -> str:
    """The input format: as given, else from the extension, else from the content; logged with the reason."""
    if input_format is not None:
        if input_format not in FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(FORMATS)}, not {input_format!r}")
        if text_per_file and input_format != "text":
            raise ValueError(f"--text_per_file is for raw text; it cannot be used with --input_format {input_format}")
        return input_format
    suffix = Path(path).suffix.lower()
    if text_per_file:
        found, why = "text", "--text_per_file"
    elif suffix in EXTENSIONS:
        found, why = EXTENSIONS[suffix], f"the extension {suffix}"
    else:
        found, why = sniff_format(path)
        if found is None:
            raise DataFileError(
                path, None, f"cannot tell the input format from the extension ({suffix or 'none'}) or the content: "
                f"{why}; give --input_format conll, jsonl or text",
            )
        why = f"its content ({why})"
    logger.info("%s: reading as %s, from %s", path, found, why)
    return found


# --- reading --------------------------------------------------------------------------------------


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; lines end in LF, CRLF or CR, as Python's universal newlines."""
    number = 0
    with open(path, "rb") as stream:
        for raw in stream:
            text = decode_utf8(path, number + 1, raw.removeprefix(_BOM) if number == 0 else raw)
            for piece in text.removesuffix("\n").removesuffix("\r").split("\r"):
                number += 1
                yield number, piece


def _conll_records(path: str) -> Iterator[Record]:
    # As in training, a file without -DOCSTART- lines gets no document context.
    has_documents = False
    for sentence in read_conll(path, tags_optional=True):
        has_documents = has_documents or sentence.doc_start
        # The gold column as run_ner.py writes it: IOB1's entities opened by I- read as B- (ner.data.schemes.as_scored).
        gold = as_scored(sentence.tags) if sentence.tags is not None else None
        yield Record(id=f"{path}:{sentence.line}", words=sentence.words, gold=gold,
                     document=sentence.document_id if has_documents else None, doc_start=sentence.doc_start)


def _text_records(path: str, text_per_file: bool) -> Iterator[Record]:
    if text_per_file:
        text = decode_utf8(path, 1, Path(path).read_bytes().removeprefix(_BOM))
        words, offsets = split_words(text)
        yield Record(id=path, words=words, text=text, offsets=offsets, document=0)
        return
    document, starts = 0, True
    for number, line in _lines(path):
        if not line.strip():
            if not starts:
                document += 1  # a blank line ends the document (the paragraph)
            starts = True
            continue
        words, offsets = split_words(line)
        yield Record(id=number, words=words, text=line, offsets=offsets, document=document, doc_start=starts)
        starts = False


def _jsonl_records(path: str) -> Iterator[Record]:
    document, previous = -1, None
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(path, number, f"not valid JSON ({error.msg} at column {error.colno}); expected "
                                'one object per line, e.g. {"words": ["a", "b"]} or {"text": "a b"}') from None
        if not isinstance(record, dict) or not ({"words", "text"} & set(record)):
            raise DataFileError(path, number, 'expected an object with "words" (a list of strings) or "text".')
        text, offsets = None, None
        if "words" in record:
            words = record["words"]
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise DataFileError(path, number, '"words" must be a list of strings.')
        elif isinstance(record["text"], str):
            text = record["text"]
            words, offsets = split_words(text)
        else:
            raise DataFileError(path, number, f'"text" must be a string, found {type(record["text"]).__name__}.')
        key = record.get(DOCUMENT_FIELD)
        if key is not None and (isinstance(key, bool) or not isinstance(key, (str, int, float))):
            raise DataFileError(path, number, f'"{DOCUMENT_FIELD}" must be a string or a number, found '
                                f"{json.dumps(key)[:40]}; records with the same value in a row form one document")
        starts = key is not None and (previous is None or key != previous)
        if starts:
            document += 1
        previous = key
        yield Record(id=record.get("id", number), words=words, text=text, offsets=offsets,
                     document=document if key is not None else None, doc_start=starts, document_id=key, fields=record)


def read_records(path: str, input_format: str, *, text_per_file: bool = False) -> Iterator[Record]:
    """The inputs of ``path``, one `Record` per sentence (CoNLL), line or file (text), or object (JSON lines)."""
    if input_format == "conll":
        return _conll_records(path)
    if input_format == "text":
        return _text_records(path, text_per_file)
    if input_format == "jsonl":
        return _jsonl_records(path)
    raise ValueError(f"input_format must be one of {', '.join(FORMATS)}, not {input_format!r}")


# --- writing ----------------------------------------------------------------------


def write_records(out: TextIO, records: list[Record], tagged: list, predictor: Any, output_format: str) -> None:
    """CoNLL: ``word[<TAB>gold]<TAB>predicted`` lines; JSON lines: id, text, words, tags and entity spans;
    spans: the input record's own fields, ``text`` and the entities as ``spans`` and ``label`` (`ner.data.spans.span_output`)."""
    for record, result in zip(records, tagged):
        if output_format == "conll":
            tags = (result.tags,) if record.gold is None else (record.gold, result.tags)
            write_sentence(out, (result.words, *tags), doc_start=record.doc_start)
            continue
        # Offsets index the raw text when there is one, else the words joined by single spaces.
        entities = predictor.entities(result, record.text, record.offsets)
        if output_format == "spans":
            text = record.text if record.text is not None else " ".join(result.words)
            row = span_output(record.fields or {"id": record.id}, text, entity_dicts(entities))
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            continue
        row: dict[str, Any] = {"id": record.id}
        if record.document_id is not None:
            row[DOCUMENT_FIELD] = record.document_id
        if record.text is not None:
            row["text"] = record.text
        row.update(words=result.words, tags=result.tags, entities=entity_dicts(entities))
        out.write(json.dumps(row, ensure_ascii=False) + "\n")

