"""Entity-level precision/recall/F1 (seqeval, strict, scheme given) and token accuracy.

seqeval is called directly: ``evaluate.load("seqeval")`` fetches its script from the Hub, and
seqeval's ``mode="strict"`` without ``scheme=`` silently scores leniently.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from seqeval.metrics import classification_report

from ner.schemes import seqeval_scheme


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str) -> dict[str, float]:
    """Overall and per-type scores as a flat dict.

    Keys: ``precision``, ``recall``, ``f1``, ``accuracy`` (token level), ``number`` (gold entities),
    and ``<TYPE>_precision``, ``<TYPE>_recall``, ``<TYPE>_f1``, ``<TYPE>_number`` for every type.
    """
    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted)):
        raise ValueError("gold and predicted tags must have the same sentences and lengths")
    tokens = sum(len(g) for g in gold)
    correct = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's mean of no entity types
        report = classification_report(
            [list(g) for g in gold],
            [list(p) for p in predicted],
            mode="strict",
            scheme=seqeval_scheme(scheme),
            output_dict=True,
            zero_division=0,
        )
    overall = report.pop("micro avg")
    scores = {
        "precision": float(overall["precision"]),
        "recall": float(overall["recall"]),
        "f1": float(overall["f1-score"]),
        "accuracy": correct / tokens if tokens else 0.0,
        "number": int(overall["support"]),
    }
    for entity_type, values in sorted(report.items()):
        if entity_type in ("macro avg", "weighted avg"):
            continue
        scores[f"{entity_type}_precision"] = float(values["precision"])
        scores[f"{entity_type}_recall"] = float(values["recall"])
        scores[f"{entity_type}_f1"] = float(values["f1-score"])
        scores[f"{entity_type}_number"] = int(values["support"])
    return scores
