"""Entity scores: conlleval-compatible main figures, hand-counted; seqeval strict beside them."""

from __future__ import annotations

import random

import pytest

from ner.training.metrics import entity_scores
from ner.data.schemes import entities


def test_iob2_scores_per_type_and_overall():
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
    assert scores["f1_strict"] == pytest.approx(2 / 3)  # no ill-formed entity: both readings agree


# Hand-counted: (gold, predicted, scheme, (correct, predicted entities, gold entities), strict F1).
FIXTURES = {
    # conlleval reads I-PER I-PER after O as one PER entity: correct. Strict IOB2 drops it.
    "I- after O": ([["O", "B-PER", "I-PER", "O"]], [["O", "I-PER", "I-PER", "O"]], "IOB2", (1, 1, 1), 0.0),
    # I-LOC after B-PER: the type change ends PER (one word, wrong) and opens LOC (one word).
    "type change inside an entity": (
        [["B-PER", "I-PER", "O"]], [["B-PER", "I-LOC", "O"]], "IOB2", (0, 2, 1), 0.0,
    ),
    # Two entities of the same type side by side, the second opened by B-.
    "B- splits a run": ([["B-PER", "I-PER", "B-PER"]], [["B-PER", "B-PER", "B-PER"]], "IOB2", (1, 3, 2), 0.4),
    # IOBES: an unclosed B-LOC I-LOC still reads as LOC over both words; strict needs the E-.
    "IOBES unclosed": ([["S-PER", "O", "B-LOC", "E-LOC"]], [["S-PER", "O", "B-LOC", "I-LOC"]], "IOBES", (2, 2, 2), 2 / 3),
    # IOBES: E- with nothing open is a one-word entity; S- after B- ends the open one.
    "IOBES orphan E and S inside": (
        [["B-ORG", "E-ORG", "O", "S-PER"]], [["E-ORG", "S-ORG", "O", "E-PER"]], "IOBES", (1, 3, 2), 0.0,
    ),
    # BILOU: L- closes, U- is one word; an I-MISC after O opens an entity.
    "BILOU": (
        [["B-PER", "L-PER", "U-LOC", "O", "B-MISC", "I-MISC", "L-MISC"]],
        [["B-PER", "L-PER", "U-LOC", "O", "I-MISC", "I-MISC", "L-MISC"]],
        "BILOU", (3, 3, 3), 0.8,
    ),
}


@pytest.mark.parametrize("name", FIXTURES)
def test_hand_counted_fixtures(name):
    gold, predicted, scheme, (correct, found, expected), strict_f1 = FIXTURES[name]
    scores = entity_scores(gold, predicted, scheme)
    precision, recall = correct / found, correct / expected
    f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((precision, recall, f1))
    assert scores["number"] == expected
    assert scores["f1_strict"] == pytest.approx(strict_f1)


def test_entities_read_every_scheme_as_seqeval_default_mode_does():
    """seqeval's default mode is its port of conlleval (extended to IOBES); BILOU's L/U are IOBES's E/S."""
    from seqeval.metrics.sequence_labeling import get_entities

    generator = random.Random(0)
    for prefixes in ("BIO", "BIOES", "BILOU"):
        for _ in range(3000):
            tags = [p if p == "O" else f"{p}-{generator.choice('XY')}" for p in generator.choices(prefixes, k=generator.randint(0, 9))]
            reference = get_entities([t.replace("L-", "E-").replace("U-", "S-") for t in tags])
            assert sorted(entities(tags)) == sorted((start, end + 1, kind) for kind, start, end in reference), tags


def test_scores_equal_seqeval_default_mode_on_random_corpora():
    from seqeval.metrics import f1_score, precision_score, recall_score

    generator = random.Random(1)
    tag_set = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [generator.choices(tag_set, weights=[6, 2, 2, 1, 1], k=generator.randint(1, 12)) for _ in range(300)]
    predicted = [[t if generator.random() < 0.7 else generator.choice(tag_set) for t in sentence] for sentence in gold]
    scores = entity_scores(gold, predicted, "IOB2")
    assert scores["f1"] == pytest.approx(f1_score(gold, predicted))
    assert scores["precision"] == pytest.approx(precision_score(gold, predicted))
    assert scores["recall"] == pytest.approx(recall_score(gold, predicted))
    assert scores["f1_strict"] < scores["f1"]  # the random predictions open entities with I-


def test_no_entities_scores_zero_without_warnings(recwarn):
    scores = entity_scores([["O", "O"]], [["O", "O"]], "IOB2")
    assert scores["f1"] == 0.0 and scores["accuracy"] == 1.0 and scores["number"] == 0 and scores["f1_strict"] == 0.0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="same sentences and lengths"):
        entity_scores([["O", "O"]], [["O"]], "IOB2")
