"""A run's data splits and its scores by split, read once from the flat metrics dict.

``SPLITS`` is the one table of splits: each split's data name (``--validation_file``, the Hub dataset
split, the card's ``model-index`` split), its prefix (metric keys such as ``eval_f1``, output files such as
``eval_report.md``, ``--do_eval``, ``--max_eval_samples``) and its names for people. The Trainer and
``all_results.json`` keep every score flat (``eval_f1``, ``eval_PER_f1``, ``predict_f1_strict``);
``Results.from_metrics`` reads them back into overall, strict and per-type scores of each split, once,
for the reports, plots and model card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Split:
    """One data split and the names it goes by."""

    name: str  # the data split: train, validation, test
    prefix: str  # metric keys and output files: train, eval, predict
    display: str  # in report headings: "validation (dev)"
    short: str  # in plot titles and the closing log line: "dev"

    def key(self, name: str) -> str:
        """The flat metric key of one of this split's figures: ``VALIDATION.key("f1") == "eval_f1"``."""
        return f"{self.prefix}_{name}"


TRAIN = Split("train", "train", "training", "train")
VALIDATION = Split("validation", "eval", "validation (dev)", "dev")
TEST = Split("test", "predict", "test", "test")
SPLITS = (TRAIN, VALIDATION, TEST)
SCORED_SPLITS = (VALIDATION, TEST)  # the splits with entity scores, in the order the outputs show them

OVERALL = {"precision": "precision", "recall": "recall", "f1": "f1", "accuracy": "accuracy", "number": "support"}
STRICT = ("precision", "recall", "f1")  # seqeval strict: ``eval_f1_strict`` ...
PER_TYPE = ("precision", "recall", "f1", "number")  # ``eval_PER_f1`` ...
# Entity confidences (ner.predict.calibration.SplitConfidence.metrics): ``eval_ece`` ...
CONFIDENCE = ("ece", "ece_uncalibrated", "precision_at_0.9", "recall_at_0.9")


@dataclass(frozen=True)
class SplitScores:
    """One split's scores: overall (conlleval-compatible), seqeval strict, and per entity type.

    ``overall`` holds ``precision``, ``recall``, ``f1``, ``accuracy`` and ``support`` (the gold entities,
    ``{prefix}_number``), those present, as recorded; ``strict`` holds ``precision``, ``recall``, ``f1``;
    ``per_type`` maps each type to ``precision``, ``recall``, ``f1`` (floats) and ``support`` (int);
    ``plain_f1`` (``{prefix}_plain_f1``), for a CRF or constrained model, the F1 of its emissions by argmax.
    """

    split: Split
    overall: dict[str, float]
    strict: dict[str, float]
    per_type: dict[str, dict[str, float]]
    plain_f1: float | None = None  # a Viterbi model's emissions read by argmax (what plain transformers gives)
    confidence: dict[str, float] = field(default_factory=dict)  # CONFIDENCE figures of the entity confidences, those recorded

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float], split: Split) -> SplitScores:
        """Read ``split``'s figures out of a flat metrics dict (``all_results.json``, a ``log_history`` entry).

        A type is any middle part for which ``{prefix}_{TYPE}_number`` exists (types may contain ``_``), so
        overall keys such as ``{prefix}_f1_strict`` never become a type.
        """
        overall = {out: metrics[split.key(name)] for name, out in OVERALL.items() if split.key(name) in metrics}
        strict = {
            name: metrics[split.key(f"{name}_strict")] for name in STRICT if split.key(f"{name}_strict") in metrics
        }
        head, tail = split.key(""), "_number"
        types = sorted(
            key[len(head) : -len(tail)]
            for key in metrics
            if key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail)
        )
        per_type: dict[str, dict[str, float]] = {}
        for entity_type in types:
            row = {}
            for name in PER_TYPE:
                value = metrics.get(f"{head}{entity_type}_{name}")
                if value is not None:
                    row["support" if name == "number" else name] = int(value) if name == "number" else float(value)
            per_type[entity_type] = row
        confidence = {name: metrics[split.key(name)] for name in CONFIDENCE if split.key(name) in metrics}
        return cls(split, overall, strict, per_type, metrics.get(split.key("plain_f1")), confidence)


@dataclass(frozen=True)
class Results:
    """The scores of every evaluated split (those with an F1), in ``SCORED_SPLITS`` order."""

    splits: tuple[SplitScores, ...]

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> Results:
        """Read the flat metrics dict of a run (``eval_f1``, ``eval_PER_f1``, ``predict_*`` for the test set)."""
        return cls(
            tuple(SplitScores.from_metrics(metrics, split) for split in SCORED_SPLITS if split.key("f1") in metrics)
        )
