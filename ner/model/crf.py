"""A linear-chain CRF over words, Viterbi decoding, and the transitions each tag scheme allows as tensors.

Used two ways: ``constrained_decode`` runs Viterbi over a plain classifier's logits with the scheme's
invalid transitions forbidden (no ``I-PER`` after ``O`` in IOB2), and ``CRF`` learns transition
scores and trains with the negative log-likelihood.

Everything here is word level: ``emissions`` are ``[sentences, words, labels]``, one row per sentence with
its words first (``mask`` True on a prefix of each row). ``word_index`` and ``gather_words`` bring them
there from the encoder's sub-token outputs (the first sub-token of each word), wherever a sentence sits:
alone in a padded row, or beside others in a packed one. The index is built with the batch on the host
(``word_index_of``), so the number of word positions, and with it every loop here, is known without
asking the device.

The log-partition is a parallel scan in log space: the per-word transition matrices are multiplied in
pairs, ``log2(words)`` rounds of a few batched operations each, instead of one small step per word (a
training step on a GPU is bound by how many operations the host dispatches). Viterbi, at evaluation only,
steps through the word positions.

This module, ``ner.model.configuration``, ``ner.model.modeling``, ``ner.tag_rules`` and ``ner.model.tokenization_ner`` are
copied into every output folder whose head stock transformers cannot run, so that
``trust_remote_code=True`` loads it without this package: they import each other relatively and nothing
else of ``ner``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..tag_rules import transition_tables

logger = logging.getLogger(__name__)

# Score of a forbidden transition while training: finite so that logsumexp and its gradient stay
# free of NaN, and large enough that exp() of it is 0 in float32. Decoding uses -inf instead.
FORBIDDEN_SCORE = -10000.0
NO_WORD = -1  # word_index entry of a word position a sentence does not have
# The parallel scan's first round holds [sentences, words / 2, labels, labels, labels] floats (and its weights as
# many): past this many, "auto" steps through the words instead (e.g. 37 labels, 64 sentences of 64 words).
SCAN_MAX_ELEMENTS = 2**27


def allowed_transitions(label_list: list[str], scheme: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(transitions[C, C], start[C], end[C])``: ``tag_rules.transition_tables`` as boolean tensors.

    ``transitions[i, j]`` is whether label ``j`` may directly follow label ``i``; ``start``/``end`` whether
    a sentence may open/close with that label.
    """
    transitions, start, end = transition_tables(label_list, scheme)
    size = len(label_list)
    return (
        torch.tensor(transitions, dtype=torch.bool).reshape(size, size),
        torch.tensor(start, dtype=torch.bool),
        torch.tensor(end, dtype=torch.bool),
    )


def word_index_of(mask: Tensor, trim: bool = True) -> Tensor:
    """``[rows, length]`` bool (True at each word's first sub-token) -> ``[rows, words]`` long: row ``b`` lists
    the flat positions ``b * length + t`` of its True entries in order, then ``NO_WORD``.

    ``trim`` cuts the result to the longest row's word count, which reads the mask: do it on the host (a
    collator); on a device, ``trim=False`` keeps ``length`` columns and asks nothing.
    """
    rows, length = mask.shape
    mask = mask.bool()
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    counts = mask.sum(dim=1, keepdim=True)
    kept = torch.arange(length, device=mask.device) < counts
    index = torch.where(kept, order + torch.arange(rows, device=mask.device)[:, None] * length, NO_WORD)
    return index[:, : int(counts.max()) if rows else 0] if trim else index


def gather_words(values: Tensor, index: Tensor) -> Tensor:
    """``values[rows, length, ...]`` read at ``index[sentences, words]`` (flat positions, ``NO_WORD`` where a
    sentence has no such word: 0 there) -> ``[sentences, words, ...]``."""
    flat = values.flatten(0, 1)
    picked = flat[index.clamp(min=0)]
    kept = (index >= 0).view(*index.shape, *([1] * (picked.dim() - 2)))
    return picked.masked_fill(~kept, 0)


