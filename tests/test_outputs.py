"""The output folder as a Hub model repository: pipeline-ready, model card, reports, plots, TensorBoard, push."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_DATA
from run_ner import main

FAKE_TOKEN = "hf_FAKEtokenFAKEtokenFAKEtoken1234"


@pytest.fixture(scope="module")
def pushed(tiny_bert, tmp_path_factory):
    """One run with --push_to_hub and TensorBoard; the Hub client replaced at its boundary."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    root = tmp_path_factory.mktemp("outputs")
    out = root / "out"
    calls: dict = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, folder_path, repo_id, ignore_patterns, **kwargs):
        paths = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        calls["uploaded"] = sorted(filter_repo_objects(paths, ignore_patterns=ignore_patterns))
        calls["upload_repo"] = repo_id
        calls["contents"] = {p: (Path(folder_path) / p).read_bytes() for p in calls["uploaded"]}

    patch = pytest.MonkeyPatch()
    patch.setattr(HfApi, "create_repo", create_repo)
    patch.setattr(HfApi, "upload_folder", upload_folder)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        results = main([
            "--model_name_or_path", str(tiny_bert), "--train_file", str(DEMO_DATA / "train.txt"),
            "--validation_file", str(DEMO_DATA / "dev.txt"), "--test_file", str(DEMO_DATA / "test.txt"),
            "--output_dir", str(out), "--data_cache_dir", str(root / "cache"),
            "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2", "--learning_rate", "1e-3",
            "--logging_steps", "5", "--report_to", "tensorboard",
            "--push_to_hub", "--hub_model_id", "someone/tiny-ner", "--hub_token", FAKE_TOKEN,
        ])
    finally:
        logging.getLogger().removeHandler(handler)
        patch.undo()
    return out, results, calls, records


def card_header(out: Path) -> dict:
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_pipeline_gives_the_same_labels_as_our_prediction(pushed):
    from transformers import pipeline

    out, _, _, _ = pushed
    tagger = pipeline("token-classification", model=str(out), aggregation_strategy="none", device="cpu")
    blocks = (out / "eval_predictions.txt").read_text().split("\n\n")
    sentences = [[line.split("\t") for line in block.splitlines()] for block in blocks if block and "-DOCSTART-" not in block]
    compared = 0
    for rows in sentences[:6]:
        words = [row[0] for row in rows]
        # Our prediction reads each word's first sub-token; compare with the pipeline's tag for that piece.
        offsets, position = [], 0
        for word in words:
            offsets.append(position)
            position += len(word) + 1
        tokens = tagger(" ".join(words), ignore_labels=[])
        first_piece = {token["start"]: token["entity"] for token in tokens if token["start"] in offsets}
        assert len(first_piece) == len(words)
        assert [first_piece[offset] for offset in offsets] == [row[2] for row in rows]
        compared += len(words)
    assert compared > 50


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
                 "eval_predictions.txt", "predict_predictions.txt", "eval_report.md", "training_args.json"):
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
