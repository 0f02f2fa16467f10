"""The output folder as a Hub model repository: pipeline-ready, model card, reports, plots, TensorBoard, push."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_DATA, FAKE_TOKEN, run_and_push

pytestmark = pytest.mark.integration  # every test reads a run_ner.py run (the session's demo run or tagger)


@pytest.fixture(scope="module")
def pushed(demo_run):
    """One run with --push_to_hub and TensorBoard (and without --push_eval_text): the session's demo run."""
    return demo_run


@pytest.fixture(scope="module")
def pushed_with_eval_text(pushed, tmp_path_factory):
    """The trained model of ``pushed`` evaluated again (no training) and pushed with --push_eval_text."""
    trained, _, _, _ = pushed
    root = tmp_path_factory.mktemp("predict-only")
    out = root / "out"
    results, calls, _ = run_and_push([
        "--model_name_or_path", str(trained), "--validation_file", str(DEMO_DATA / "dev.txt"),
        "--test_file", str(DEMO_DATA / "test.txt"), "--output_dir", str(out), "--data_cache_dir", str(root / "cache"),
        "--do_eval", "--do_predict", "--report_to", "none",
        "--push_to_hub", "--hub_model_id", "someone/tiny-ner-eval", "--push_eval_text",
    ])
    return out, results, calls


def sentence_pieces(path: Path, count: int = 8, length: int = 4) -> list[list[str]]:
    """``length``-word sequences from the first ``count`` sentences of a CoNLL file that the training file lacks."""
    training_text = " ".join(line.split("\t")[0] for line in (DEMO_DATA / "train.txt").read_text().splitlines())
    pieces = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        words = [line.split("\t")[0] for line in block.splitlines() if line and not line.startswith("-DOCSTART-")]
        for start in range(0, len(words) - length + 1, length):
            piece = words[start : start + length]
            if " ".join(piece) not in training_text:
                pieces.append(piece)
                break
        if len(pieces) == count:
            return pieces
    raise AssertionError(f"fewer than {count} sentences of {path} to look for")


def quoted(content: bytes, piece: list[str]) -> bool:
    """True when ``content`` holds the words in a row: as text (reports) or one per line (predictions)."""
    text = content.decode("utf-8", errors="replace")
    one_per_line = "".join("^" + re.escape(word) + r"\t[^\n]*\n" for word in piece)
    return " ".join(piece) in text or re.search(one_per_line, text, flags=re.MULTILINE) is not None


EVAL_SENTENCES = {name: sentence_pieces(DEMO_DATA / name) for name in ("dev.txt", "test.txt")}


def card_header(out: Path) -> dict:
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.usefixtures("one_torch_thread")
def test_pipeline_gives_the_same_labels_as_our_prediction(tagger):
    """pipeline() and our dev predictions agree word for word, on a model that finds the entities."""
    from transformers import pipeline

    classify = pipeline("token-classification", model=str(tagger.out), aggregation_strategy="none", device="cpu")
    blocks = (tagger.out / "eval_predictions.txt").read_text().split("\n\n")
    sentences = [[line.split("\t") for line in block.splitlines()] for block in blocks if block and "-DOCSTART-" not in block]
    compared = entity_labels = split_entity_labels = 0
    for rows in sentences:
        words = [row[0] for row in rows]
        # Our prediction reads each word's first sub-token; compare with the pipeline's tag for that piece.
        offsets, position = [], 0
        for word in words:
            offsets.append(position)
            position += len(word) + 1
        tokens = classify(" ".join(words), ignore_labels=[])
        first_piece = {token["start"]: token["entity"] for token in tokens if token["start"] in offsets}
        assert len(first_piece) == len(words)
        assert [first_piece[offset] for offset in offsets] == [row[2] for row in rows], words
        compared += len(words)
        entity_labels += sum(row[2] != "O" for row in rows)
        split_entity_labels += sum(row[2] != "O" and len(classify.tokenizer.tokenize(row[0])) > 1 for row in rows)
    # Entity labels, many on words of several pieces: reading another piece or decoding another way shows.
    assert compared > 300
    assert entity_labels > 100 and split_entity_labels > 20, (entity_labels, split_entity_labels)


def test_model_card_header_and_tables_match_results(pushed):
    out, results, _, _ = pushed
    header = card_header(out)
    assert header["pipeline_tag"] == "token-classification" and header["library_name"] == "transformers"
    index = header["model-index"][0]["results"]
    f1 = {entry["dataset"]["split"]: next(m["value"] for m in entry["metrics"] if m["type"] == "f1") for entry in index}
    all_results = json.loads((out / "all_results.json").read_text())
    assert f1["validation"] == pytest.approx(all_results["eval_f1"], abs=1e-4)
    assert f1["test"] == pytest.approx(all_results["predict_f1"], abs=1e-4)
    body = (out / "README.md").read_text()
    for entity_type in ("PER", "LOC", "ORG", "MISC"):
        row = next(line for line in body.splitlines() if line.startswith(f"| {entity_type} |"))
        assert f"{all_results[f'eval_{entity_type}_f1']:.4f}" in row
    assert "pipeline(" in body and "eval_confusion.png" in body