def scatter_words(words: Tensor, index: Tensor, shape: torch.Size) -> Tensor:
    """The inverse of ``gather_words`` for ``words[sentences, words]``: a ``shape`` tensor holding each word's
    value at its sub-token position, 0 elsewhere."""
    size = shape[0] * shape[1]
    slots = index.masked_fill(index < 0, size).flatten()  # positions a sentence lacks go to one spare slot
    out = words.new_zeros(size + 1).scatter_(0, slots, words.flatten())
    return out[:size].view(shape)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 go up to float32 (sums over a sentence lose too much in half precision)."""
    return torch.promote_types(dtype, torch.float32)


def _check_shapes(emissions: Tensor, mask: Tensor, num_labels: int) -> None:
    if emissions.dim() != 3 or emissions.shape[2] != num_labels:
        raise ValueError(f"emissions must be [sentences, words, {num_labels}], got {list(emissions.shape)}.")
    if mask.shape != emissions.shape[:2]:
        raise ValueError(f"mask must be [sentences, words] = {list(emissions.shape[:2])}, got {list(mask.shape)}.")
    if mask.device.type == "cpu" and mask.shape[1] > 1 and (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("mask must be True on a prefix of each row (the sentence's words first); gather_words packs them.")


def _per_row(scores: Tensor, batch: int) -> Tensor:
    """Start or end scores as ``[B, C]``: one row per sequence (``[C]`` is shared by all)."""
    return scores.expand(batch, -1) if scores.dim() == 1 else scores


def edge_scores(scores: Tensor, at_edge: Tensor | None) -> Tensor:
    """``[B, C]`` start (or end) scores that apply only where ``at_edge`` (``[B]`` bool) is True, else 0.

    A window cut out of a longer sentence does not start where the sentence starts: it may open inside
    an entity (``I-X`` first), so the sentence-start rules and scores must not apply to it.
    """
    if at_edge is None:
        return scores
    rows = _per_row(scores, at_edge.shape[0])
    return torch.where(at_edge.to(device=rows.device, dtype=torch.bool)[:, None], rows, torch.zeros_like(rows))


def viterbi_decode(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """Best label path per sentence over its words (``mask`` True on a prefix of each row); 0 elsewhere.

    The score of a path is ``start[y1] + sum emissions[t, yt] + sum transitions[y(t-1), yt] + end[yn]``.
    Scores may be ``-inf`` (forbidden). ``start``/``end`` are ``[C]``, or ``[B, C]`` per sentence (see ``edge_scores``).
    """
    _check_shapes(emissions, mask, transitions.shape[0])
    batch, length, _ = emissions.shape
    mask = mask.to(device=emissions.device, dtype=torch.bool)
    if length == 0:
        return torch.zeros(batch, 0, dtype=torch.long, device=emissions.device)
    dtype = _working_dtype(emissions.dtype)
    transitions, start, end = (x.to(device=emissions.device, dtype=dtype) for x in (transitions, start, end))
    emissions = emissions.to(dtype)
    lengths = mask.sum(dim=1)

    score = _per_row(start, batch) + emissions[:, 0]  # [B, C]: best score of a path ending in each label
    backpointers = []
    for t in range(1, length):
        best, previous = (score[:, :, None] + transitions).max(dim=1)  # over the previous label
        backpointers.append(previous)
        score = torch.where(mask[:, t, None], best + emissions[:, t], score)
    label = (score + _per_row(end, batch)).argmax(dim=1)  # the label at each row's last word

    path = torch.zeros(batch, length, dtype=torch.long, device=emissions.device)
    for t in range(length - 1, -1, -1):
        inside = t < lengths
        path[:, t] = torch.where(inside, label, 0)
        if t > 0:
            label = torch.where(inside, backpointers[t - 1].gather(1, label[:, None]).squeeze(1), label)
    return path


def _logsumexp(x: Tensor, dim: int) -> Tensor:
    """``torch.logsumexp`` for finite input (forbidden scores are ``FORBIDDEN_SCORE``, not -inf): fewer operators."""
    top = x.amax(dim=dim, keepdim=True)
    return (x - top).exp().sum(dim=dim).log() + top.squeeze(dim)


@functools.cache
def _identity_on(num_labels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.full((num_labels, num_labels), FORBIDDEN_SCORE, dtype=dtype, device=device).fill_diagonal_(0.0)


def _identity(num_labels: int, like: Tensor) -> Tensor:
    """The log-space identity matrix: 0 on the diagonal, ``FORBIDDEN_SCORE`` (exp() = 0) elsewhere (made once per
    size, dtype and device; never written to)."""
    return _identity_on(num_labels, like.dtype, like.device)


def _leaves(emissions: Tensor, mask: Tensor, transitions: Tensor) -> tuple[Tensor, int]:
    """The scan's matrices: step ``t >= 1`` is ``transitions[i, j] + emissions[t, j]`` (label i to j), the identity
    past a sentence's end and as padding up to a power of two; and how many steps are real (``words - 1``)."""
    batch, length, num_labels = emissions.shape
    identity = _identity(num_labels, emissions)
    leaves = torch.where(mask[:, 1:, None, None], transitions + emissions[:, 1:, None, :], identity)
    count = length - 1
    rounded = 1 << max(count - 1, 0).bit_length()
    if rounded > count:
        leaves = torch.cat([leaves, identity.expand(batch, rounded - count, num_labels, num_labels)], dim=1)
    return leaves, count


