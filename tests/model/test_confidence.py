"""Word marginals and entity probabilities against brute-force enumeration of every tag path."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ner.data.schemes import entities
from ner.model.confidence import ConfidenceScorer, EntityCalibration, SpanRules, head_potentials
from ner.model.crf import CRF, TransitionRules, allowed_transitions

LABELS = {
    "IOB2": ["O", "B-A", "I-A", "B-B", "I-B"],
    "IOBES": ["O", "B-A", "I-A", "E-A", "S-A"],
    "BILOU": ["O", "B-A", "I-A", "L-A", "U-A"],
}


def enumerate_paths(emissions: torch.Tensor, potentials) -> tuple[torch.Tensor, torch.Tensor]:
    """Every label path of one sentence (``[paths, words]``) and its probability, by brute force (float64)."""
    transitions, start, end = (p.double() for p in potentials)
    emissions = emissions.double()
    words, labels = emissions.shape
    paths = torch.tensor(list(itertools.product(range(labels), repeat=words)))
    score = start[paths[:, 0]] + end[paths[:, -1]] + emissions[torch.arange(words), paths].sum(dim=1)
    score = score + transitions[paths[:, :-1], paths[:, 1:]].sum(dim=1)
    return paths, score.softmax(dim=0)


def crf_potentials(labels: list[str], scheme: str, seed: int):
    torch.manual_seed(seed)
    crf = CRF(len(labels), allowed_transitions(labels, scheme))
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.uniform_(-2, 2)
    return head_potentials(crf, None, len(labels))


@pytest.mark.parametrize("scheme", sorted(LABELS))
@pytest.mark.parametrize("head", ["crf", "constrained", "softmax"])
def test_marginals_and_entity_probabilities_match_enumeration(scheme, head):
    labels = LABELS[scheme]
    if head == "crf":
        potentials = crf_potentials(labels, scheme, seed=3)
    elif head == "constrained":
        potentials = head_potentials(None, TransitionRules(allowed_transitions(labels, scheme)), len(labels))
    else:
        potentials = head_potentials(None, None, len(labels))
    scorer = ConfidenceScorer(labels, potentials)
    generator = torch.Generator().manual_seed(7)
    sentences = [torch.randn(n, len(labels), generator=generator) * 2 for n in (1, 2, 4, 3, 5)]
    # Tag each sentence with its most probable path, and also with a random one (entities anywhere, opened by I-).
    tagged = []
    for emissions in sentences:
        paths, probabilities = enumerate_paths(emissions, potentials)
        tagged.append(tuple(paths[probabilities.argmax()].tolist()))
    tagged += [tuple(torch.randint(1, len(labels), (len(e),), generator=generator).tolist()) for e in sentences]
    marginals, found = scorer.score(sentences + sentences, tagged)
    for emissions, tags, words, entity_probabilities in zip(sentences + sentences, tagged, marginals, found):
        paths, probabilities = enumerate_paths(emissions, potentials)
        expected = torch.zeros(len(emissions), len(labels), dtype=torch.float64)
        for t in range(len(emissions)):
            expected[t].index_add_(0, paths[:, t], probabilities)
        assert words.sum(dim=1).tolist() == pytest.approx([1.0] * len(emissions), abs=1e-5)
        assert torch.allclose(words.double(), expected, atol=1e-5)
        read = [set(entities([labels[y] for y in path])) for path in paths.tolist()]
        spans = entities([labels[y] for y in tags])
        assert len(entity_probabilities) == len(spans)
        for span, probability in zip(spans, entity_probabilities):
            reading = torch.tensor([span in found_spans for found_spans in read])
            assert probability == pytest.approx(probabilities[reading].sum().item(), abs=1e-5), (scheme, head, tags, span)


def test_softmax_head_marginals_are_the_softmax():
    labels = LABELS["IOB2"]
    emissions = torch.randn(6, len(labels))
    marginals, _ = ConfidenceScorer(labels, head_potentials(None, None, len(labels))).score([emissions], [[0] * 6])
    assert torch.allclose(marginals[0], emissions.softmax(-1), atol=1e-6)


def test_span_rules_read_entities_the_conlleval_way():
    rules = SpanRules.of(LABELS["IOB2"])
    o, b_a, i_a, b_b, i_b = range(5)
    assert rules.opens[o, i_a] and rules.opens[i_b, i_a] and not rules.opens[b_a, i_a]
    assert rules.carries[b_a, i_a] and not rules.carries[b_a, i_b] and not rules.carries[i_a, b_a]
    assert rules.closes[i_a, o] and rules.closes[i_a, b_a] and not rules.closes[i_a, i_a]
    assert rules.kind.tolist() == [-1, 0, 0, 1, 1]


def test_entity_calibration_is_monotone_and_read_from_the_folder(tmp_path):
    assert EntityCalibration()(0.37) == 0.37
    calibration = EntityCalibration(slope=0.8, intercept=-1.0)
    values = [calibration(p) for p in (0.0, 0.1, 0.5, 0.9, 0.999, 1.0)]
    assert values == sorted(values) and 0 < values[0] and values[-1] < 1
    assert calibration(0.5) == pytest.approx(1 / (1 + math.exp(1.0)))
    assert EntityCalibration.read(tmp_path) == EntityCalibration()
    (tmp_path / "calibration.json").write_text('{"method": "platt", "slope": 0.8, "intercept": -1.0}')
    assert EntityCalibration.read(tmp_path) == calibration


@pytest.mark.parametrize(
    "text, message",
    [("{", "not a calibration file"), ('{"slope": 1}', "not a calibration file"), ('{"slope": "x", "intercept": 0}', "finite number"),
     ('{"slope": -1, "intercept": 0}', "slope must be positive"), ('{"slope": NaN, "intercept": 0}', "finite number")],
)
def test_a_damaged_calibration_file_is_named(tmp_path, text, message):
    (tmp_path / "calibration.json").write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        EntityCalibration.read(tmp_path)
    assert "calibration.json" in str(caught.value)
