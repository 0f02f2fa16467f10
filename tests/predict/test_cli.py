"""``python -m ner predict`` (ner/predict/cli.py): the input format, untagged CoNLL, documents for context, errors."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from pathlib import Path

import pytest

from conftest import PER_LOC_LABELS as LABELS
from ner.predict.cli import main, predict_file
from ner.predict.io import detect_format
from ner.errors import DataFileError
from ner.predict.predictor import NerPredictor


@pytest.fixture
def context_predictor(context_model) -> NerPredictor:
    return NerPredictor(str(context_model), device="cpu", batch_size=8)


def spy_on_tag(predictor: NerPredictor, monkeypatch: pytest.MonkeyPatch) -> list[tuple[list, list | None, list]]:
    """Record every `predictor.tag(sentences, documents)` call with what it returned, and still tag."""
    calls: list[tuple[list, list | None, list]] = []
    tag = predictor.tag

    def spy(sentences, documents=None):
        tagged = tag(sentences, documents=documents)
        calls.append(([list(s) for s in sentences], None if documents is None else list(documents), tagged))
        return tagged

    monkeypatch.setattr(predictor, "tag", spy)
    return calls


def groups(calls: list[tuple[list, list | None, list]]) -> list[list[list[str]]]:
    """The sentences of all calls, grouped into documents (consecutive equal ids of one call)."""
    found: list[list[list[str]]] = []
    for sentences, documents, _ in calls:
        assert documents is not None, "a context model was not given documents"
        assert len(documents) == len(sentences)
        previous = object()
        for sentence, document in zip(sentences, documents):
            if document != previous:
                found.append([])
            found[-1].append(sentence)
            previous = document
    return found


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


# --- CoNLL input without gold tags ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "-DOCSTART-\n\nMaria\nvisited\nPorto\n.\n\nthe\ncity\n",  # one column: words only
        "-DOCSTART- -X-\n\nMaria NNP\nvisited VBD\nPorto NNP\n. .\n\nthe DT\ncity NN\n",  # word POS, no tag column
    ],
    ids=["one column", "word POS"],
)
def test_untagged_conll_is_tagged_as_word_tab_predicted(plain_model, tmp_path, text):
    source = write(tmp_path, "in.conll", text)
    output = tmp_path / "out.conll"
    assert main(["predict", "--model", str(plain_model), "--input", str(source), "--output", str(output), "--device", "cpu"]) == 0
    blocks = [b.splitlines() for b in output.read_text().split("\n\n") if b.strip()]
    assert blocks[0] == ["-DOCSTART-\tO"]
    rows = [[line.split("\t") for line in block] for block in blocks[1:]]
    assert [[row[0] for row in block] for block in rows] == [["Maria", "visited", "Porto", "."], ["the", "city"]]
    assert all(len(row) == 2 and row[1] in LABELS for block in rows for row in block)  # word<TAB>predicted


def test_tagged_conll_keeps_its_gold(plain_model, tmp_path):
    source = write(tmp_path, "in.conll", "Maria\tB-PER\nvisited\tO\n")
    output = tmp_path / "out.conll"
    main(["predict", "--model", str(plain_model), "--input", str(source), "--output", str(output), "--device", "cpu"])
    rows = [line.split("\t") for line in output.read_text().splitlines() if line]
    assert [row[:2] for row in rows] == [["Maria", "B-PER"], ["visited", "O"]] and all(len(row) == 3 for row in rows)


@pytest.mark.parametrize(
    "gold, expected",
    [
        ([["B-PER", "O"], ["O"]], "-DOCSTART-\tO\tO\n\nMaria\tB-PER\tB-PER\nsaid\tO\tB-LOC\n\nx\tO\tO\n\n"),
        ([None, None], "-DOCSTART-\tO\n\nMaria\tB-PER\nsaid\tB-LOC\n\nx\tO\n\n"),
    ],
    ids=["with gold", "without gold"],
)
def test_conll_output_layout(gold, expected):
    """The exact bytes: ``word[<TAB>gold]<TAB>predicted``, a blank line after each sentence, -DOCSTART- kept."""
    from ner.predict.io import Record, write_records
    from ner.predict.predictor import Tagged

    records = [Record(id=1, words=["Maria", "said"], gold=gold[0], doc_start=True), Record(id=2, words=["x"], gold=gold[1])]
    tagged = [Tagged(["Maria", "said"], ["B-PER", "B-LOC"], [0.9, 0.8]), Tagged(["x"], ["O"], [1.0])]
    out = io.StringIO()
    write_records(out, records, tagged, predictor=None, output_format="conll")
    assert out.getvalue() == expected


def test_conll_that_mixes_tagged_and_untagged_lines_is_refused(plain_model, tmp_path):
    source = write(tmp_path, "in.conll", "Maria NNP\nvisited VBD\n\nPorto B-LOC\n")
    with pytest.raises(DataFileError, match=re.escape(f"{source}:4: column 1 holds the tag 'B-LOC', but on line 1")):
        main(["predict", "--model", str(plain_model), "--input", str(source), "--output", str(tmp_path / "o"), "--device", "cpu"])
    assert not (tmp_path / "o").exists()


# --- the input format, when the extension does not say ---------------------------------------------

CONLL_2003 = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"
SNIFFED = [
    ("conll-2003 style", CONLL_2003, "conll"),
    ("tab-separated", "EU\tB-ORG\nrejects\tO\n\nPeter\tB-PER\n", "conll"),
    ("tab-separated without tags", "EU\tNNP\nrejects\tVBZ\n", "conll"),
    ("space-separated, no -DOCSTART-", "EU NNP I-ORG\nrejects VBZ O\n", "conll"),
    ("bom and -DOCSTART- alone", "\ufeff-DOCSTART-\n\nEU\nrejects\n", "conll"),
    ("prose", "Maria Lopez visited Porto.\n\nSo did I\n\tThe city was warm in May.\n", "text"),
    ("json lines", '{"words": ["EU", "rejects"]}\n\n{"text": "Peter"}\n', "jsonl"),
    ("empty", "\n\n", "text"),
]


@pytest.mark.parametrize(("text", "expected"), [s[1:] for s in SNIFFED], ids=[s[0] for s in SNIFFED])
def test_format_of_a_txt_file_comes_from_its_content(tmp_path, caplog, text, expected):
    path = write(tmp_path, "data.txt", text)
    with caplog.at_level(logging.INFO, logger="ner.predict.io"):
        assert detect_format(str(path)) == expected
    assert f"{path}: reading as {expected}, from its content (" in caplog.text


UNSURE = [
    ("one word per line", "EU\nrejects\n\nPeter\n", r"hold one word each"),
    ("one tagged-looking line", "so do I\n", r"1 of its first 1 non-blank lines end in a word that reads as a tag"),
    ("json and prose", '{"text": "a"}\nhello there\n', r"1 of its first 2 non-blank lines are JSON objects"),
    ("ragged tabs", "EU\tB-ORG\nrejects O\n", r"tab-separated, but not all"),
    ("tabs in prose", "Maria visited\tPorto today\n", r"spaces inside columns"),
]


@pytest.mark.parametrize(("text", "pattern"), [u[1:] for u in UNSURE], ids=[u[0] for u in UNSURE])
def test_an_unclear_format_is_refused_naming_input_format(tmp_path, text, pattern):
    path = write(tmp_path, "data.txt", text)
    with pytest.raises(DataFileError, match=re.escape(f"{path}: cannot tell the input format from the extension (.txt)")
                       + ".*" + pattern + r".*; give --input_format conll, jsonl or text$"):
        detect_format(str(path))


@pytest.mark.parametrize("name", ["conll2003/test.txt", "ncbi_disease/test.txt"])
def test_the_shared_corpora_are_recognised_as_conll(shared_data, name):
    assert detect_format(str(shared_data / name)) == "conll"


def test_extension_and_flags_win_over_content(tmp_path):
    prose = write(tmp_path, "data.tsv", "Maria visited Porto\n")
    assert detect_format(str(prose)) == "conll"  # the extension says; the reader will report what is wrong
    assert detect_format(str(write(tmp_path, "x.txt", "EU\n")), "conll") == "conll"
    assert detect_format(str(write(tmp_path, "y.txt", CONLL_2003)), text_per_file=True) == "text"
    with pytest.raises(ValueError, match=r"--text_per_file is for raw text; it cannot be used with --input_format conll"):
        detect_format(str(prose), "conll", text_per_file=True)


def test_a_conll_2003_txt_file_is_tagged_as_conll(plain_model, tmp_path):
    source = write(tmp_path, "test.txt", CONLL_2003)
    output = tmp_path / "out.txt"
    main(["predict", "--model", str(plain_model), "--input", str(source), "--output", str(output), "--device", "cpu"])
    rows = [line.split("\t") for line in output.read_text().splitlines() if line and not line.startswith("-DOCSTART-")]
    assert [row[:2] for row in rows] == [["EU", "B-ORG"], ["rejects", "O"], ["Peter", "B-PER"]]  # words, not lines


def test_the_sniffer_reads_only_the_start_of_the_file(tmp_path, monkeypatch):
    import ner.predict.io

    monkeypatch.setattr(ner.predict.io, "SNIFF_LINE_BYTES", 64)
    huge = write(tmp_path, "big.txt", '{"text": "' + "word " * 1000 + '"}\n' + "not json\n")
    assert detect_format(str(huge)) == "jsonl"  # a long first line is judged by its start, the rest is not read


# --- documents, for a model with document context ------------------------------------------------


def test_jsonl_document_id_groups_records_for_context(context_predictor, tmp_path, monkeypatch):
    records = [
        {"id": 1, "document_id": "a", "words": ["Maria", "visited"]},
        {"id": 2, "document_id": "a", "words": ["Porto", "."]},
        {"id": 3, "words": ["alone"]},  # no document_id: a document of its own
        {"id": 4, "document_id": "b", "text": "the city"},
        {"id": 5, "document_id": "b", "words": ["was", "warm"]},
        {"id": 6, "document_id": "a", "words": ["again"]},  # "a" again, but not in a row: a new document
    ]
    source = write(tmp_path, "in.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")
    calls = spy_on_tag(context_predictor, monkeypatch)
    output = io.StringIO()
    predict_file(context_predictor, str(source), output, chunk_size=1, progress=False)
    assert groups(calls) == [[["Maria", "visited"], ["Porto", "."]], [["alone"]], [["the", "city"], ["was", "warm"]], [["again"]]]
    rows = [json.loads(line) for line in output.getvalue().splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.get("document_id") for r in rows] == ["a", "a", None, "b", "b", "a"]  # echoed for joining back


def test_text_paragraphs_are_documents_for_context(context_predictor, tmp_path, monkeypatch):
    source = write(tmp_path, "in.txt", "Maria visited Porto.\nThe city was warm.\n\n\nPeter stayed home.\r\nHe read.\n")
    calls = spy_on_tag(context_predictor, monkeypatch)
    output = io.StringIO()
    predict_file(context_predictor, str(source), output, input_format="text", chunk_size=1, progress=False)
    assert groups(calls) == [
        [["Maria", "visited", "Porto", "."], ["The", "city", "was", "warm", "."]],
        [["Peter", "stayed", "home", "."], ["He", "read", "."]],
    ]
    assert [json.loads(line)["id"] for line in output.getvalue().splitlines()] == [1, 2, 5, 6]  # line numbers


def test_conll_documents_are_still_passed(context_predictor, tmp_path, monkeypatch):
    """A guard (this worked before): -DOCSTART- documents reach a context model, chunks cut only between them."""
    source = write(tmp_path, "in.conll", "-DOCSTART-\n\nMaria\tO\nvisited\tO\n\nPorto\tO\n\n-DOCSTART-\n\nthe\tO\ncity\tO\n")
    calls = spy_on_tag(context_predictor, monkeypatch)
    predict_file(context_predictor, str(source), io.StringIO(), chunk_size=1, progress=False)
    assert groups(calls) == [[["Maria", "visited"], ["Porto"]], [["the", "city"]]]


def test_context_reaches_only_a_context_model(context_model, plain_model, tmp_path, monkeypatch):
    sentences = [["Maria", "visited", "Porto", "."], ["the", "city", "was", "warm", "in", "may", "."], ["Peter", "left", "."]]
    grouped = write(tmp_path, "grouped.jsonl", "".join(json.dumps({"document_id": 1, "words": w}) + "\n" for w in sentences))
    loose = write(tmp_path, "loose.jsonl", "".join(json.dumps({"words": w}) + "\n" for w in sentences))

    def scores(model: Path, path: Path) -> list[list[float]]:
        """Each word's tag probability: continuous, so any change in what the model saw shows."""
        predictor = NerPredictor(str(model), device="cpu")
        calls = spy_on_tag(predictor, monkeypatch)
        predict_file(predictor, str(path), io.StringIO(), progress=False)
        return [t.scores for _, _, tagged in calls for t in tagged]

    assert scores(context_model, grouped) != scores(context_model, loose)  # the neighbours reached the model
    assert scores(plain_model, grouped) == scores(plain_model, loose)


