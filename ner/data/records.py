"""JSON, JSON-lines and CSV files read record by record, each record with the file line it starts on.

JSON: JSON lines (one object per line, blank lines ignored), or one JSON document holding an array
of records, or an object whose ``"data"`` is that array (its first line tells which: JSON lines when
it is a whole object, other than ``{"data": [objects]}``). CSV: a header row, then one record per
row, cells quoted as RFC 4180 says (a quoted cell may span lines). UTF-8, a byte order mark allowed.
Bad bytes and bad syntax raise `DataFileError` at ``path:line``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ner.errors import DataFileError

_BOM = b"\xef\xbb\xbf"


def decode_utf8(path: str, first_line: int, data: bytes) -> str:
    """``data`` (one line, or the whole file from ``first_line`` 1) as UTF-8, or an error at the line of the bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        raise DataFileError(
            path, first_line + data.count(b"\n", 0, error.start), f"the file is not UTF-8: byte "
            f"0x{data[error.start]:02x} at byte offset {error.start - line_start} of the line cannot be decoded; "
            f"re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > fixed{Path(path).suffix}`",
        ) from None


def _raw_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text with its line ending) of a UTF-8 file; a byte order mark opening it is dropped."""
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            yield number, decode_utf8(path, number, raw.removeprefix(_BOM) if number == 1 else raw)


def _json_error(path: str, error: json.JSONDecodeError) -> DataFileError:
    return DataFileError(
        path, error.lineno, f"not valid JSON ({error.msg} at column {error.colno}); expected JSON lines (one object "
        'per line) or one JSON document: an array of records, or {"data": [records]}',
    )


def _whole_json_records(path: str, text: str) -> Iterator[tuple[int, Any]]:
    """The records of a JSON array, or of the ``"data"`` array of a JSON object, each with its first line."""
    decoder = json.JSONDecoder()
    space = re.compile(r"[ \t\n\r]*")

    def skip(position: int) -> int:
        return space.match(text, position).end()

    def value(position: int) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise _json_error(path, error) from None

    def expect(position: int, characters: str) -> int:
        if position >= len(text) or text[position] not in characters:
            line = text.count("\n", 0, position) + 1
            found = repr(text[position]) if position < len(text) else "the end of the file"
            raise DataFileError(path, line, f"not valid JSON: expected {' or '.join(map(repr, characters))}, found {found}")
        return position + 1

    def array(position: int) -> Iterator[tuple[int, Any]]:
        position = skip(expect(position, "["))
        line, counted = 1, 0
        if text.startswith("]", position):
            return position + 1
        while True:
            line += text.count("\n", counted, position)
            counted = position
            record, position = value(position)
            yield line, record
            position = skip(position)
            if text.startswith("]", position):
                return position + 1
            position = skip(expect(position, ","))

    position = skip(0)
    if text.startswith("[", position):
        position = yield from array(position)
    elif text.startswith("{", position):
        position, keys, found = skip(position + 1), [], False
        while not text.startswith("}", position):
            if not text.startswith('"', position):
                expect(position, '"')  # an object's keys are strings
            key, position = value(position)
            keys.append(key)
            position = skip(expect(skip(position), ":"))
            if key == "data" and text.startswith("[", position):
                position = yield from array(position)
                found = True
            else:
                _, position = value(position)
            position = skip(position)
            if not text.startswith("}", position):
                position = skip(expect(position, ","))
        position += 1
        if not found:
            raise DataFileError(
                path, None, f'expected a JSON object with a "data" array of records, found the keys {keys}; or give '
                "JSON lines (one record per line) or one array of records",
            )
    else:
        expect(position, "[{")
    if skip(position) < len(text):
        line = text.count("\n", 0, skip(position)) + 1
        raise DataFileError(path, line, "not valid JSON: more data after the end of the document")


def json_records(path: str) -> Iterator[tuple[int, Any]]:
    """(first line, record) of a JSON-lines file, or of a JSON array / ``{"data": [...]}`` document."""
    lines = _raw_lines(path)
    for number, line in lines:
        if not line.strip():
            continue
        try:
            first = json.loads(line)
        except json.JSONDecodeError:
            first = None
        # {"data": [objects]} on one line is a document; {"data": [words], ...} a JSON-lines record.
        data = first.get("data") if isinstance(first, dict) else None
        one_document = line.lstrip().startswith("[") or first is None or (
            isinstance(data, list) and all(isinstance(record, dict) for record in data)
        )
        if one_document:
            lines.close()
            data = Path(path).read_bytes().removeprefix(_BOM)
            yield from _whole_json_records(path, decode_utf8(path, 1, data))
            return
        yield number, first
        break
    for number, line in lines:
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(
                path, number, f"not valid JSON ({error.msg} at column {error.colno}); JSON lines need one complete "
                "object per line",
            ) from None


def csv_records(path: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line, {column: cell}) of each row of a CSV file with a header row."""
    lines = (line for _, line in _raw_lines(path))
    reader = csv.reader(lines, strict=True)  # a stray quote is an error, not a guess
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise DataFileError(
                path, start, f"not valid CSV ({error}); quote a cell that holds a comma, quote or line break",
            ) from None
        if not row:  # a blank line
            start = reader.line_num + 1
            continue
        if header is None:
            header = row
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise DataFileError(path, start, f"the header names the columns {repeated} more than once; rename them")
        elif len(row) != len(header):
            raise DataFileError(
                path, start, f"expected {len(header)} cells (as the header row has), found {len(row)}; quote a cell "
                "that holds a comma",
            )
        else:
            yield start, dict(zip(header, row))
        start = reader.line_num + 1
    if header is None:
        raise DataFileError(
            path, None, "the file is empty; expected a header row (e.g. tokens,ner_tags) and a row per sentence",
        )
