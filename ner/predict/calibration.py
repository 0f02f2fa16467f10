"""Calibrated entity confidences: the calibration fitted on dev data after training, and how well confidences
match how often entities are right (expected calibration error, reliability bins, precision and recall above a
confidence).

The calibration is Platt scaling of each entity's probability under the model: ``sigmoid(a * logit(p) + b)``
(``ner.model.confidence.EntityCalibration``), ``a`` and ``b`` minimising the log loss of the dev entities against
whether each is right, by Newton's method (with step halving) with a weak pull towards the identity (``PRIOR``: a
dev set with few entities, or all of them right, moves it little). Chosen over temperature scaling of the emissions
(one T dividing every score of the CRF) by measurement: a temperature reshapes the distribution only one way, and
on NCBI-disease it left the low-confidence entities over-confident while making the high ones under-confident (test
ECE 0.041 at the fitted T, 0.017 with Platt scaling; on four models a mean of 0.038 against 0.029, bench/RESULTS.md
"Calibrated confidence"). Both keep every tag (F1 is untouched) and the order of the entities; word scores stay the
model's own marginals.

An entity is right when its type and words match a gold entity exactly, as F1 counts it; the expected calibration
error is over the predicted entities in ``BINS`` equal-width confidence bins: the gap between mean confidence and
share right in each bin, weighted by the bin's share of entities.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ner.data.schemes import entities
from ner.files import atomic_writer
from ner.model.confidence import CALIBRATION_FILE, EntityCalibration, log_odds
from ner.predict.predictor import NerPredictor

logger = logging.getLogger(__name__)

BINS = 10
THRESHOLDS = (0.5, 0.8, 0.9, 0.95)
PRIOR = 1.0  # pull of the fitted slope and intercept towards the identity (1, 0), against the dev log loss summed
NEWTON_STEPS = 50
MIN_SLOPE = 1e-3  # a calibration keeps the order of the confidences


@dataclass
class Judged:
    """Predicted entities' confidences and whether each is right, and the count of gold entities (for recall)."""

    confidences: list[float]
    correct: list[bool]
    gold: int


def judge(predicted: Sequence[Sequence[str]], confidences: Sequence[Sequence[float]], gold: Sequence[Sequence[str]]) -> Judged:
    """Each predicted entity (``entities`` of each sentence's tags, with its confidence) against the gold entities."""
    values, correct, gold_count = [], [], 0
    for tags, scores, gold_tags in zip(predicted, confidences, gold):
        gold_spans = set(entities(gold_tags))
        gold_count += len(gold_spans)
        for span, score in zip(entities(tags), scores):
            values.append(score)
            correct.append(span in gold_spans)
    return Judged(values, correct, gold_count)


def reliability(judged: Judged, bins: int = BINS) -> tuple[float | None, list[dict[str, Any]]]:
    """``(expected calibration error, bins)``: each bin's confidence range, entity count, mean confidence and share
    right (None where empty). The error is None without predicted entities."""
    table = [{"low": b / bins, "high": (b + 1) / bins, "entities": 0, "confidence": None, "accuracy": None} for b in range(bins)]
    sums = [[0.0, 0] for _ in range(bins)]
    for confidence, right in zip(judged.confidences, judged.correct):
        b = min(int(confidence * bins), bins - 1)
        table[b]["entities"] += 1
        sums[b][0] += confidence
        sums[b][1] += right
    total = len(judged.confidences)
    error = 0.0
    for row, (confidence_sum, right) in zip(table, sums):
        if row["entities"]:
            row["confidence"] = confidence_sum / row["entities"]
            row["accuracy"] = right / row["entities"]
            error += row["entities"] / total * abs(row["accuracy"] - row["confidence"])
    return (error if total else None), table


def at_thresholds(judged: Judged, thresholds: Sequence[float] = THRESHOLDS) -> list[dict[str, Any]]:
    """Precision and recall of the entities whose confidence is at least each threshold (what ``--min_confidence``
    keeps): precision None where none is left."""
    rows = []
    for threshold in thresholds:
        kept = [right for confidence, right in zip(judged.confidences, judged.correct) if confidence >= threshold]
        rows.append({
            "threshold": threshold,
            "entities": len(kept),
            "precision": sum(kept) / len(kept) if kept else None,
            "recall": sum(kept) / judged.gold if judged.gold else None,
        })
    return rows


