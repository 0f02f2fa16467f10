"""How sure the model is: each word's tag probability and each entity's probability, under the model's own
distribution over tag paths; and the calibration of entity probabilities that a folder may carry (``calibration.json``,
fitted on dev data after training by ``ner.predict.calibration``).

The distribution is the one the model decodes with: a CRF's (emissions plus its learnt transition, start and end
scores), a plain classifier's per-word softmax (no transition scores), or, with constrained decoding, that softmax
restricted to the paths the tag scheme allows. Word marginals come from the forward-backward algorithm in log space
(``ner.model.crf.forward_backward``), batched over sentences. An entity's probability is the probability that a
path drawn from the model reads that very entity (that type on exactly those words, read the conlleval way, as
``ner.data.schemes.entities`` reads it): a forward pass restricted to such paths across the span, between the
unrestricted forward scores before it and the backward scores after it. Not a mean of word scores: two words each
90% sure of their tag can make an entity that is 81% sure, or less.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
import torch
from torch import Tensor

from ner.data.schemes import entities
from ner.model.crf import FORBIDDEN_SCORE, CRF, TransitionRules, _constraint_scores, forward_backward
from ner.tag_rules import OUTSIDE

CALIBRATION_FILE = "calibration.json"  # in a model folder: {"method": "platt", "slope": a, "intercept": b, ...}
PROBABILITY_FLOOR = 1e-6  # probabilities are clipped to [floor, 1 - floor] before their log-odds are taken
SENTENCES_PER_BATCH = 256  # sentences scored together (sorted by length, so padding stays small)
Potentials = tuple[Tensor, Tensor, Tensor]  # transitions [C, C], start [C], end [C]: finite scores


def log_odds(probability: float) -> float:
    """``log(p / (1 - p))``, with p clipped to ``[PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]``."""
    p = min(max(probability, PROBABILITY_FLOOR), 1.0 - PROBABILITY_FLOOR)
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class EntityCalibration:
    """Platt scaling of an entity's probability p: ``sigmoid(slope * logit(p) + intercept)``, fitted on dev data after
    training (``ner.predict.calibration``) and kept in the folder's ``calibration.json``; the identity by default.
    Monotone, so it never reorders entities: a threshold on calibrated confidences is a threshold on the model's."""

    slope: float = 1.0
    intercept: float = 0.0

    def __call__(self, probability: float) -> float:
        if self.slope == 1.0 and self.intercept == 0.0:
            return probability
        z = self.slope * log_odds(probability) + self.intercept
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    @classmethod
    def read(cls, folder: str | os.PathLike) -> EntityCalibration:
        """The folder's ``calibration.json``; the identity where it has none (confidences are then the model's own)."""
        path = os.path.join(folder, CALIBRATION_FILE)
        if not os.path.isfile(path):
            return cls()
        try:
            with open(path, encoding="utf-8") as stream:
                saved = json.load(stream)
            slope, intercept = saved["slope"], saved["intercept"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a calibration file ({error!r}); delete it to use uncalibrated confidences.") from None
        for name, value in (("slope", slope), ("intercept", intercept)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{path}: {name} must be a finite number, got {value!r}; delete the file to use uncalibrated confidences.")
        if slope <= 0:
            raise ValueError(f"{path}: slope must be positive (a calibration keeps the order of confidences), got {slope}.")
        return cls(float(slope), float(intercept))


def head_potentials(crf: CRF | None, rules: TransitionRules | None, num_labels: int) -> Potentials:
    """The scores besides the emissions that a head decodes with, finite and float32 on the CPU: a CRF's learnt ones
    (forbidden transitions ``FORBIDDEN_SCORE``), constrained decoding's 0 or ``FORBIDDEN_SCORE``, else zeros."""
    with torch.no_grad():
        if crf is not None:
            scores = crf.scores(FORBIDDEN_SCORE, torch.float32)
        elif rules is not None:
            scores = _constraint_scores(rules.tables(), FORBIDDEN_SCORE, torch.device("cpu"), torch.float32)
        else:
            scores = [torch.zeros(num_labels, num_labels), torch.zeros(num_labels), torch.zeros(num_labels)]
    transitions, start, end = (score.detach().float().cpu() for score in scores)
    return transitions, start, end


@dataclass(frozen=True)
class SpanRules:
    """How tags make entities, as tables over label ids (read off ``entities`` on tag pairs, so they hold for every
    scheme): ``kind[y]`` the entity type id of label y (-1 for ``O``); ``opens[p, y]`` whether y opens an entity
    after p; ``carries[p, y]`` whether y carries on p's entity; ``closes[y, a]`` whether y's entity ends before a."""

    kind: Tensor
    opens: Tensor
    carries: Tensor
    closes: Tensor
    types: tuple[str, ...]

    @classmethod
    def of(cls, label_list: Sequence[str]) -> SpanRules:
        types = tuple(sorted({entities([label])[0][2] for label in label_list if label != OUTSIDE}))
        kind = torch.tensor([-1 if label == OUTSIDE else types.index(entities([label])[0][2]) for label in label_list])
        size = len(label_list)
        opens = torch.zeros(size, size, dtype=torch.bool)
        carries = torch.zeros(size, size, dtype=torch.bool)
        closes = torch.zeros(size, size, dtype=torch.bool)
        for p, previous in enumerate(label_list):
            for y, label in enumerate(label_list):
                found = entities([previous, label])
                opens[p, y] = any(first == 1 for first, _, _ in found)
                carries[p, y] = previous != OUTSIDE and (0, 2, types[kind[p]]) in found
                closes[p, y] = previous != OUTSIDE and (0, 1, types[kind[p]]) in found
        return cls(kind, opens, carries, closes, types)


def span_log_probabilities(
    emissions: Tensor,
    lengths: Tensor,
    potentials: Potentials,
    rules: SpanRules,
    spans: Tensor,
    forward: tuple[Tensor, Tensor, Tensor],
) -> Tensor:
    """``log p(entity)`` for each of ``spans`` (``[E, 4]`` long: sentence row, first word, last word inclusive, type
    id in ``rules.types``) of sentences ``emissions [S, W, C]`` (``lengths [S]`` words each), where ``forward`` is
    ``forward_backward``'s ``(alphas, betas, log Z)`` for the same scores."""
    transitions, start, end = potentials
    alphas, betas, log_z = forward
    if spans.numel() == 0:
        return emissions.new_zeros(0)
    row, first, last, kind = spans.unbind(1)
    negative = torch.tensor(float("-inf"))
    of_type = rules.kind[None, :] == kind[:, None]  # [E, C]: the labels an entity of this type can wear
    # Into the first word: from the sentence start, or from a label after which this one opens an entity.
    before = alphas[row, (first - 1).clamp(min=0)]  # [E, C]
    opened = torch.logsumexp(before[:, :, None] + transitions + torch.where(rules.opens, 0.0, negative), dim=1)
    score = torch.where((first == 0)[:, None], start[None, :], opened) + emissions[row, first]
    score = torch.where(of_type, score, negative)
    # Across the span: each label carries on the entity.
    carry = transitions + torch.where(rules.carries, 0.0, negative)
    width = last - first
    for step in range(1, int(width.max()) + 1):
        at = (first + step).clamp(max=emissions.shape[1] - 1)
        moved = torch.logsumexp(score[:, :, None] + carry, dim=1) + emissions[row, at]
        score = torch.where((step <= width)[:, None], torch.where(of_type, moved, negative), score)
    # Out of the last word: the sentence ends, or the next label does not carry the entity on.
    after = (last + 1).clamp(max=emissions.shape[1] - 1)
    onward = transitions + torch.where(rules.closes, 0.0, negative) + (emissions[row, after] + betas[row, after])[:, None, :]
    closed = torch.logsumexp(score[:, :, None] + onward, dim=(1, 2))
    ended = torch.logsumexp(score + end[None, :], dim=1)
    return torch.where(last + 1 >= lengths[row], ended, closed) - log_z[row]


class ConfidenceScorer:
    """Word and entity probabilities of tagged sentences from their word-level emissions, for one model's head."""

    def __init__(self, label_list: Sequence[str], potentials: Potentials) -> None:
        self.label_list = list(label_list)
        self.potentials = potentials
        self.rules = SpanRules.of(label_list)

    def score(self, emissions: Sequence[Tensor], tags: Sequence[Sequence[int]]) -> tuple[list[Tensor], list[list[float]]]:
        """For each sentence (its emissions ``[words, C]`` and the label ids it was tagged with): the marginals of
        every label at every word (``[words, C]``) and the probability of each entity of its tags, in the order
        ``entities`` lists them."""
        marginals: list[Tensor] = [torch.zeros(0, len(self.label_list))] * len(emissions)
        probabilities: list[list[float]] = [[] for _ in emissions]
        order = sorted(range(len(emissions)), key=lambda i: len(emissions[i]))
        for begin in range(0, len(order), SENTENCES_PER_BATCH):
            rows = [i for i in order[begin : begin + SENTENCES_PER_BATCH] if len(emissions[i])]
            if not rows:
                continue
            lengths = torch.tensor([len(emissions[i]) for i in rows])
            batch = torch.nn.utils.rnn.pad_sequence([emissions[i].float() for i in rows], batch_first=True)
            mask = torch.arange(batch.shape[1])[None, :] < lengths[:, None]
            forward = forward_backward(batch, mask, *self.potentials)
            alphas, betas, log_z = forward
            words = (alphas + betas - log_z[:, None, None]).exp().clamp(max=1.0)  # rounding can pass 1 by an ulp
            spans, owners = [], []
            for r, i in enumerate(rows):
                marginals[i] = words[r, : lengths[r]]
                for first, end, entity_type in entities([self.label_list[label] for label in tags[i]]):
                    spans.append((r, first, end - 1, self.rules.types.index(entity_type)))
                    owners.append(i)
            found = span_log_probabilities(batch, lengths, self.potentials, self.rules, torch.tensor(spans).view(-1, 4), forward)
            for i, value in zip(owners, found.exp().clamp(max=1.0).tolist()):
                probabilities[i].append(value)
        return marginals, probabilities
