from __future__ import annotations

import pytest

from ner.outputs.plots import curve_types, plot_confusion, plot_training_curves, plot_type_f1, type_f1_bars
from ner.outputs.results import VALIDATION, SplitScores

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CONFUSION = {
    "LOC": {"LOC": 3, "ORG": 1, "PER": 0, "missed": 2},
    "ORG": {"LOC": 0, "ORG": 4, "PER": 0, "missed": 0},
    "PER": {"LOC": 0, "ORG": 1, "PER": 5, "missed": 1},
    "spurious": {"LOC": 1, "ORG": 0, "PER": 2},
}
METRICS = {
    "eval_f1": 0.7, "eval_precision": 0.75, "eval_recall": 0.66, "eval_number": 17,
    "eval_LOC_f1": 0.6, "eval_LOC_precision": 0.7, "eval_LOC_recall": 0.5, "eval_LOC_number": 6,
    "eval_PER_f1": 0.8, "eval_PER_precision": 0.7, "eval_PER_recall": 0.9, "eval_PER_number": 7,
}
# What ner.training.metrics returns now: conlleval-compatible scores, and seqeval's strict ones beside them (overall only).
STRICT = {"eval_precision_strict": 0.7, "eval_recall_strict": 0.6, "eval_f1_strict": 0.65}
LOG_HISTORY = [
    {"loss": 2.1, "learning_rate": 5e-5, "step": 5, "epoch": 0.5},
    {"loss": 1.2, "learning_rate": 4e-5, "step": 10, "epoch": 1.0},
    {"eval_loss": 1.0, "eval_f1": 0.4, "eval_PER_f1": 0.5, "eval_PER_number": 7, "step": 10, "epoch": 1.0},
    {"loss": 0.6, "learning_rate": 2e-5, "step": 15, "epoch": 1.5},
    {"eval_loss": 0.7, "eval_f1": 0.7, "eval_PER_f1": 0.8, "eval_PER_number": 7, "step": 20, "epoch": 2.0},
    {"train_loss": 1.3, "train_runtime": 3.0, "step": 20, "epoch": 2.0},
]


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_SIGNATURE)
    Image = pytest.importorskip("PIL.Image")
    with Image.open(path) as image:
        image.verify()
    assert not list(path.parent.glob(".*.tmp"))  # the temporary file was renamed, not left behind


def test_plot_confusion(tmp_path):
    path = plot_confusion(CONFUSION, tmp_path / "plots" / "eval_confusion.png")
    assert path == tmp_path / "plots" / "eval_confusion.png"
    assert_png(path)


def test_plot_confusion_without_entities(tmp_path):
    assert_png(plot_confusion({"spurious": {}}, tmp_path / "empty.png"))


def test_plot_type_f1(tmp_path):
    assert_png(plot_type_f1(SplitScores.from_metrics(METRICS, VALIDATION), tmp_path / "eval_type_f1.png"))


@pytest.mark.parametrize(
    "history", [LOG_HISTORY, LOG_HISTORY[:2], LOG_HISTORY[2:3]], ids=["both", "loss-only", "f1-only"]
)
def test_plot_training_curves(tmp_path, history):
    assert_png(plot_training_curves(history, tmp_path / "training_curves.png"))


def test_no_training_curves_without_loss_or_f1(tmp_path):
    assert plot_training_curves([{"train_runtime": 1.0, "step": 0}], tmp_path / "curves.png") is None
    assert plot_training_curves([], tmp_path / "curves.png") is None
    assert not list(tmp_path.iterdir())


def test_an_existing_plot_is_replaced(tmp_path):
    path = tmp_path / "eval_confusion.png"
    path.write_bytes(b"old")
    assert_png(plot_confusion(CONFUSION, path))


def test_strict_scores_are_not_taken_for_an_entity_type(tmp_path):
    scores = SplitScores.from_metrics({**METRICS, **STRICT}, VALIDATION)
    assert type_f1_bars(scores) == [("LOC", 0.6, 6), ("PER", 0.8, 7)]
    history = [dict(entry, **STRICT) if "eval_f1" in entry else entry for entry in LOG_HISTORY]
    assert curve_types(history) == ["PER"]
    assert_png(plot_type_f1(scores, tmp_path / "eval_type_f1.png"))
    assert_png(plot_training_curves(history, tmp_path / "training_curves.png"))