def _scan_marginals(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor):
    """``(log Z, word marginals [B, T, C], expected transitions [B, C, C])`` by the parallel scan, up and down.

    Up: step ``t >= 1`` is the matrix ``transitions[i, j] + emissions[t, j]`` (``_leaves``, the identity past a
    sentence's end); the matrices are multiplied in pairs, ``P[i, j] = log sum_k exp(A[i, k] + B[k, j])``, halving
    their number each round, and each product keeps the weights ``w[i, k, j] = exp(A[i, k] + B[k, j] - P[i, j])``
    of its middle label. Down: the gradient of
    ``log Z`` flows back through them (``dA[i, k] = sum_j dP[i, j] w[i, k, j]``, ``dB[k, j] = sum_i dP[i, j]
    w[i, k, j]``), which at the steps are the pairwise marginals ``p(y[t-1] = i, y[t] = j)``. About 2 log2(T)
    rounds of batched operators whatever T is, but ``T x C^3`` work: the choice where operators cost more than
    arithmetic (an accelerator, whose host dispatches every operator).
    """
    batch, length, num_labels = emissions.shape
    weights = []
    total = _identity(num_labels, emissions)
    if length > 1:
        steps, count = _leaves(emissions, mask, transitions)
        while steps.shape[1] > 1:
            joint = steps[:, 0::2, :, :, None] + steps[:, 1::2, None, :, :]  # [B, K, i, k, j]
            top = joint.amax(dim=-2, keepdim=True)
            mass = (joint - top).exp()
            summed = mass.sum(dim=-2, keepdim=True)
            weights.append(mass / summed)
            steps = (summed.log() + top).squeeze(-2)
        total = steps[:, 0]
    joint = (start + emissions[:, 0])[:, :, None] + end[:, None, :] + total  # [B, y0, y_last]
    log_z = _logsumexp(joint.flatten(1), dim=1)
    grad = (joint - log_z[:, None, None]).exp()[:, None]  # p(y[0] = i, y[last] = j)
    first = grad[:, 0].sum(dim=2)
    for weight in reversed(weights):
        spread = grad[..., :, None, :] * weight  # [B, K, i, k, j]
        grad = torch.stack([spread.sum(dim=-1), spread.sum(dim=-3)], dim=2).flatten(1, 2)
    if length == 1:  # no step between words
        return log_z, first[:, None], emissions.new_zeros(batch, num_labels, num_labels)
    pairwise = grad[:, :count] * mask[:, 1:, None, None]  # one step (two words) has no product: its marginals are p(ends)
    return log_z, torch.cat([first[:, None], pairwise.sum(dim=2)], dim=1), pairwise.sum(dim=1)


