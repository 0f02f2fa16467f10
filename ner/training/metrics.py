"""Entity-level precision/recall/F1, conlleval-compatible, with seqeval's strict scores beside them.

The main scores (``precision``, ``recall``, ``f1`` and every per-type figure) read entities as
conlleval does (``ner.data.schemes.entities``): an entity opened by ``I-`` counts. That is the F1 the CoNLL
shared tasks, published papers and the Hugging Face example report, and the entities our predictor
and ``pipeline()`` return. seqeval's strict mode, which drops such entities (and, in IOBES/BILOU,
unclosed ones), is kept as ``precision_strict``/``recall_strict``/``f1_strict``. seqeval is called
directly: ``evaluate.load("seqeval")`` fetches its script from the Hub, and its ``mode="strict"``
without ``scheme=`` silently scores leniently.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence

from seqeval.metrics import f1_score, precision_score, recall_score

from ner.data.schemes import check_parallel, entities, seqeval_scheme


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str) -> dict[str, float]:
    """Overall and per-type scores as a flat dict.

    Keys: ``precision``, ``recall``, ``f1`` (conlleval-compatible, micro-averaged), ``accuracy`` (token
    level), ``number`` (gold entities), ``precision_strict``, ``recall_strict``, ``f1_strict`` (seqeval
    strict under ``scheme``), and ``<TYPE>_precision``, ``<TYPE>_recall``, ``<TYPE>_f1``, ``<TYPE>_number``
    for every type seen in the gold or predicted tags.
    """
    check_parallel(gold, predicted)
    tokens = sum(len(g) for g in gold)
    correct_tokens = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    gold_count: Counter[str] = Counter()
    predicted_count: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for gold_tags, predicted_tags in zip(gold, predicted):
        gold_spans, predicted_spans = set(entities(gold_tags)), set(entities(predicted_tags))
        gold_count.update(t for _, _, t in gold_spans)
        predicted_count.update(t for _, _, t in predicted_spans)
        correct.update(t for _, _, t in gold_spans & predicted_spans)
    precision, recall, f1 = _prf(sum(correct.values()), sum(predicted_count.values()), sum(gold_count.values()))
    scores = {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": correct_tokens / tokens if tokens else 0.0,
        "number": sum(gold_count.values()),
        **strict_scores(gold, predicted, scheme),
    }
    for entity_type in sorted(gold_count.keys() | predicted_count.keys()):
        type_precision, type_recall, type_f1 = _prf(correct[entity_type], predicted_count[entity_type], gold_count[entity_type])
        scores[f"{entity_type}_precision"] = type_precision
        scores[f"{entity_type}_recall"] = type_recall
        scores[f"{entity_type}_f1"] = type_f1
        scores[f"{entity_type}_number"] = gold_count[entity_type]
    return scores


def strict_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str) -> dict[str, float]:
    """``precision_strict``, ``recall_strict``, ``f1_strict``: seqeval's strict mode with the scheme's own class."""

    options = dict(mode="strict", scheme=seqeval_scheme(scheme), zero_division=0)
    gold_lists, predicted_lists = [list(g) for g in gold], [list(p) for p in predicted]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's mean of no entity types; seqeval's undefined-metric notes
        return {
            "precision_strict": float(precision_score(gold_lists, predicted_lists, **options)),
            "recall_strict": float(recall_score(gold_lists, predicted_lists, **options)),
            "f1_strict": float(f1_score(gold_lists, predicted_lists, **options)),
        }