def test_reports_and_plots_are_written(pushed):
    out, _, _, _ = pushed
    for prefix in ("eval", "predict"):
        report = json.loads((out / f"{prefix}_report.json").read_text())
        assert report and (out / f"{prefix}_report.md").stat().st_size > 0
        for name in (f"{prefix}_confusion.png", f"{prefix}_type_f1.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_push_uploads_the_folder_without_checkpoints_or_tokens(pushed):
    out, _, calls, records = pushed
    assert calls["create_repo"][0] == "someone/tiny-ner" and calls["upload_repo"] == "someone/tiny-ner"
    uploaded = calls["uploaded"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "all_results.json",
                 "eval_report.md", "predict_report.json", "training_args.json"):
        assert name in uploaded, name
    assert not [p for p in uploaded if p.startswith("checkpoint-") or p.endswith("training_args.bin")]
    assert list(out.glob("checkpoint-*")), "the run did write checkpoints; they just are not uploaded"
    assert all(FAKE_TOKEN.encode() not in content for content in calls["contents"].values())
    on_disk = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in on_disk)
    assert not [p for p in on_disk if FAKE_TOKEN.encode() in p.read_bytes()]  # not even in the pickles
    assert all(FAKE_TOKEN not in record.getMessage() for record in records)


def test_tensorboard_logs_loss_learning_rate_and_dev_f1_per_type(pushed):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, _, _ = pushed
    events = [p for p in (out / "runs").rglob("events.out.tfevents.*")]
    assert events
    tags = set()
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags.update(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "eval/f1", "eval/PER_f1", "eval/LOC_f1"} <= tags


def test_evaluation_sentences_stay_off_the_hub_by_default(pushed):
    out, _, calls, _ = pushed
    assert not [p for p in calls["uploaded"] if p.endswith(("_predictions.txt", "_mistakes.md", "_mistakes.json"))]
    for name, pieces in EVAL_SENTENCES.items():
        # The files on disk quote them (so the check below can see a leak) ...
        local = (out / "eval_predictions.txt" if name == "dev.txt" else out / "predict_predictions.txt").read_bytes()
        assert all(quoted(local, piece) for piece in pieces), name
        # ... and nothing uploaded does.
        leaks = [
            (path, " ".join(piece)) for path, content in calls["contents"].items() for piece in pieces
            if quoted(content, piece)
        ]
        assert not leaks, leaks
    report = json.loads(calls["contents"]["eval_report.json"])
    assert "mistakes" not in report and report["per_type"] and report["sentences_with_errors"] > 0
    assert json.loads((out / "eval_mistakes.json").read_text())["mistakes"]  # kept on disk, in its own file
    card = calls["contents"]["README.md"].decode()
    assert "so they stay off the Hub; `--push_eval_text` uploads them" in card


def test_push_eval_text_uploads_predictions_and_reports(pushed_with_eval_text):
    _, _, calls = pushed_with_eval_text
    for name in ("eval_predictions.txt", "predict_predictions.txt", "eval_mistakes.md", "predict_mistakes.json"):
        assert name in calls["uploaded"], name
    contents = calls["contents"]
    for name, prefix in (("dev.txt", "eval"), ("test.txt", "predict")):
        assert all(quoted(contents[f"{prefix}_predictions.txt"], piece) for piece in EVAL_SENTENCES[name])
    assert "they are uploaded with the model (`--push_eval_text`)" in contents["README.md"].decode()


def test_model_card_names_each_split_for_its_use(pushed, pushed_with_eval_text):
    trained, _, _, _ = pushed
    text = (trained / "README.md").read_text()
    assert ("on `data/train.txt` (200 sentences); evaluated on `data/dev.txt` (validation, 50 sentences) and "
            "`data/test.txt` (test, 51 sentences).") in text
    assert "## Training hyperparameters" in text

    evaluated, _, _ = pushed_with_eval_text
    text = (evaluated / "README.md").read_text()
    assert "fine-tuned" not in text and "train.txt" not in text
    assert ("evaluated on `data/dev.txt` (validation, 50 sentences) and `data/test.txt` (test, 51 sentences). The model "
            "was not trained") in text
    assert "datasets" not in card_header(evaluated)
    assert "## Training hyperparameters" not in text and "learning_rate" not in text