def forward_backward(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(alphas [B, T, C], betas [B, T, C], log Z [B])`` in log space, one word position at a time.

    ``alphas[b, t, y]``: log of the summed scores of the paths over words ``0..t`` that end in ``y`` (its emission
    included); ``betas[b, t, y]``: of the paths over words ``t+1..`` from ``y`` on (``end[y]`` at the last word); past
    a sentence's end both stay at their last value. ``alphas + betas - log Z`` is ``log p(y[t] = y)``. Scores must be
    finite (forbidden ones ``FORBIDDEN_SCORE``); ``start``/``end`` are ``[B, C]``.
    """
    batch, length, num_labels = emissions.shape
    alpha = start + emissions[:, 0]
    alphas = [alpha]
    for t in range(1, length):
        alpha = torch.where(mask[:, t, None], _logsumexp(alpha[:, :, None] + transitions, dim=1) + emissions[:, t], alpha)
        alphas.append(alpha)
    beta = end.expand(batch, -1)
    betas = [beta]
    for t in range(length - 2, -1, -1):
        ahead = _logsumexp(transitions + (emissions[:, t + 1] + beta)[:, None, :], dim=2)
        beta = torch.where(mask[:, t + 1, None], ahead, end)
        betas.append(beta)
    alphas, betas = torch.stack(alphas, dim=1), torch.stack(betas[::-1], dim=1)  # [B, T, C]
    return alphas, betas, _logsumexp(alphas[:, 0] + betas[:, 0], dim=1)


def _loop_marginals(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor):
    """``(log Z, word marginals [B, T, C], expected transitions [B, C, C])`` by the forward-backward algorithm,
    one word position at a time: ``2 T`` small steps of ``C^2`` work each, the choice where arithmetic costs more
    than operators (a CPU)."""
    alphas, betas, log_z = forward_backward(emissions, mask, transitions, start, end)
    words = (alphas + betas - log_z[:, None, None]).exp() * mask[:, :, None]
    pairwise = alphas[:, :-1, :, None] + transitions + (emissions[:, 1:] + betas[:, 1:])[:, :, None, :]
    moves = ((pairwise - log_z[:, None, None, None]).exp() * mask[:, 1:, None, None]).sum(dim=1)
    return log_z, words, moves


class _CrfLikelihood(torch.autograd.Function):
    """``-log p(tags)`` per sentence and its exact gradient, with no autograd graph.

    The gradient of ``log Z`` is the expected counts (word marginals for the emissions and the start and end
    scores, expected transitions for the transitions), that of the gold score its counts: both are ready when
    ``forward`` returns, so ``backward`` only scales them. ``scan``: ``_scan_marginals`` if True, else
    ``_loop_marginals`` (the same figures).

    Inputs: emissions ``[B, T, C]`` (0 past each sentence), tags ``[B, T]`` (0 past it), mask ``[B, T]`` (a prefix
    per row), transitions ``[C, C]`` and start/end ``[B, C]``, all scores finite and in one float dtype.
    """

    @staticmethod
    def forward(
        ctx, emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor, scan: bool
    ) -> Tensor:
        batch, length, num_labels = emissions.shape
        keep = mask[:, :1].to(emissions.dtype)  # [B, 1]: 1 for a sentence with words, 0 for an empty row
        # Gold path: its counts (one-hot words, transitions taken), and its score.
        gold_words = emissions.new_zeros(batch, length, num_labels).scatter_(2, tags[:, :, None], mask[:, :, None].to(emissions.dtype))
        gold_moves = gold_words[:, :-1].transpose(1, 2) @ gold_words[:, 1:]  # [B, C, C]
        last = (mask.sum(dim=1) - 1).clamp(min=0)
        rows = torch.arange(batch, device=tags.device)
        gold_first, gold_last = gold_words[:, 0], gold_words[rows, last]
        gold = (gold_words * emissions).sum(dim=(1, 2)) + (gold_moves * transitions).sum(dim=(1, 2))
        gold = gold + (gold_first * start + gold_last * end).sum(dim=1)

        log_z, words, moves = (_scan_marginals if scan else _loop_marginals)(emissions, mask, transitions, start, end)
        # Rows without words have no gold counts (mask) and no marginals (keep): their gradient is 0.
        words = words * keep[:, :, None]
        ctx.save_for_backward(words - gold_words, moves * keep[:, :, None] - gold_moves, words[:, 0] - gold_first, words[rows, last] - gold_last)
        return (log_z - gold) * keep[:, 0]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        emissions, transitions, start, end = ctx.saved_tensors
        return (
            grad[:, None, None] * emissions, None, None,
            (grad[:, None, None] * transitions).sum(dim=0), grad[:, None] * start, grad[:, None] * end, None,
        )


def _constraint_scores(allowed: Sequence[Tensor], forbidden: float, device, dtype) -> list[Tensor]:
    """0 where allowed, ``forbidden`` where not."""
    return [torch.zeros(a.shape, device=device, dtype=dtype).masked_fill(~a.to(device), forbidden) for a in allowed]


def constrained_decode(
    logits: Tensor,
    mask: Tensor,
    allowed: Sequence[Tensor],
    opens: Tensor | None = None,
    closes: Tensor | None = None,
) -> Tensor:
    """The best-scoring path that ``allowed`` (``allowed_transitions``' tables) permits, without a CRF.

    Word level, as ``viterbi_decode``. Transitions cost nothing, so where the per-word argmax is already a
    valid sequence it is the result. ``opens``/``closes`` (``[B]`` bool): whether each sentence row holds its
    sentence's first/last word; the start/end rules apply only there (default: everywhere).
    """
    transitions, start, end = _constraint_scores(allowed, float("-inf"), logits.device, _working_dtype(logits.dtype))
    return viterbi_decode(logits, mask, transitions, edge_scores(start, opens), edge_scores(end, closes))


class TransitionRules(nn.Module):
    """A scheme's allowed transitions (``allowed_transitions``' three tables) as boolean buffers.

    Buffers, so that they move with the model to its device and live inside it (sharded training gathers
    nothing for them); not saved, because they follow from the label list and scheme in the config. A
    model built on the meta device by ``from_pretrained`` gets them refilled by ``BertForNer._init_weights``.
    """

    def __init__(self, allowed: Sequence[Tensor]) -> None:
        super().__init__()
        for name, table in zip(("transitions", "start", "end"), allowed):
            self.register_buffer(name, table.to(torch.bool).clone(), persistent=False)

    def tables(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.transitions, self.start, self.end


class CRF(nn.Module):
    """Linear-chain CRF over ``num_labels`` labels with learnable transition, start and end scores.

    ``allowed``, as returned by ``allowed_transitions``, fixes forbidden transitions to a large negative
    score; they get no gradient and are never decoded. The tables are kept as buffers (moved with the
    module, not saved: they follow from the label list and scheme; ``BertForNer`` refills them on load).
    ``opens``/``closes`` (``[B]`` bool, default all True) say whether each sentence row holds its sentence's
    first/last word: the start/end scores and rules apply only there (see ``edge_scores``).
    """

    def __init__(self, num_labels: int, allowed: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.transitions = nn.Parameter(torch.empty(num_labels, num_labels).uniform_(-0.1, 0.1))
        self.start_transitions = nn.Parameter(torch.empty(num_labels).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(num_labels).uniform_(-0.1, 0.1))
        if allowed is None:
            allowed = (
                torch.ones(num_labels, num_labels, dtype=torch.bool),
                torch.ones(num_labels, dtype=torch.bool),
                torch.ones(num_labels, dtype=torch.bool),
            )
        shapes = [tuple(a.shape) for a in allowed]
        if shapes != [(num_labels, num_labels), (num_labels,), (num_labels,)]:
            raise ValueError(
                f"allowed must be (transitions[{num_labels}, {num_labels}], start[{num_labels}], end[{num_labels}]) "
                f"as returned by allowed_transitions(label_list, scheme), got shapes {shapes}."
            )
        self.rules = TransitionRules(allowed)
        # How the likelihood's sums over paths are computed (same figures): "scan" (parallel, few operators, T x C^3
        # work), "loop" (word by word, T x C^2 work), or "auto": the scan on an accelerator (up to SCAN_MAX_ELEMENTS),
        # the loop on a CPU.
        self.algorithm = "auto"

    @property
    def allowed(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.rules.tables()

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}"

    def scores(
        self,
        forbidden: float = FORBIDDEN_SCORE,
        dtype: torch.dtype = torch.float32,
        opens: Tensor | None = None,
        closes: Tensor | None = None,
    ) -> list[Tensor]:
        """``[transitions, start, end]`` with forbidden entries replaced by ``forbidden``; start/end per
        sentence (``[B, C]``, 0 where the row is not at its sentence's edge) when ``opens``/``closes`` are given."""
        params = [self.transitions, self.start_transitions, self.end_transitions]
        transitions, start, end = [
            param.to(dtype).masked_fill(~allowed.to(param.device), forbidden) for param, allowed in zip(params, self.allowed)
        ]
        return [transitions, edge_scores(start, opens), edge_scores(end, closes)]

    def neg_log_likelihood(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor,
        reduction: str = "mean",
        opens: Tensor | None = None,
        closes: Tensor | None = None,
    ) -> Tensor:
        """``-log p(tags | emissions)`` per sentence row over its words (``mask`` True on a prefix of each row).

        reduction: ``"none"`` (one value per row), ``"sum"``, or ``"mean"`` (over the rows that have at least
        one word; a row with none contributes 0). Tags where ``mask`` is False are ignored (they may be -100).
        """
        if reduction not in ("none", "sum", "mean"):
            raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}.")
        _check_shapes(emissions, mask, self.num_labels)
        if tags.shape != mask.shape:
            raise ValueError(f"tags must be [sentences, words] = {list(mask.shape)}, got {list(tags.shape)}.")
        batch, length, num_labels = emissions.shape
        mask = mask.to(device=emissions.device, dtype=torch.bool)
        if length == 0:
            nll = emissions.new_zeros(batch, dtype=_working_dtype(emissions.dtype))
            return nll if reduction == "none" else nll.sum()
        tags = tags.to(emissions.device)
        valid = ~(mask & ((tags < 0) | (tags >= num_labels))).any()
        if tags.device.type == "cpu" and not valid:
            kept_tags = tags[mask]
            raise ValueError(
                f"tags at kept (mask True) positions must be label ids in [0, {num_labels}); found "
                f"{kept_tags.min().item()}..{kept_tags.max().item()}. Set mask False where the label is -100."
            )
        torch._assert_async(valid)  # on an accelerator: checked without waiting for the device (no host sync)
        dtype = _working_dtype(emissions.dtype)
        transitions, start, end = self.scores(FORBIDDEN_SCORE, dtype, opens, closes)
        # Zero what lies past each sentence so that large or non-finite values there cannot leak NaN into the gradient.
        emissions = emissions.to(dtype).masked_fill(~mask[:, :, None], 0.0)
        scan = self.algorithm == "scan" or (
            self.algorithm == "auto" and emissions.device.type != "cpu" and batch * length * num_labels**3 <= SCAN_MAX_ELEMENTS
        )
        nll = _CrfLikelihood.apply(
            emissions, tags.masked_fill(~mask, 0), mask, transitions, _per_row(start, batch), _per_row(end, batch), scan
        )
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        return nll.sum() / mask[:, 0].sum().clamp(min=1)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor, **options: Any) -> Tensor:
        """The loss: ``neg_log_likelihood`` (same options)."""
        return self.neg_log_likelihood(emissions, tags, mask, **options)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor, opens: Tensor | None = None, closes: Tensor | None = None) -> Tensor:
        """Best path per sentence row (LongTensor[B, W], 0 where ``mask`` is False); never a forbidden transition."""
        return viterbi_decode(emissions, mask, *self.scores(float("-inf"), _working_dtype(emissions.dtype), opens, closes))
