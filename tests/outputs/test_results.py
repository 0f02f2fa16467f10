from __future__ import annotations

from ner.outputs.results import SCORED_SPLITS, SPLITS, TEST, VALIDATION, Results, SplitScores


def test_per_type_scores_read_prefixed_keys_and_types_with_underscores():
    metrics = {"eval_f1": 0.5, "eval_number": 3, "eval_runtime": 1.0, "eval_samples_per_second": 9.0,
               "eval_GPE_CITY_f1": 0.5, "eval_GPE_CITY_precision": 1.0, "eval_GPE_CITY_recall": 1 / 3,
               "eval_GPE_CITY_number": 3, "predict_PER_number": 1}
    expected = {"GPE_CITY": {"precision": 1.0, "recall": 1 / 3, "f1": 0.5, "support": 3}}
    assert SplitScores.from_metrics(metrics, VALIDATION).per_type == expected


def test_overall_strict_and_per_type_scores_are_apart():
    metrics = {"predict_f1": 0.5, "predict_precision": 0.4, "predict_accuracy": 0.9, "predict_number": 7,
               "predict_f1_strict": 0.25, "predict_recall_strict": 0.2, "predict_PER_f1": 0.5, "predict_PER_number": 7,
               "predict_runtime": 1.0, "eval_f1": 0.1}
    scores = SplitScores.from_metrics(metrics, TEST)
    assert scores.overall == {"precision": 0.4, "f1": 0.5, "accuracy": 0.9, "support": 7}
    assert scores.strict == {"recall": 0.2, "f1": 0.25}
    assert scores.per_type == {"PER": {"f1": 0.5, "support": 7}}


def test_results_hold_the_scored_splits_in_table_order():
    assert [split.prefix for split in SCORED_SPLITS] == ["eval", "predict"]
    names = [(split.name, split.prefix) for split in SPLITS]
    assert names == [("train", "train"), ("validation", "eval"), ("test", "predict")]
    results = Results.from_metrics({"train_loss": 0.3, "predict_f1": 0.5, "eval_f1": 0.7, "eval_PER_number": 1})
    assert [scores.split for scores in results.splits] == [VALIDATION, TEST]
    assert [scores.overall["f1"] for scores in results.splits] == [0.7, 0.5]
    assert Results.from_metrics({"eval_PER_number": 1, "train_loss": 0.3}).splits == ()  # no F1: not scored
