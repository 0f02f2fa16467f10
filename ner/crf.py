"""A linear-chain CRF, Viterbi decoding, and the transitions each tag scheme allows as tensors.

Used two ways: ``constrained_decode`` runs Viterbi over a plain classifier's logits with the scheme's
invalid transitions forbidden (no ``I-PER`` after ``O`` in IOB2), and ``CRF`` learns transition
scores and trains with the negative log-likelihood.

Masks may have holes: the caller keeps only the first sub-token of each word, so the kept positions
are scattered. Every function here reads the kept positions in order as one contiguous sequence
(they are packed to the front, decoded, and scattered back); positions that are not kept are skipped
entirely and come back as 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ner.schemes import transition_tables

logger = logging.getLogger(__name__)

# Score of a forbidden transition while training: finite so that logsumexp and its gradient stay
# free of NaN, and large enough that exp() of it is 0 in float32. Decoding uses -inf instead.
FORBIDDEN_SCORE = -10000.0


def allowed_transitions(label_list: list[str], scheme: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(transitions[C, C], start[C], end[C])``: ``schemes.transition_tables`` as boolean tensors.

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


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 go up to float32 (sums over a sentence lose too much in half precision)."""
    return torch.promote_types(dtype, torch.float32)


def _pack(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(order[B, T], packed_mask[B, T], lengths[B])``: ``order`` lists each row's kept positions
    first, in their original order, then the others; ``packed_mask`` is the prefix mask of the result."""
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    lengths = mask.sum(dim=1)
    packed_mask = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    return order, packed_mask, lengths


def _check_shapes(emissions: Tensor, mask: Tensor, num_labels: int) -> None:
    if emissions.dim() != 3 or emissions.shape[2] != num_labels:
        raise ValueError(f"emissions must be [batch, time, {num_labels}], got {list(emissions.shape)}.")
    if mask.shape != emissions.shape[:2]:
        raise ValueError(f"mask must be [batch, time] = {list(emissions.shape[:2])}, got {list(mask.shape)}.")


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
    """Best label path per sequence over the kept (``mask`` True) positions; 0 elsewhere.

    The score of a path is ``start[y1] + sum emissions[t, yt] + sum transitions[y(t-1), yt] + end[yn]``
    over the kept positions, read in order as if contiguous. Scores may be ``-inf`` (forbidden).
    ``start``/``end`` are ``[C]``, or ``[B, C]`` for per-sequence scores (see ``edge_scores``).
    """
    _check_shapes(emissions, mask, transitions.shape[0])
    batch, length, num_labels = emissions.shape
    mask = mask.to(device=emissions.device, dtype=torch.bool)
    if length == 0:
        return torch.zeros(batch, 0, dtype=torch.long, device=emissions.device)
    dtype = _working_dtype(emissions.dtype)
    transitions, start, end = (x.to(device=emissions.device, dtype=dtype) for x in (transitions, start, end))
    order, packed_mask, lengths = _pack(mask)
    packed = emissions.to(dtype).gather(1, order[:, :, None].expand(-1, -1, num_labels))

    start, end = _per_row(start, batch), _per_row(end, batch)
    score = start + packed[:, 0]  # [B, C]: best score of a path ending in each label
    backpointers = []
    for t in range(1, length):
        candidates = score[:, :, None] + transitions[None, :, :]  # [B, previous, current]
        best, previous = candidates.max(dim=1)
        backpointers.append(previous)
        score = torch.where(packed_mask[:, t, None], best + packed[:, t], score)
    label = (score + end).argmax(dim=1)  # the label at each row's last kept position

    path = torch.zeros(batch, length, dtype=torch.long, device=emissions.device)
    for t in range(length - 1, -1, -1):
        inside = t < lengths
        path[:, t] = torch.where(inside, label, 0)
        if t > 0:
            label = torch.where(inside, backpointers[t - 1].gather(1, label[:, None]).squeeze(1), label)
    return torch.zeros_like(path).scatter_(1, order, path)


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

    Transitions cost nothing, so where the per-position argmax is already a valid sequence it is the result.
    ``opens``/``closes`` (``[B]`` bool): whether each sequence holds its sentence's first/last word; the
    start/end rules apply only there (default: everywhere).
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
    ``opens``/``closes`` (``[B]`` bool, default all True) say whether each sequence holds its sentence's
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
        sequence (``[B, C]``, 0 where the sequence is not at its sentence's edge) when ``opens``/``closes`` are given."""
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
        """``-log p(tags | emissions)`` over the kept positions, by the forward algorithm in log space.

        reduction: ``"none"`` (one value per sequence), ``"sum"``, or ``"mean"`` (over the sequences that
        have at least one kept position; a sequence with none contributes 0). Tags where ``mask`` is False
        are ignored (they may be -100).
        """
        if reduction not in ("none", "sum", "mean"):
            raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}.")
        _check_shapes(emissions, mask, self.num_labels)
        if tags.shape != mask.shape:
            raise ValueError(f"tags must be [batch, time] = {list(mask.shape)}, got {list(tags.shape)}.")
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
        start, end = _per_row(start, batch), _per_row(end, batch)
        order, packed_mask, lengths = _pack(mask)
        # Zero the padding so that large or non-finite values there cannot leak NaN into the gradient.
        packed = emissions.to(dtype).gather(1, order[:, :, None].expand(-1, -1, num_labels))
        packed = packed.masked_fill(~packed_mask[:, :, None], 0.0)
        packed_tags = tags.gather(1, order).masked_fill(~packed_mask, 0)

        # Score of the gold path.
        emitted = packed.gather(2, packed_tags[:, :, None]).squeeze(2) * packed_mask
        moved = transitions[packed_tags[:, :-1], packed_tags[:, 1:]] * packed_mask[:, 1:]
        last = packed_tags.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        gold = start.gather(1, packed_tags[:, :1]).squeeze(1) + emitted.sum(1) + moved.sum(1) + end.gather(1, last[:, None]).squeeze(1)

        # log Z: the forward algorithm.
        alpha = start + packed[:, 0]
        for t in range(1, length):
            step = torch.logsumexp(alpha[:, :, None] + transitions[None, :, :], dim=1) + packed[:, t]
            alpha = torch.where(packed_mask[:, t, None], step, alpha)
        log_partition = torch.logsumexp(alpha + end, dim=1)

        nll = torch.where(lengths > 0, log_partition - gold, torch.zeros_like(gold))
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        return nll.sum() / (lengths > 0).sum().clamp(min=1)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor, **options: Any) -> Tensor:
        """The loss: ``neg_log_likelihood`` (same options)."""
        return self.neg_log_likelihood(emissions, tags, mask, **options)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor, opens: Tensor | None = None, closes: Tensor | None = None) -> Tensor:
        """Best path per sequence (LongTensor[B, T], 0 where ``mask`` is False); never a forbidden transition."""
        return viterbi_decode(emissions, mask, *self.scores(float("-inf"), _working_dtype(emissions.dtype), opens, closes))
