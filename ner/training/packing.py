"""Packed training batches: examples laid into rows, each attending only to itself.

Packing (training): the examples of one batch -- the same examples, in the same optimizer step, as a
padded batch would hold -- are laid first-fit-decreasing into rows no longer than the batch's longest
example. Each keeps its own position ids (0, 1, ...) and attends only to itself (a block-diagonal
attention mask), so per-token outputs, the loss (the mean over the batch's labelled sub-tokens) and the
gradients are those of the padded batch, without the padding: random batches of 32 CoNLL-2003
sentences are about 2.5 times their real sub-tokens once padded, packed rows about 1.1 times. Only the
dropout masks drawn differ (they follow the tensor shapes). A CRF reads each sentence of a row on its
own: the collator adds ``word_index`` (``sentences=True``), where each sentence's words sit in the packed
rows, built here on the host, so the model gathers them without asking the device. Not used with
attention kernels that take neither a 4D mask nor flex attention's block mask (``ner.training.attention``);
evaluation always pads, since predictions are read per example.

Static shapes (``StaticPackingSampler``, ``--pack_to_length N``): every batch is the same number of rows
of exactly N sub-tokens, so that ``torch.compile`` and CUDA graphs see one shape. Batches are then
made of whole packed rows (best-fit-decreasing over the training set, the ties between equal lengths
and the order of the rows drawn anew each epoch) instead of the Trainer's batches of examples: every
example once per epoch, about ``per_device_train_batch_size`` of them per batch.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch

from ner.data.schemes import IGNORE_INDEX
from ner.model.crf import NO_WORD
from ner.training.attention import FLEX_FORM, PACKABLE_ATTENTION, SDPA_OR_FLEX


def example_lengths(dataset: Any, column: str = "input_ids") -> list[int]:
    """Sub-tokens per example, read from the Arrow column (no pass over decoded rows)."""
    try:

        return pc.list_value_length(dataset.with_format("arrow")[column]).to_numpy(zero_copy_only=False).tolist()
    except (AttributeError, TypeError, KeyError):  # not a datasets.Dataset: fall back to reading rows
        return [len(example[column]) for example in dataset]


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: example indices per row, each row's lengths summing to at most ``capacity``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = lengths[index]
        for row, free in enumerate(room):
            if length <= free:
                rows[row].append(index)
                room[row] -= length
                break
        else:
            rows.append([index])
            room.append(capacity - length)
    return rows


def best_fit_rows(order: Sequence[int], lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Example indices per row, taken in ``order``, each into the open row with the least room that holds it.

    Fed longest first this is best-fit-decreasing, in O(n log n). Which row an example joins depends only on
    the lengths met in ``order``, so reordering examples of equal length changes who shares a row, never how
    many rows there are.
    """
    rows: list[list[int]] = []
    rooms: list[int] = []  # sorted: the amounts of room that some open row has
    rows_with: dict[int, list[int]] = {}  # room -> the open rows with exactly that much
    for index in order:
        length = lengths[index]
        at = bisect.bisect_left(rooms, length)
        if at < len(rooms):
            room = rooms[at]
            row = rows_with[room].pop()
            if not rows_with[room]:
                del rows_with[room]
                del rooms[at]
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(index)
        left = room - length
        if left > 0:
            if left not in rows_with:
                bisect.insort(rooms, left)
                rows_with[left] = []
            rows_with[left].append(row)
    return rows