def test_a_model_without_context_gets_no_documents(plain_model, tmp_path, monkeypatch):
    predictor = NerPredictor(str(plain_model), device="cpu")
    source = write(tmp_path, "in.jsonl", '{"document_id": 1, "words": ["a"]}\n{"document_id": 1, "words": ["b"]}\n')
    calls = spy_on_tag(predictor, monkeypatch)
    predict_file(predictor, str(source), io.StringIO(), chunk_size=1, progress=False)
    assert [documents for _, documents, _ in calls] == [None, None]  # and chunks are cut anywhere


# --- bad input ------------------------------------------------------------------------------------

BAD = [
    ("in.jsonl", '{"words": ["a"]}\n{"words": ["b"], "document_id": [1]}\n', r":2: \"document_id\" must be a string or a number"),
    ("in.jsonl", '{"text": null}\n', r":1: \"text\" must be a string, found NoneType"),
    ("in.jsonl", '{"words": ["a"]}\n{"words": \n', r":2: not valid JSON \(.*\); expected one object per line"),
    ("in.txt", "Maria visited Porto\ncaf\xe9 au lait\n", r":2: the file is not UTF-8: byte 0xe9"),
]


@pytest.mark.parametrize(("name", "text", "pattern"), BAD, ids=["document_id", "text", "json", "latin-1"])
def test_bad_input_names_path_and_line(plain_model, tmp_path, name, text, pattern):
    source = tmp_path / name
    source.write_bytes(text.encode("latin-1") if "\xe9" in text else text.encode())
    with pytest.raises(DataFileError, match=re.escape(str(source)) + pattern):
        main(["predict", "--model", str(plain_model), "--input", str(source), "--output", str(tmp_path / "o"),
              "--input_format", "text" if name.endswith(".txt") else "jsonl", "--device", "cpu"])
    assert not (tmp_path / "o").exists()


