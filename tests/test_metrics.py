from __future__ import annotations

import pytest

from ner.metrics import entity_scores


def test_strict_iob2_scores_per_type_and_overall():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    scores = entity_scores(gold, predicted, "IOB2")
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(5 / 6)
    assert scores["number"] == 3
    assert (scores["PER_f1"], scores["LOC_recall"], scores["ORG_precision"]) == (1.0, 0.0, 0.5)
    assert (scores["PER_number"], scores["LOC_number"], scores["ORG_number"]) == (1, 1, 1)


def test_strict_mode_does_not_accept_an_entity_opened_by_i():
    # Lenient (conlleval-style) scoring would count I-PER I-PER as a correct PER entity; strict IOB2 does not.
    scores = entity_scores([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]], "IOB2")
    assert scores["f1"] == 0.0
    assert scores["accuracy"] == pytest.approx(2 / 3)


def test_iobes_scheme_is_used_when_given():
    gold = [["S-PER", "O", "B-LOC", "E-LOC"]]
    assert entity_scores(gold, gold, "IOBES")["f1"] == 1.0
    assert entity_scores(gold, [["S-PER", "O", "B-LOC", "I-LOC"]], "IOBES")["f1"] == pytest.approx(2 / 3)


def test_no_entities_scores_zero_without_warnings(recwarn):
    scores = entity_scores([["O", "O"]], [["O", "O"]], "IOB2")
    assert scores["f1"] == 0.0 and scores["accuracy"] == 1.0 and scores["number"] == 0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="same sentences and lengths"):
        entity_scores([["O", "O"]], [["O"]], "IOB2")
