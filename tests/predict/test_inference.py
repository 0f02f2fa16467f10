"""Prediction API and CLI: agreement with pipeline(), exact character offsets, streaming, long input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from conftest import DEMO_DATA
from ner.predict.cli import main as cli_main
from ner.predict.cli import predict_file
from ner.data.conll import read_conll
from ner.data.alignment import NO_POSITION
from ner.predict.predictor import NerPredictor, batch_arrays, split_words


@pytest.fixture(scope="module")
def trained(demo_model) -> Path:
    """An output folder over the demo labels whose random classifier is scaled up so that it predicts many (and
    messy) entities: a tiny model trained for seconds predicts only O, which would make agreement checks vacuous."""
    return demo_model


@pytest.fixture(scope="module")
def predictor(trained) -> NerPredictor:
    return NerPredictor(str(trained), device="cpu", batch_size=8)


def short_texts() -> list[str]:
    return [" ".join(s.words) for s in list(read_conll(DEMO_DATA / "test.txt"))[:25]]


@pytest.mark.parametrize("multiple", [1, 8])
def test_batch_arrays_pad_each_row_and_mark_its_word_starts(multiple):
    ids = [[101, 7, 8, 102], [101, 9, 102], [101, 5, 6, 4, 3, 2, 102]]
    positions = [[1, NO_POSITION, 2], [1], [1, 3, NO_POSITION, 5]]
    padded, attention, first = batch_arrays(ids, positions, pad_id=0, multiple=multiple)
    width = 7 if multiple == 1 else 8
    assert padded.shape == attention.shape == first.shape == (3, width)
    for row, (row_ids, row_positions) in enumerate(zip(ids, positions)):
        assert padded[row].tolist() == row_ids + [0] * (width - len(row_ids))
        assert attention[row].tolist() == [1] * len(row_ids) + [0] * (width - len(row_ids))
        assert [i for i in range(width) if first[row, i]] == [p for p in row_positions if p != NO_POSITION]


def test_entities_agree_with_the_transformers_pipeline(trained, predictor):
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(trained), aggregation_strategy="first", device="cpu")
    ours = predictor.predict_text(short_texts())
    theirs = tagger(short_texts())
    total = 0
    for text, mine, reference in zip(short_texts(), ours, theirs):
        assert [(e.start, e.end, e.type) for e in mine] == [(r["start"], r["end"], r["entity_group"]) for r in reference], text
        total += len(mine)
    assert total > 5  # the comparison covered real entities


@pytest.mark.parametrize(
    "text",
    ["Café in Zürich 🙂 near José\u200bLopez\r\nand São Paulo", "\ufeffMaria\u200b visited 👩\u200d🔬 Porto.\r\n", "   ", ""],
)
def test_raw_text_offsets_map_back_to_the_source(predictor, text):
    words, offsets = split_words(text)
    assert [text[start:end] for start, end in offsets] == words
    assert all(not w.isspace() for w in words)
    tagged = predictor.tag([words])[0]
    assert len(tagged.tags) == len(words)
    for entity in predictor.predict_text([text])[0]:
        assert text[entity.start : entity.end] == entity.text and entity.text.strip() == entity.text


@pytest.mark.usefixtures("one_torch_thread")  # ~2,500 windows: 0.7 s on one thread, 1-20 s on two busy ones
def test_20000_word_document_gets_one_tag_per_word_in_order(predictor):
    words = [f"word{i % 50}" for i in range(20000)]
    predictor.max_seq_length, saved = 64, predictor.max_seq_length
    try:
        tagged = predictor.tag([words, ["short"]])
    finally:
        predictor.max_seq_length = saved
    assert tagged[0].words == words and len(tagged[0].tags) == 20000 and len(tagged[1].tags) == 1


def test_max_seq_length_follows_the_training_rule(trained):
    """As run_ner.py: default the model's limit (128 here, under 512); a window over the limit is refused, not clamped."""
    assert NerPredictor(str(trained), device="cpu").max_seq_length == 128
    assert NerPredictor(str(trained), device="cpu", max_seq_length=32).max_seq_length == 32
    with pytest.raises(ValueError, match=r"max_seq_length 1000 is over the model's limit of 128 positions .*give at most 128"):
        NerPredictor(str(trained), device="cpu", max_seq_length=1000)


def test_cli_conll_round_trip_keeps_every_word(trained, tmp_path):
    output = tmp_path / "pred.conll"
    assert cli_main(["predict", "--model", str(trained), "--input", str(DEMO_DATA / "test.txt"),
                     "--input_format", "conll", "--output", str(output), "--device", "cpu"]) == 0
    expected = list(read_conll(DEMO_DATA / "test.txt"))
    blocks = [b for b in output.read_text().split("\n\n") if b.strip() and not b.startswith("-DOCSTART-")]
    assert [[line.split("\t")[0] for line in b.splitlines()] for b in blocks] == [s.words for s in expected]
    assert [[line.split("\t")[1] for line in b.splitlines()] for b in blocks] == [s.tags for s in expected]
    assert output.read_text().count("-DOCSTART-") == sum(s.doc_start for s in expected)


def test_cli_text_and_jsonl_give_entity_spans(trained, tmp_path):
    texts = short_texts()[:6]
    (tmp_path / "in.txt").write_text("\r\n".join(texts) + "\r\n", encoding="utf-8")
    cli_main(["predict", "--model", str(trained), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "a.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == texts
    for row in rows:
        for entity in row["entities"]:
            assert row["text"][entity["start"] : entity["end"]] == entity["text"] and 0 < entity["score"] <= 1
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"id": i, "words": split_words(t)[0]}) for i, t in enumerate(texts)))
    cli_main(["predict", "--model", str(trained), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "b.jsonl")])
    by_words = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r["id"] for r in by_words] == list(range(6))
    assert [r["tags"] for r in by_words] == [r["tags"] for r in rows]  # the same words give the same tags


def test_streaming_in_small_chunks_gives_the_same_output(predictor):
    whole, pieces = io.StringIO(), io.StringIO()
    predict_file(predictor, str(DEMO_DATA / "dev.txt"), whole, input_format="conll", progress=False)
    predict_file(predictor, str(DEMO_DATA / "dev.txt"), pieces, input_format="conll", chunk_size=7, progress=False)
    assert whole.getvalue() == pieces.getvalue()


def test_bad_jsonl_line_names_file_and_line(trained, tmp_path):
    from ner.errors import DataFileError

    (tmp_path / "bad.jsonl").write_text('{"words": ["a"]}\n{"words": "a b"}\n')
    with pytest.raises(DataFileError, match=r"bad\.jsonl:2: \"words\" must be a list of strings"):
        cli_main(["predict", "--model", str(trained), "--input", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_cpu_precision_choices(trained, predictor):
    import torch

    words = [s.words for s in read_conll(DEMO_DATA / "test.txt")][:40]
    assert NerPredictor(str(trained), device="cpu", dtype="auto").autocast is None  # float32 unless asked
    bf16 = NerPredictor(str(trained), device="cpu", dtype="bfloat16", batch_size=8)
    assert bf16.autocast is torch.bfloat16
    full, half = predictor.tag(words), bf16.tag(words)
    assert [len(t.tags) for t in half] == [len(w) for w in words]
    same = sum(a == b for x, y in zip(full, half) for a, b in zip(x.tags, y.tags))
    assert same / sum(len(w) for w in words) > 0.9  # bf16 rounds the logits, it does not scramble them
    with pytest.raises(ValueError, match="float16 is for GPUs"):
        NerPredictor(str(trained), device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        NerPredictor(str(trained), device="cpu", dtype="fp8")
