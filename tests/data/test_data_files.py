"""Tests for ner/data/loading.py: each split's file read in its format, the Arrow cache, and run_ner training on
JSON-lines, JSON, CSV and span files."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from conftest import DEMO_DATA
from ner.data import formats
from ner.data.conll import FEATURES
from ner.data.loading import load_data_files
from ner.errors import DataFileError
from test_formats import EU, PETER, SPAN_FILES, SPAN_ROWS, TOKEN_FILES, jsonl, write


def mixed_files(tmp_path: Path) -> dict[str, str]:
    return {
        "train": str(write(tmp_path, "train.jsonl", TOKEN_FILES[0][1])),
        "validation": str(write(tmp_path, "dev.txt", "Peter\tB-PER\nBlackburn\tI-PER\n")),
        "test": str(write(tmp_path, "test.jsonl", jsonl(SPAN_FILES["doccano"]))),
    }


def test_loader_reads_each_file_in_its_format(tmp_path, monkeypatch):
    files, cache = mixed_files(tmp_path), str(tmp_path / "cache")
    splits = load_data_files(files, cache_dir=cache)
    assert all(dataset.features == FEATURES for dataset in splits.values())
    assert [(r["words"], r["tags"], r["line"]) for r in splits["train"]] == [(*EU, 1), (*PETER, 3)]
    assert [(r["words"], r["tags"], r["line"]) for r in splits["validation"]] == [(*PETER, 1)]
    assert [(r["words"], r["tags"], r["line"]) for r in splits["test"]] == SPAN_ROWS
    # unchanged files come from the Arrow cache; a changed one is read again
    monkeypatch.setattr(formats, "read_rows", lambda *a, **k: pytest.fail("read_rows ran: the cache was not reused"))
    again = load_data_files(files, cache_dir=cache)
    assert again["test"].to_list() == splits["test"].to_list()
    Path(files["test"]).write_text(jsonl(SPAN_FILES["doccano"][:1]))
    monkeypatch.undo()
    assert load_data_files(files, cache_dir=cache)["test"].num_rows == 1


def test_loader_raises_the_reader_error(tmp_path):
    files = mixed_files(tmp_path)
    Path(files["test"]).write_text('{"text": "a", "label": [[0, 2, "X"]]}\n')
    with pytest.raises(DataFileError, match=re.escape(f"{files['test']}:1: ") + ".*offsets out of range"):
        load_data_files(files, cache_dir=str(tmp_path / "cache"))


def test_conll_files_alone_load_as_before(tmp_path):
    files = {"train": str(write(tmp_path, "train.txt", "Peter\tB-PER\n"))}
    load_data_files(files, cache_dir=str(tmp_path / "cache"))
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == ["conll"]


# --- through run_ner and python -m ner predict --------------------------------------------------


def demo_sentences(name: str) -> list[tuple[list[str], list[str]]]:
    from ner.data.conll import read_conll

    return [(s.words, s.tags) for s in read_conll(DEMO_DATA / name)][:40]


def as_spans(words: list[str], tags: list[str]) -> dict:
    """A doccano record of a tagged sentence: the words joined by spaces, an entity per B-/I- run."""
    from ner.data.schemes import entities

    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    return {"text": " ".join(words), "label": [[starts[a], starts[b - 1] + len(words[b - 1]), t] for a, b, t in entities(tags)]}


def predictions(path: Path) -> list[list[str]]:
    return [[line.split("\t")[0] for line in block.splitlines()] for block in path.read_text().split("\n\n")
            if block.strip() and not block.startswith("-DOCSTART-")]


@pytest.mark.integration
@pytest.mark.parametrize("layout", ["tokens", "spans"])
def test_run_ner_trains_on_json_files(tiny_bert, tmp_path, layout, one_torch_thread):
    from run_ner import main

    train, dev = demo_sentences("train.txt"), demo_sentences("dev.txt")
    label_list = sorted({tag for _, tags in train + dev for tag in tags}, key=lambda t: (t != "O", t))
    extra = []
    if layout == "tokens":  # integer tags named by --label_list, dev data as CSV
        write(tmp_path, "labels.txt", "\n".join(label_list) + "\n")
        train_file = write(tmp_path, "train.jsonl", jsonl([{"tokens": w, "ner_tags": [label_list.index(t) for t in tags]} for w, tags in train]))
        table = io.StringIO()
        csv.writer(table).writerows([["tokens", "ner_tags"], *([" ".join(w), " ".join(t)] for w, t in dev)])
        dev_file = write(tmp_path, "dev.csv", table.getvalue())
        extra = ["--label_list", str(tmp_path / "labels.txt")]
    else:
        train_file = write(tmp_path, "train.jsonl", jsonl([as_spans(*s) for s in train]))
        dev_file = write(tmp_path, "dev.json", json.dumps({"data": [as_spans(*s) for s in dev]}, indent=1))
    results = main([
        "--model_name_or_path", str(tiny_bert), "--train_file", str(train_file), "--validation_file", str(dev_file),
        "--test_file", str(dev_file), "--output_dir", str(tmp_path / "out"), "--data_cache_dir", str(tmp_path / "cache"),
        "--do_train", "--do_eval", "--do_predict", "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--report_to", "none", *extra,
    ])
    assert results["train_samples"] > 0 and 0.0 <= results["eval_f1"] <= 1.0
    assert results["eval_samples"] == results["predict_samples"]
    expected_words = [w for w, _ in dev]
    if layout == "spans":  # the text split by the word rule: the demo words, with punctuation runs split apart
        expected_words = [re.findall(r"\w+|\S", " ".join(w)) for w in expected_words]
    assert predictions(tmp_path / "out" / "predict_predictions.txt") == expected_words
    labels = json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]
    if layout == "tokens":
        assert [labels[str(i)] for i in range(len(labels))] == label_list  # the list's order is the model's
