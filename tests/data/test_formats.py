"""Tests for ner/data/formats.py (and ner/data/records.py under it): JSON, JSON-lines and CSV token files and span JSONL as
the reader's rows, every bad row named by path:line, and prediction written as spans that read back."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from conftest import make_scaled_classifier_folder
from ner.errors import DataFileError
from ner.data.formats import read_rows
from ner.data.spans import spans_of

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def rows(path: Path, **options) -> list[tuple[list[str], list[str], int]]:
    return [(row["words"], row["tags"], row["line"]) for row in read_rows(path, **options)]


EU = (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"])
PETER = (["Peter", "Blackburn"], ["B-PER", "I-PER"])


# --- token rows ----------------------------------------------------------------------------------

TOKEN_FILES = [
    ("train.jsonl", '{"id": 0, "tokens": ["EU", "rejects", "German", "call"], "ner_tags": ["B-ORG", "O", "B-MISC", "O"]}\n'
     "\n"
     '{"id": 1, "tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]}\n', [1, 3]),
    ("train.json", '{"tokens": ["EU", "rejects", "German", "call"], "ner_tags": ["B-ORG", "O", "B-MISC", "O"]}\r\n'
     '{"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]}\r\n', [1, 2]),
    ("train.json", '{\n  "version": "1.0",\n  "data": [\n    {"tokens": ["EU", "rejects", "German", "call"],\n'
     '     "ner_tags": ["B-ORG", "O", "B-MISC", "O"]},\n    {"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]}\n  ]\n}\n', [4, 6]),
    ("train.json", '[{"tokens": ["EU", "rejects", "German", "call"], "ner_tags": ["B-ORG", "O", "B-MISC", "O"]},\n'
     '\n {"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]}]', [1, 3]),
    ("train.json", '{"data": [{"tokens": ["EU", "rejects", "German", "call"], "ner_tags": ["B-ORG", "O", "B-MISC", "O"]}, '
     '{"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]}]}', [1, 1]),
    ("train.csv", "id,tokens,ner_tags\n0,\"['EU', 'rejects', 'German', 'call']\",\"['B-ORG', 'O', 'B-MISC', 'O']\"\n"
     '1,"[""Peter"", ""Blackburn""]","[""B-PER"", ""I-PER""]"\n', [2, 3]),
    ("train.csv", "\ufefftokens,ner_tags\r\nEU rejects German call,B-ORG O B-MISC O\r\n\r\nPeter Blackburn,B-PER I-PER\r\n", [2, 4]),
]


@pytest.mark.parametrize(("name", "text", "lines"), TOKEN_FILES, ids=[
    "jsonl", "json-lines-crlf", "json-data-list", "json-array", "json-data-one-line", "csv-lists", "csv-spaces-bom",
])
def test_token_files_read_as_rows_with_their_lines(tmp_path, name, text, lines):
    assert rows(write(tmp_path, name, text)) == [(*EU, lines[0]), (*PETER, lines[1])]


def test_integer_tags_take_their_names_from_the_label_list(tmp_path):
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
    jsonl = write(tmp_path, "a.jsonl", '{"tokens": ["EU", "rejects", "German", "call"], "ner_tags": [3, 0, 5, 0]}\n')
    csv = write(tmp_path, "a.csv", 'tokens,ner_tags\nEU rejects German call,3 0 5 0\n"[""EU""]","[3]"\n')
    assert rows(jsonl, label_names=names) == [(*EU, 1)]
    assert rows(csv, label_names=names) == [(*EU, 2), (["EU"], ["B-ORG"], 3)]


def test_other_column_names(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"sentence": ["Peter", "Blackburn"], "labels": ["B-PER", "I-PER"], "tokens": [1]}\n')
    assert rows(path, text_column="sentence", label_column="labels") == [(*PETER, 1)]
    ours = write(tmp_path, "b.jsonl", '{"words": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}\n')
    assert rows(ours) == [(*PETER, 1)]
    # a "data" list of words is a record's field, not the {"data": [records]} document
    data = write(tmp_path, "c.json", '{"data": ["Peter", "Blackburn"], "labels": ["B-PER", "I-PER"]}\n')
    assert rows(data, text_column="data", label_column="labels") == [(*PETER, 1)]


def test_document_ids_group_records_into_documents(tmp_path):
    path = write(tmp_path, "a.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"tokens": ["a"], "ner_tags": ["O"], "document_id": "d1"},
        {"tokens": ["b"], "ner_tags": ["O"], "document_id": "d1"},
        {"tokens": ["c"], "ner_tags": ["O"]},
        {"tokens": ["d"], "ner_tags": ["O"], "document_id": 7},
    ]))
    assert [(r["document_id"], r["doc_start"]) for r in read_rows(path)] == [(0, True), (0, False), (1, False), (2, True)]


# --- bad token rows: path:line and what is wrong ---------------------------------------------------

BAD_TOKENS = [
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a", "b"], "ner_tags": ["O"]}\n', {},
     r":2: expected one tag per word in \"ner_tags\": 2 words in \"tokens\", found 1 tags"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a"], "ner_tags": ["PER"]}\n', {},
     r":2: word 1 \('a'\) has the tag \"PER\": expected O, or B, I, E, S, L or U followed by -TYPE"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": [1]}\n', {}, r":1: word 1 \('a'\) has the integer tag 1: integer tags need --label_list"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": [7]}\n', {"label_names": LABELS, "label_source": "labels.txt"},
     r":1: word 1 \('a'\) has the tag 7, but labels.txt names 7 labels \(tags 0 to 6\)"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["B-MISC"]}\n', {"label_names": LABELS, "label_source": "labels.txt"},
     r":1: word 1 \('a'\) has the tag 'B-MISC', which is not in the label list labels.txt"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["1"]}\n', {"label_names": LABELS},
     r":1: .*integer tags must be numbers, not strings"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": [true]}\n', {"label_names": LABELS}, r":1: word 1 \('a'\) has the tag true"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": [], "ner_tags": []}\n', {},
     r":2: \"tokens\" is empty: a row needs at least one word; remove the row"),
    ("a.jsonl", '{"tokens": ["a", null], "ner_tags": ["O", "O"]}\n', {}, r":1: \"tokens\" word 2 is null"),
    ("a.jsonl", '{"tokens": ["a", " "], "ner_tags": ["O", "O"]}\n', {}, r":1: \"tokens\" word 2 is \" \""),
    ("a.jsonl", '{"tokens": ["a\\tb"], "ner_tags": ["O"]}\n', {}, r":1: \"tokens\" word 1 'a\\tb' holds a tab or line break"),
    ("a.jsonl", '{"tokens": "a b", "ner_tags": ["O"]}\n', {}, r":1: \"tokens\" must be a list of words, found str"),
    ("a.jsonl", '{"tokens": ["\\ud83d"], "ner_tags": ["O"]}\n', {}, r":1: \"tokens\" holds the lone surrogate U\+D83D"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a"]}\n', {},
     r":2: the record has no \"ner_tags\" \(its fields: \['tokens'\]\)"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["O"]}\n["a"]\n', {}, r":2: expected a JSON object per record, found list"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a"], "ner_tags": ["O"],}\n', {},
     r":2: not valid JSON \(Expecting property name enclosed in double quotes at column 37\)"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["O"], "document_id": [1]}\n', {}, r":1: \"document_id\" must be a string or a number"),
    ("a.jsonl", '{"sentence": ["a"], "label": ["O"]}\n', {},
     r":1: cannot tell the records' fields: the first has \['sentence', 'label'\]; .*--text_column_name"),
    ("a.jsonl", '{"tokens": ["a"], "ner_tags": ["O"]}\n', {"text_column": "words"},
     r":1: cannot tell the records' fields"),
    ("a.json", '{\n "version": 1,\n "rows": []\n}', {}, r": expected a JSON object with a \"data\" array of records, found the keys \['version', 'rows'\]"),
    ("a.json", '{\n "data": [\n  {"tokens": ["a"], "ner_tags": ["O"]},\n  {"tokens": ["a"], "ner_tags": ["X"]}\n ]\n}', {},
     r":4: word 1 \('a'\) has the tag \"X\""),
    ("a.json", '[\n {"tokens": ["a"], "ner_tags": ["O"]}\n {"tokens": ["b"]}\n]', {}, r":3: not valid JSON: expected ',', found '{'"),
    ("a.json", '{\n "data": [\n  {"tokens": ["a"], "ner_tags": ["O"]},\n  {"tokens": ["a"] "ner_tags": ["O"]}\n ]\n}', {},
     r":4: not valid JSON \(Expecting ',' delimiter at column 20\)"),
    ("a.json", b'[{"tokens": ["a"], "ner_tags": ["O"]},\n {"tokens": ["caf\xe9"], "ner_tags": ["O"]}]', {},
     r":2: the file is not UTF-8: byte 0xe9 at byte offset 17 of the line"),
    ("a.jsonl", b'{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["caf\xe9"], "ner_tags": ["O"]}\n', {},
     r":2: the file is not UTF-8: byte 0xe9 at byte offset 16 of the line"),
    ("a.jsonl", "\n\n", {}, r": no records found: the file is empty"),
    ("a.csv", "tokens,ner_tags\na b,O O\na b,O\n", {}, r":3: expected one tag per word in \"ner_tags\": 2 words in \"tokens\", found 1 tags"),
    ("a.csv", "tokens,ner_tags\na b,O O\na b,O O,x\n", {}, r":3: expected 2 cells \(as the header row has\), found 3"),
    ("a.csv", 'tokens,ner_tags\n"[\'a\', \'b]","O O"\n', {}, r":2: column 'tokens' starts with \[ but is neither a JSON list nor a Python list"),
    ("a.csv", 'tokens,ner_tags\na,O\n"a b,O O\n', {}, r":3: not valid CSV \(unexpected end of data\)"),
    ("a.csv", "tokens,ner_tags\na,O\n,O\n", {}, r":3: \"tokens\" is empty"),
    ("a.csv", "tokens,tokens\na,O\n", {}, r":1: the header names the columns \['tokens'\] more than once"),
    ("a.csv", "", {}, r": the file is empty; expected a header row"),
    ("a.csv", 'text,label\nMaria,"[[0, 5, ""PER""]]"\n', {}, r":2: cannot tell the records' fields"),
]


@pytest.mark.parametrize(("name", "text", "options", "pattern"), BAD_TOKENS)
def test_a_bad_row_is_named_by_path_and_line(tmp_path, name, text, options, pattern):
    path = write(tmp_path, name, text)
    with pytest.raises(DataFileError, match="^" + re.escape(str(path)) + pattern):
        list(read_rows(path, **options))


# --- span annotations ----------------------------------------------------------------------------

SPAN_FILES = {
    "doccano": [
        {"id": 1, "text": "Maria Lopez visited Porto.", "label": [[0, 11, "PER"], [20, 25, "LOC"]]},
        {"id": 2, "text": "NewYorker news", "label": [[0, 3, "LOC"]]},
        {"id": 3, "text": "Nothing here", "label": []},
    ],
    "label-studio": [
        {"id": 1, "text": "Maria Lopez visited Porto.", "label": [
            {"start": 0, "end": 11, "text": "Maria Lopez", "labels": ["PER"]},
            {"start": 20, "end": 25, "text": "Porto", "labels": ["LOC"]}]},
        {"id": 2, "text": "NewYorker news", "label": [{"start": 0, "end": 3, "text": "New", "labels": ["LOC"]}]},
        {"id": 3, "text": "Nothing here", "label": []},
    ],
    "prodigy": [
        {"text": "Maria Lopez visited Porto.", "spans": [{"start": 0, "end": 11, "label": "PER"}, {"start": 20, "end": 25, "label": "LOC"}],
         "tokens": [{"text": "Maria", "start": 0, "end": 5, "id": 0}], "_input_hash": 1},
        {"text": "NewYorker news", "spans": [{"start": 0, "end": 3, "label": "LOC"}]},
        {"text": "Nothing here", "spans": []},
    ],
}
SPAN_ROWS = [
    (["Maria", "Lopez", "visited", "Porto", "."], ["B-PER", "I-PER", "O", "B-LOC", "O"], 1),
    (["New", "Yorker", "news"], ["B-LOC", "O", "O"], 2),
    (["Nothing", "here"], ["O", "O"], 3),
]


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


@pytest.mark.parametrize("tool", sorted(SPAN_FILES))
def test_span_files_of_each_tool(tmp_path, tool, caplog):
    path = write(tmp_path, "spans.jsonl", jsonl(SPAN_FILES[tool]))
    with caplog.at_level(logging.INFO, logger="ner.data.formats"):
        assert rows(path) == SPAN_ROWS
    field = "spans" if tool == "prodigy" else "label"
    assert caplog.messages == [
        f"{path}: 3 texts, 10 words; 3 spans from '{field}' (LOC 2, PER 1); 1 words split at a span boundary"
    ]


def test_span_text_and_field_names(tmp_path):
    path = write(tmp_path, "spans.json", jsonl([{"data": "Maria Lopez", "ner": [[0, 5, "PER"]]}]))
    assert rows(path, text_column="data", label_column="ner") == [(["Maria", "Lopez"], ["B-PER", "O"], 1)]


def test_a_span_type_outside_the_label_list_is_named_at_its_line(tmp_path):
    path = write(tmp_path, "spans.jsonl", jsonl(SPAN_FILES["doccano"][:1] + [{"text": "a b", "label": [[0, 3, "MISC"]]}]))
    with pytest.raises(DataFileError, match=re.escape(f"{path}:2: the word 'a' of a 'MISC' span is tagged 'B-MISC', which is not in the label list labels.txt")):
        list(read_rows(path, label_names=LABELS, label_source="labels.txt"))


BAD_SPANS = [
    ({"text": "Maria Lopez", "label": [[0, 5, "PER"], [3, 11, "PER"]]}, r'"label" spans 1 \[0, 5, \'PER\'\] and 2 \[3, 11, \'PER\'\] overlap'),
    ({"text": "Maria Lopez", "label": [[0, 12, "PER"]]}, r"offsets out of range: need 0 <= start < end <= 11"),
    ({"text": "Maria Lopez", "label": [{"start": 0, "end": 5, "text": "Lopez", "labels": ["PER"]}]}, r"its text 'Lopez' differs from the text at \[0, 5\], 'Maria'"),
    ({"text": "Maria Lopez"}, r"the record has no \"label\""),
    ({"text": 5, "label": []}, r"\"text\" must be a string, found int"),
    ({"text": " \r\n ", "label": []}, r"\"text\" holds no words; remove the record"),
    ({"text": "\ud83d x", "label": []}, r"\"text\" holds the lone surrogate U\+D83D"),
]


@pytest.mark.parametrize(("record", "pattern"), BAD_SPANS, ids=["overlap", "range", "text", "missing", "type", "no-words", "surrogate"])
def test_a_bad_span_record_is_named_by_path_and_line(tmp_path, record, pattern):
    path = write(tmp_path, "spans.jsonl", jsonl([SPAN_FILES["doccano"][0]]) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataFileError, match="^" + re.escape(f"{path}:3: ") + ".*" + pattern):
        list(read_rows(path))


def test_a_text_without_spans_field_is_told_apart(tmp_path):
    path = write(tmp_path, "spans.jsonl", '{"text": "Maria Lopez", "meta": {}}\n')
    with pytest.raises(DataFileError, match=re.escape(f"{path}:1: the first record has a \"text\" string but no spans in")):
        list(read_rows(path))


# --- prediction written as spans ------------------------------------------------------------------


def test_prediction_written_as_spans_reads_back(tiny_bert, tmp_path, one_torch_thread):
    """--output_format spans: the input's fields kept, and the predicted entities read back as the same spans."""
    from ner.predict.cli import main
    from ner.predict.predictor import NerPredictor

    model = make_scaled_classifier_folder(tiny_bert, tmp_path / "model", LABELS)
    records = [dict(r, meta={"n": i}) for i, r in enumerate(SPAN_FILES["doccano"])]
    records.append({"id": 4, "meta": {}, "text": "Ωmega 😀 café\r\nnews\u200b flash. " * 3, "label": []})
    source = write(tmp_path, "in.jsonl", jsonl(records))
    output = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(source), "--output", str(output),
                 "--output_format", "spans", "--device", "cpu"]) == 0
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    predictor = NerPredictor(str(model), device="cpu")
    expected = predictor.predict_text([r["text"] for r in records])
    assert sum(map(len, expected)) >= 3, "the model must predict entities for this test to mean anything"
    for record, row, entities in zip(records, written, expected):
        assert row["id"] == record["id"] and row["meta"] == record["meta"] and row["text"] == record["text"]
        assert row["label"] == [[e.start, e.end, e.type] for e in entities]
        assert [(s["start"], s["end"], s["label"], s["text"]) for s in row["spans"]] == [(e.start, e.end, e.type, e.text) for e in entities]
    # and run_ner's reader reads the file back: the text's words, tagged with exactly the predicted entities
    for row, record, entities in zip(read_rows(output), written, expected):
        offsets = [m.span() for m in re.finditer(r"\w+|\S", record["text"])]
        assert row["words"] == [record["text"][a:b] for a, b in offsets]  # no word split: entities are whole words
        assert spans_of(row["tags"], offsets) == [(e.start, e.end, e.type) for e in entities]