def test_from_the_shell_bad_input_is_one_error_line(plain_model, tmp_path, monkeypatch, capsys):
    source = write(tmp_path, "in.jsonl", '{"words": ["a"]}\n{"words": "a b"}\n')
    monkeypatch.setattr(sys, "argv", ["ner", "predict", "--model", str(plain_model), "--input", str(source),
                                      "--output", str(tmp_path / "o"), "--device", "cpu"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err  # after the progress bars: one line, no traceback
    assert err.endswith(f'\npython -m ner predict: error: {source}:2: "words" must be a list of strings.\n')
    assert "Traceback" not in err
    monkeypatch.setattr(sys, "argv", ["ner", "predict", "--model", str(plain_model), "--input", str(tmp_path / "nope.txt")])
    with pytest.raises(SystemExit):
        main()
    assert capsys.readouterr().err == f"python -m ner predict: error: --input {tmp_path / 'nope.txt'}: no such file\n"


def test_words_with_text_give_offsets_into_the_words(plain_model, tmp_path):
    """A record with both "words" and "text": entity offsets index the words joined by spaces, the text is not echoed."""
    source = write(tmp_path, "in.jsonl", json.dumps({"words": ["Maria", "visited", "Porto"] * 5, "text": "other"}) + "\n")
    output = tmp_path / "out.jsonl"
    main(["predict", "--model", str(plain_model), "--input", str(source), "--output", str(output), "--device", "cpu"])
    row = json.loads(output.read_text())
    joined = " ".join(row["words"])
    assert "text" not in row and row["entities"]
    assert all(joined[e["start"] : e["end"]] == e["text"] for e in row["entities"])