def log_loss(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean binary cross-entropy of confidences against rightness (confidences clipped away from 0 and 1)."""
    total = 0.0
    for confidence, right in zip(confidences, correct):
        confidence = min(max(confidence, 1e-7), 1 - 1e-7)
        total -= math.log(confidence if right else 1 - confidence)
    return total / max(len(confidences), 1)


def fit_calibration(confidences: Sequence[float], correct: Sequence[bool]) -> EntityCalibration:
    """The Platt scaling (slope, intercept on the log-odds) that minimises the ``log_loss`` of ``confidences`` against
    ``correct`` (summed), plus ``PRIOR / 2 * ((slope - 1)^2 + intercept^2)``: Newton's method, each step halved until
    the objective falls (it is convex, so this converges)."""
    if not confidences:
        return EntityCalibration()
    odds = torch.tensor([log_odds(p) for p in confidences], dtype=torch.float64)
    features = torch.stack([odds, torch.ones_like(odds)], dim=1)
    target = torch.tensor([float(right) for right in correct], dtype=torch.float64)
    identity = torch.tensor([1.0, 0.0], dtype=torch.float64)

    def objective(weights: torch.Tensor) -> float:
        logits = features @ weights
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        return float(loss + PRIOR / 2 * ((weights - identity) ** 2).sum())

    weights, current = identity.clone(), objective(identity)
    for _ in range(NEWTON_STEPS):
        predicted = torch.sigmoid(features @ weights)
        gradient = features.T @ (predicted - target) + PRIOR * (weights - identity)
        hessian = features.T @ (features * (predicted * (1 - predicted))[:, None]) + PRIOR * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hessian, gradient)
        for _ in range(60):  # halve the step until the objective falls: a full Newton step can overshoot far from the optimum
            candidate = weights - step
            value = objective(candidate)
            if value <= current:
                break
            step = step / 2
        else:
            break
        weights, current = candidate, value
        if step.abs().max() < 1e-10:
            break
    slope, intercept = weights.tolist()
    return EntityCalibration(max(slope, MIN_SLOPE), intercept)


def documents_of(doc_start: Sequence[bool]) -> list[int]:
    """Document ids of consecutive sentences, a new one at each ``doc_start``."""
    ids, current = [], -1
    for index, starts in enumerate(doc_start):
        current += 1 if starts or index == 0 else 0
        ids.append(current)
    return ids


@dataclass
class SplitConfidence:
    """One scored split's entity confidences: calibrated (by ``calibration``) and the model's own."""

    calibration: EntityCalibration
    calibrated: Judged
    uncalibrated: Judged

    def figures(self) -> dict[str, Any]:
        """The report's section: expected calibration error before and after, bins, precision/recall at thresholds."""
        error, bins = reliability(self.calibrated)
        error_before, bins_before = reliability(self.uncalibrated)
        return {
            "calibration": asdict(self.calibration),
            "calibrated": self.calibration != EntityCalibration(),
            "entities": len(self.calibrated.confidences),
            "ece": error,
            "ece_uncalibrated": error_before,
            "bins": bins,
            "bins_uncalibrated": bins_before,
            "thresholds": at_thresholds(self.calibrated),
        }

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat figures for ``all_results.json``: ``{prefix}_ece``, ``{prefix}_ece_uncalibrated``,
        ``{prefix}_precision_at_0.9``, ``{prefix}_recall_at_0.9``, ... (thresholds without entities left out)."""
        figures = self.figures()
        flat = {f"{prefix}_ece": figures["ece"], f"{prefix}_ece_uncalibrated": figures["ece_uncalibrated"]}
        for row in figures["thresholds"]:
            flat[f"{prefix}_precision_at_{row['threshold']}"] = row["precision"]
            flat[f"{prefix}_recall_at_{row['threshold']}"] = row["recall"]
        return {key: value for key, value in flat.items() if value is not None}


def split_confidence(
    predictor: NerPredictor, words: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], doc_start: Sequence[bool] | None = None
) -> SplitConfidence:
    """Tag a labelled split with ``predictor`` and judge its entities, calibrated and as the model gives them."""
    documents = documents_of(doc_start) if doc_start is not None and predictor.config.context_size > 0 else None
    tagged, emissions = predictor.tag_with_emissions(words, documents)
    predicted = [t.tags for t in tagged]
    calibrated = judge(predicted, [t.entity_scores for t in tagged], gold)
    if predictor.calibration == EntityCalibration():
        return SplitConfidence(predictor.calibration, calibrated, calibrated)
    ids = [[predictor.label2id[tag] for tag in tags] for tags in predicted]
    _, own = predictor.scorer.score(emissions, ids)
    return SplitConfidence(predictor.calibration, calibrated, judge(predicted, own, gold))


def calibrate_folder(
    folder: str | os.PathLike,
    words: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    doc_start: Sequence[bool] | None = None,
    *,
    data_name: str = "the dev data",
    device: str | None = None,
    batch_size: int = 64,
    max_seq_length: int | None = None,
    stride: int | None = None,
) -> dict[str, Any]:
    """Fit the calibration of ``folder``'s entity confidences on a labelled split (dev data) and write it to its
    ``calibration.json``, with the figures it was chosen by; returns what it wrote. The predictor options are
    ``NerPredictor``'s (use those the folder will tag with)."""
    predictor = NerPredictor(
        str(folder), device=device, batch_size=batch_size, max_seq_length=max_seq_length, stride=stride, calibrated=False
    )
    documents = documents_of(doc_start) if doc_start is not None and predictor.config.context_size > 0 else None
    tagged = predictor.tag(words, documents)
    before = judge([t.tags for t in tagged], [t.entity_scores for t in tagged], gold)
    calibration = fit_calibration(before.confidences, before.correct)
    after = Judged([calibration(p) for p in before.confidences], before.correct, before.gold)
    saved = {
        "method": "platt",
        "slope": round(calibration.slope, 6),
        "intercept": round(calibration.intercept, 6),
        "about": "entity confidence = sigmoid(slope * logit(p) + intercept), p the entity's probability under the model",
        "fitted_on": data_name,
        "entities": len(before.confidences),
        "ece_before": reliability(before)[0],
        "ece_after": reliability(after)[0],
        "log_loss_before": log_loss(before.confidences, before.correct) if before.confidences else None,
        "log_loss_after": log_loss(after.confidences, after.correct) if after.confidences else None,
    }
    with atomic_writer(os.path.join(folder, CALIBRATION_FILE)) as out:
        out.write(json.dumps(saved, indent=2) + "\n")
    if saved["ece_before"] is not None:
        logger.info(
            "Entity confidences calibrated on %s (%d entities): slope %.3f, intercept %.3f; expected calibration error "
            "%.4f -> %.4f.", data_name, saved["entities"], calibration.slope, calibration.intercept, saved["ece_before"],
            saved["ece_after"],
        )
    else:
        logger.info("No entities predicted on %s: entity confidences left uncalibrated.", data_name)
    return saved
