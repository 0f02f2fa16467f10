"""Entity confidences: calibration error, thresholds, the fitted calibration, and what prediction and run_ner do with them."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

import run_ner
from conftest import DEMO_DATA, PER_LOC_LABELS, make_scaled_classifier_folder
from ner.data.conll import read_conll
from ner.data.schemes import entities
from ner.model.confidence import ConfidenceScorer, EntityCalibration, head_potentials
from ner.predict import cli
from ner.predict.calibration import (
    Judged, at_thresholds, documents_of, fit_calibration, judge, log_loss, reliability,
)
from ner.predict.predictor import NerPredictor

LABELS = ["O", "B-A", "I-A", "B-B", "I-B"]


def test_reliability_bins_and_expected_calibration_error():
    judged = Judged([0.05, 0.15, 0.95, 0.95, 1.0], [False, False, True, False, True], gold=4)
    error, bins = reliability(judged)
    assert error == pytest.approx(0.2 * 0.05 + 0.2 * 0.15 + 0.6 * abs(2 / 3 - 2.9 / 3))
    assert [row["entities"] for row in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    assert bins[9]["accuracy"] == pytest.approx(2 / 3) and bins[9]["confidence"] == pytest.approx(2.9 / 3)
    assert bins[4]["confidence"] is None and bins[4]["accuracy"] is None
    assert reliability(Judged([], [], gold=3))[0] is None


def test_precision_and_recall_above_each_threshold():
    judged = Judged([0.4, 0.85, 0.92, 0.97], [False, True, False, True], gold=5)
    rows = {row["threshold"]: row for row in at_thresholds(judged)}
    assert rows[0.5] == {"threshold": 0.5, "entities": 3, "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 5)}
    assert rows[0.9]["entities"] == 2 and rows[0.9]["precision"] == pytest.approx(0.5)
    assert rows[0.95]["precision"] == 1.0 and rows[0.95]["recall"] == pytest.approx(0.2)
    assert at_thresholds(Judged([0.3], [True], gold=1))[0]["precision"] is None


def test_judge_counts_an_entity_right_only_on_exactly_the_gold_words():
    gold = [["B-A", "I-A", "O", "B-B"]]
    judged = judge([["B-A", "I-A", "O", "B-A"]], [[0.9, 0.6]], gold)
    assert judged.correct == [True, False] and judged.confidences == [0.9, 0.6] and judged.gold == 2
    judged = judge([["B-A", "O", "O", "O"]], [[0.7]], gold)
    assert judged.correct == [False]


def test_documents_start_at_each_doc_start():
    assert documents_of([True, False, False, True, False]) == [0, 0, 0, 1, 1]
    assert documents_of([False, False]) == [0, 0]


def synthetic_split(sentences: int, seed: int, sharpness: float = 3.0):
    """A plain classifier that is ``sharpness`` times too sure: its emissions are the true scores times ``sharpness``,
    and the gold tags are drawn from the true scores. Returns its tags, its entity confidences and the gold tags."""
    generator = torch.Generator().manual_seed(seed)
    scorer = ConfidenceScorer(LABELS, head_potentials(None, None, len(LABELS)))
    true = [torch.randn(6, len(LABELS), generator=generator) * 1.5 for _ in range(sentences)]
    gold = [[LABELS[i] for i in torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1).tolist()] for scores in true]
    emissions = [scores * sharpness for scores in true]
    tags = [scores.argmax(-1).tolist() for scores in emissions]
    _, confidences = scorer.score(emissions, tags)
    return [[LABELS[i] for i in row] for row in tags], confidences, gold


def test_calibration_lowers_the_error_of_an_over_confident_model():
    dev = judge(*synthetic_split(600, seed=1))
    test = judge(*synthetic_split(600, seed=2))
    before = reliability(test)[0]
    calibration = fit_calibration(dev.confidences, dev.correct)
    after = reliability(Judged([calibration(p) for p in test.confidences], test.correct, test.gold))[0]
    assert before > 0.2  # the model is far too sure
    assert after < 0.05 and after < before / 4
    assert calibration.slope < 1  # it was too sure: the log-odds shrink
    calibrated_dev = [calibration(p) for p in dev.confidences]
    assert log_loss(calibrated_dev, dev.correct) < log_loss(dev.confidences, dev.correct)


def test_fitting_without_entities_or_with_all_right_stays_near_the_identity():
    assert fit_calibration([], []) == EntityCalibration()
    calibration = fit_calibration([0.9, 0.95, 0.8], [True, True, True])
    assert calibration.slope > 0 and calibration(0.5) > 0.5  # pulled up, not to certainty
    assert calibration(0.9) < 0.9999


# --- the predictor ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagger_copy(tagger, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibrated") / "model"
    shutil.copytree(tagger.out, folder)
    return folder


@pytest.fixture(scope="module", params=["linear", "crf"])
def messy(request, plain_model, tiny_bert, tmp_path_factory) -> Path:
    """A copy of the scaled random classifier (varied, unsure tags), or the same with a CRF of random transitions."""
    folder = tmp_path_factory.mktemp("messy") / request.param
    if request.param == "linear":
        shutil.copytree(plain_model, folder)
    else:
        make_scaled_classifier_folder(tiny_bert, folder, PER_LOC_LABELS, use_crf=True)
    return folder


def demo_words() -> list[list[str]]:
    return [s.words for s in read_conll(DEMO_DATA / "test.txt")]


@pytest.mark.integration  # the session's trained tagger
def test_run_ner_calibrates_after_training_and_reports_confidence(tagger):
    saved = json.loads((tagger.out / "calibration.json").read_text())
    assert saved["method"] == "platt" and saved["slope"] > 0 and saved["fitted_on"].endswith("dev.txt")
    assert saved["entities"] > 0 and saved["ece_after"] <= saved["ece_before"] + 0.05
    for prefix in ("eval", "predict"):
        assert f"{prefix}_ece" in tagger.results and f"{prefix}_ece_uncalibrated" in tagger.results
        assert 0 <= tagger.results[f"{prefix}_precision_at_0.5"] <= 1
        report = (tagger.out / f"{prefix}_report.md").read_text()
        assert "## Confidence" in report and "| 0.9 |" in report and f"`{prefix}_reliability.png`" in report
        figures = json.loads((tagger.out / f"{prefix}_report.json").read_text())["confidence"]
        assert figures["ece"] == pytest.approx(tagger.results[f"{prefix}_ece"])
        assert figures["calibration"] == {"slope": pytest.approx(saved["slope"]), "intercept": pytest.approx(saved["intercept"])}
        assert (tagger.out / f"{prefix}_reliability.png").read_bytes()[:4] == b"\x89PNG"
    card = (tagger.out / "README.md").read_text()
    assert "Entity confidences (probability of each whole entity): expected calibration error" in card


def threshold_between(scores: list[float]) -> float:
    """A threshold with entities on both sides of it (between two distinct confidences in the middle)."""
    distinct = sorted(set(scores))
    middle = max(len(distinct) // 2 - 1, 0)
    return (distinct[middle] + distinct[middle + 1]) / 2


def test_predictor_applies_the_folders_calibration_to_entities(messy):
    words = demo_words()
    own = NerPredictor(str(messy), device="cpu", calibrated=False).tag(words)
    (messy / "calibration.json").write_text('{"method": "platt", "slope": 0.5, "intercept": -0.5}')
    try:
        calibrated = NerPredictor(str(messy), device="cpu").tag(words)
    finally:
        (messy / "calibration.json").unlink()
    calibration = EntityCalibration(0.5, -0.5)
    assert sum(len(t.entity_scores) for t in own) > 20
    for mine, theirs in zip(own, calibrated):
        assert mine.tags == theirs.tags and mine.scores == theirs.scores  # words keep the model's own marginals
        assert len(mine.entity_scores) == len(entities(mine.tags)) == len(theirs.entity_scores)
        assert theirs.entity_scores == pytest.approx([calibration(p) for p in mine.entity_scores])
        assert all(0 <= p <= 1 for p in mine.scores + mine.entity_scores)
    # Unsure tags: the confidences spread out.
    spread = [p for t in own for p in t.entity_scores]
    assert min(spread) < 0.8 and max(spread) > 0.95


def test_min_confidence_drops_entities_and_counts_them(messy):
    words = demo_words()
    everything = NerPredictor(str(messy), device="cpu").tag(words)
    scores = sorted(p for t in everything for p in t.entity_scores)
    threshold = threshold_between(scores)
    predictor = NerPredictor(str(messy), device="cpu", min_confidence=threshold)
    kept = predictor.tag(words)
    assert predictor.dropped == sum(p < threshold for p in scores) > 0 and predictor.kept == len(scores) - predictor.dropped
    for full, some in zip(everything, kept):
        survivors = [(span, p) for span, p in zip(entities(full.tags), full.entity_scores) if p >= threshold]
        assert entities(some.tags) == [span for span, _ in survivors]
        assert some.entity_scores == pytest.approx([p for _, p in survivors])
        dropped_words = {w for span, p in zip(entities(full.tags), full.entity_scores) if p < threshold for w in range(span[0], span[1])}
        assert all(some.tags[w] == "O" for w in dropped_words)
    assert all(entity.score >= threshold - 1e-4 for t in kept for entity in predictor.entities(t))  # scores to 4 places


def test_confidences_off_and_bad_thresholds(plain_model):
    predictor = NerPredictor(str(plain_model), device="cpu", confidence=False)
    tagged = predictor.tag(demo_words()[:5])
    assert all(t.scores == [] and t.entity_scores == [] for t in tagged)
    assert any(predictor.entities(t) for t in tagged)
    assert all(entity.score is None for t in tagged for entity in predictor.entities(t))
    with pytest.raises(ValueError, match="min_confidence needs the confidences"):
        NerPredictor(str(plain_model), confidence=False, min_confidence=0.5)
    with pytest.raises(ValueError, match="min_confidence must be"):
        NerPredictor(str(plain_model), min_confidence=1.5)


def test_predict_command_min_confidence(plain_model, tmp_path, caplog):
    source = DEMO_DATA / "test.txt"
    everything, some = tmp_path / "all.jsonl", tmp_path / "some.jsonl"
    common = ["predict", "--model", str(plain_model), "--input", str(source), "--output_format", "jsonl", "--device", "cpu"]
    assert cli.main([*common, "--output", str(everything)]) == 0
    found = [e for line in everything.read_text().splitlines() for e in json.loads(line)["entities"]]
    exact = [p for t in NerPredictor(str(plain_model), device="cpu").tag(demo_words()) for p in t.entity_scores]
    assert [e["score"] for e in found] == pytest.approx(exact, abs=1e-4)
    threshold = threshold_between(exact)
    with caplog.at_level(logging.INFO, logger="ner.predict.cli"):
        assert cli.main([*common, "--output", str(some), "--min_confidence", repr(threshold)]) == 0
    kept = [e for line in some.read_text().splitlines() for e in json.loads(line)["entities"]]
    assert kept == [e for e, p in zip(found, exact) if p >= threshold] and 0 < len(kept) < len(found)
    assert f"dropped {len(found) - len(kept)} of the {len(found)} entities found" in caplog.text


def test_predict_command_refuses_a_threshold_outside_0_to_1(plain_model, tmp_path, capsys):
    from ner.errors import run_cli

    argv = ["predict", "--model", str(plain_model), "--input", str(DEMO_DATA / "test.txt"), "--output", str(tmp_path / "o"),
            "--min_confidence", "2"]
    assert run_cli(cli.main, argv) == 2
    assert "--min_confidence must be" in capsys.readouterr().err


@pytest.mark.integration  # a whole run_ner.py run
def test_calibrate_false_leaves_confidences_uncalibrated(tiny_bert, tmp_path):
    results = run_ner.main([
        "--model_name_or_path", str(tiny_bert), "--train_file", str(DEMO_DATA / "train.txt"),
        "--validation_file", str(DEMO_DATA / "dev.txt"), "--output_dir", str(tmp_path / "out"),
        "--data_cache_dir", str(tmp_path / "cache"), "--do_train", "--do_eval", "--max_steps", "2",
        "--report_to", "none", "--calibrate", "false",
    ])
    assert not (tmp_path / "out" / "calibration.json").exists()
    assert "eval_f1" in results
    figures = json.loads((tmp_path / "out" / "eval_report.json").read_text())["confidence"]
    assert figures["calibrated"] is False


@pytest.mark.integration  # exports the session's tagger
def test_an_onnx_export_carries_the_calibration(tagger_copy, tagger, tmp_path):
    from ner.predict.export import export_folder

    (tagger_copy / "calibration.json").write_text('{"method": "platt", "slope": 0.5, "intercept": -0.5}')
    export_folder(str(tagger_copy), str(tmp_path / "onnx"))
    assert (tmp_path / "onnx" / "calibration.json").read_bytes() == (tagger_copy / "calibration.json").read_bytes()
    words = [s.words for s in read_conll(tagger.data / "test.txt")][:20]
    exported = NerPredictor(str(tmp_path / "onnx")).tag(words)
    source = NerPredictor(str(tagger_copy), device="cpu").tag(words)
    assert [t.entity_scores for t in exported] == [pytest.approx(t.entity_scores, abs=1e-3) for t in source]