def next_fit_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Positions in ``lengths`` per row, in order, a new row opened when the next one does not fit.

    For a sequence that some split into k contiguous rows fits, this greedy split needs at most k rows.
    """
    rows: list[list[int]] = []
    used = capacity
    for index, length in enumerate(lengths):
        if used + length > capacity:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += length
    return rows


class PackingCollator:
    """Collates a training batch into packed rows: ``input_ids``, ``token_type_ids``, ``position_ids``,
    ``labels`` ([rows, length]) and what keeps the rows' examples apart, by ``attn_implementation``: a 4D
    ``attention_mask`` ([rows, 1, length, length]; bool for SDPA, additive float for eager), or for flex
    attention (``"flex_attention"``) ``document_ids`` ([rows, length]: the example's slot in its row, -1 for
    padding), which ``with_block_mask`` turns into a ``BlockMask`` on the device.

    Padding at the end of a row forms one more block of its own (it attends to itself, so no attention
    row is empty, which would give NaN) and has label ``IGNORE_INDEX``. Rows are as long as the batch's
    longest example, unless ``row_length`` and ``num_rows`` fix the shape: the examples then fill the rows
    in the order given (as ``StaticPackingSampler`` lays them out) and rows left over are all padding.

    ``sentences=True`` (a CRF) adds ``word_index`` ([examples, words]: the flat position ``row * length + t`` of
    each labelled sub-token of each example, in order, ``NO_WORD`` past its end) and, when the examples have them,
    ``opens_sentence``/``closes_sentence`` with one entry per example, in the same order.
    """

    def __init__(
        self,
        pad_token_id: int,
        attn_implementation: str = "sdpa",
        pad_to_multiple_of: int | None = None,
        *,
        row_length: int | None = None,
        num_rows: int | None = None,
        sentences: bool = False,
    ) -> None:
        forms = (*PACKABLE_ATTENTION, SDPA_OR_FLEX, FLEX_FORM)
        if attn_implementation not in forms:
            raise ValueError(
                f"Packing needs an attention implementation that takes a 4D mask or a block mask ({', '.join(forms)}), "
                f"not {attn_implementation!r}."
            )
        if (row_length is None) != (num_rows is None):
            raise ValueError("Give row_length and num_rows together (static shapes), or neither.")
        self.pad_token_id = pad_token_id
        self.attn_implementation = attn_implementation
        self.pad_to_multiple_of = pad_to_multiple_of
        self.row_length = row_length
        self.num_rows = num_rows
        self.sentences = sentences

    def _rows(self, lengths: list[int]) -> tuple[list[list[int]], int]:
        """Example positions per row, and the row length."""
        if self.row_length is None:
            capacity = max(lengths)
            if self.pad_to_multiple_of:
                capacity = -(-capacity // self.pad_to_multiple_of) * self.pad_to_multiple_of
            return pack_rows(lengths, capacity), capacity
        if max(lengths) > self.row_length:
            raise ValueError(
                f"An example of {max(lengths)} sub-tokens does not fit a row of {self.row_length} (--pack_to_length): "
                "pass a --pack_to_length of at least the longest example (e.g. the --max_seq_length)."
            )
        rows = next_fit_rows(lengths, self.row_length)
        if len(rows) > self.num_rows:
            raise ValueError(
                f"{len(lengths)} examples ({sum(lengths)} sub-tokens) need {len(rows)} rows of {self.row_length}, more than "
                f"the {self.num_rows} of a static batch; static batches are laid out by StaticPackingSampler."
            )
        return rows + [[] for _ in range(self.num_rows - len(rows))], self.row_length

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(feature["input_ids"]) for feature in features]
        rows, capacity = self._rows(lengths)
        shape = (len(rows), capacity)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros(shape, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        block = torch.full(shape, -1, dtype=torch.long)  # which example of the row each position holds
        words: list[list[int]] = []  # per example placed: flat positions of its labelled sub-tokens
        placed: list[int] = []  # the examples, in the order of ``words``
        for row, members in enumerate(rows):
            start = 0
            for slot, index in enumerate(members):
                feature, end = features[index], start + lengths[index]
                input_ids[row, start:end] = torch.tensor(feature["input_ids"])
                if feature.get("token_type_ids") is not None:
                    token_type_ids[row, start:end] = torch.tensor(feature["token_type_ids"])
                if feature.get("labels") is not None:
                    labels[row, start:end] = torch.tensor(feature["labels"])
                    if self.sentences:
                        offset = row * capacity + start
                        words.append([offset + t for t, label in enumerate(feature["labels"]) if label != IGNORE_INDEX])
                        placed.append(index)
                position_ids[row, start:end] = torch.arange(lengths[index])
                block[row, start:end] = slot
                start = end
        batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "position_ids": position_ids}
        if placed:
            width = max(len(positions) for positions in words)
            batch["word_index"] = torch.tensor([positions + [NO_WORD] * (width - len(positions)) for positions in words])
            for edge in ("opens_sentence", "closes_sentence"):
                if edge in features[0]:
                    batch[edge] = torch.tensor([bool(features[index][edge]) for index in placed])
        if self.attn_implementation == FLEX_FORM:
            batch["document_ids"] = block
        else:
            mask = (block[:, :, None] == block[:, None, :])[:, None]
            if self.attn_implementation == "eager":
                mask = torch.zeros(mask.shape).masked_fill_(~mask, torch.finfo(torch.float32).min)
            batch["attention_mask"] = mask
        if "labels" in features[0]:
            batch["labels"] = labels
        return batch


class StaticPackingSampler(torch.utils.data.Sampler):
    """Training batches of one shape: lists of example indices, row after row, that fill ``num_rows`` rows of
    ``row_length`` sub-tokens (``PackingCollator(row_length=..., num_rows=...)`` collates them).

    Each epoch the examples go longest first, ties between equal lengths in a random order, best-fit into
    rows; the rows go in a random order, ``num_rows`` per batch (the last batch's missing rows are padding).
    The number of rows depends only on the lengths, so every epoch has the same number of batches (the
    Trainer counts its steps once), and every example is in exactly one of them. ``num_rows`` is set so that
    a batch holds about ``batch_size`` examples on average. The Trainer's ``set_epoch`` makes each epoch's
    batches follow from ``seed`` and the epoch, as resuming needs.
    """

    def __init__(self, lengths: Sequence[int], row_length: int, batch_size: int, seed: int = 0) -> None:
        self.lengths = [int(length) for length in lengths]
        if not self.lengths:
            raise ValueError("StaticPackingSampler got no examples.")
        if max(self.lengths) > row_length:
            raise ValueError(
                f"The longest training example has {max(self.lengths)} sub-tokens, more than --pack_to_length {row_length}: "
                "pass a --pack_to_length of at least the --max_seq_length, or a smaller --max_seq_length."
            )
        self.row_length = row_length
        self.seed = seed
        self.epoch = 0
        self.total_rows = len(best_fit_rows(self._longest_first(np.arange(len(self.lengths))), self.lengths, row_length))
        self.num_rows = max(1, round(batch_size * self.total_rows / len(self.lengths)))

    def _longest_first(self, order: np.ndarray) -> list[int]:
        lengths = np.asarray(self.lengths)[order]
        return order[np.argsort(-lengths, kind="stable")].tolist()

    def __len__(self) -> int:
        return math.ceil(self.total_rows / self.num_rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        random = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1  # a second pass without set_epoch draws new batches, as a RandomSampler would
        rows = best_fit_rows(self._longest_first(random.permutation(len(self.lengths))), self.lengths, self.row_length)
        order = random.permutation(len(rows)).tolist()
        for start in range(0, len(rows), self.num_rows):
            yield [index for row in order[start : start + self.num_rows] for index in rows[row]]


def packing_unsupported(model: Any, args: Any) -> str | None:
    """Why training batches of ``model`` under ``args`` cannot be packed, or None when they can."""
    config = getattr(model, "config", None)
    if getattr(config, "use_crf", False) and getattr(args, "n_gpu", 1) > 1:
        return "a CRF reads packed sentences by their place in the whole batch, which DataParallel splits by rows"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in (*PACKABLE_ATTENTION, SDPA_OR_FLEX):
        return f"attention implementation {attention!r} takes no 4D mask (packing works with {', '.join(PACKABLE_ATTENTION)})"
    if getattr(args, "include_num_input_tokens_seen", "no") not in ("no", False):
        return "--include_num_input_tokens_seen counts the attention mask, which packing makes 4D"
    return None
