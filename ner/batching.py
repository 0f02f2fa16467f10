"""How examples become batches: packed training rows, length-sorted evaluation, and lengths read from Arrow.

Packing (training): the examples of one batch -- the same examples, in the same optimizer step, as a
padded batch would hold -- are laid first-fit-decreasing into rows no longer than the batch's longest
example. Each keeps its own position ids (0, 1, ...) and attends only to itself (a block-diagonal
attention mask), so per-token outputs, the loss (the mean over the batch's labelled sub-tokens) and the
gradients are those of the padded batch, without the padding: random batches of 32 CoNLL-2003
sentences are about 2.5 times their real sub-tokens once padded, packed rows about 1.1 times. Only the
dropout masks drawn differ (they follow the tensor shapes). Not used with a CRF (it would chain the
sentences of a row), nor with attention kernels that take no 4D mask; evaluation always pads, since
predictions are read per example.

Length-sorted evaluation: examples are run longest first, so each batch pads to nearly its own
length, and the predictions are put back in dataset order before scoring. Nothing random happens at
evaluation, so the predictions are those of the dataset order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction

from ner.schemes import IGNORE_INDEX

logger = logging.getLogger(__name__)

# Attention implementations that accept a ready 4D mask (bool for SDPA, additive float for eager).
PACKABLE_ATTENTION = ("sdpa", "eager")


def example_lengths(dataset: Any, column: str = "input_ids") -> list[int]:
    """Sub-tokens per example, read from the Arrow column (no pass over decoded rows)."""
    try:
        import pyarrow.compute as pc

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


class PackingCollator:
    """Collates a training batch into packed rows: ``input_ids``, ``token_type_ids``, ``position_ids``,
    ``labels`` ([rows, length]) and a 4D ``attention_mask`` ([rows, 1, length, length]).

    Padding at the end of a row forms one more block of its own (it attends to itself, so no attention
    row is empty, which would give NaN) and has label ``IGNORE_INDEX``.
    """

    def __init__(self, pad_token_id: int, attn_implementation: str = "sdpa", pad_to_multiple_of: int | None = None) -> None:
        if attn_implementation not in PACKABLE_ATTENTION:
            raise ValueError(
                f"Packing needs an attention implementation that takes a 4D mask ({', '.join(PACKABLE_ATTENTION)}), "
                f"not {attn_implementation!r}."
            )
        self.pad_token_id = pad_token_id
        self.attn_implementation = attn_implementation
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(feature["input_ids"]) for feature in features]
        capacity = max(lengths)
        if self.pad_to_multiple_of:
            capacity = -(-capacity // self.pad_to_multiple_of) * self.pad_to_multiple_of
        rows = pack_rows(lengths, capacity)
        shape = (len(rows), capacity)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros(shape, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        block = torch.full(shape, -1, dtype=torch.long)  # which example of the row each position holds
        for row, members in enumerate(rows):
            start = 0
            for slot, index in enumerate(members):
                feature, end = features[index], start + lengths[index]
                input_ids[row, start:end] = torch.tensor(feature["input_ids"])
                if feature.get("token_type_ids") is not None:
                    token_type_ids[row, start:end] = torch.tensor(feature["token_type_ids"])
                if feature.get("labels") is not None:
                    labels[row, start:end] = torch.tensor(feature["labels"])
                position_ids[row, start:end] = torch.arange(lengths[index])
                block[row, start:end] = slot
                start = end
        mask = (block[:, :, None] == block[:, None, :])[:, None]
        if self.attn_implementation == "eager":
            mask = torch.zeros(mask.shape).masked_fill_(~mask, torch.finfo(torch.float32).min)
        batch = {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "position_ids": position_ids,
            "attention_mask": mask,
        }
        if "labels" in features[0]:
            batch["labels"] = labels
        return batch


def packing_unsupported(model: Any, args: Any) -> str | None:
    """Why training batches of ``model`` under ``args`` cannot be packed, or None when they can."""
    config = getattr(model, "config", None)
    if getattr(config, "use_crf", False):
        return "a CRF scores whole rows (it would chain the sentences packed into one row)"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in PACKABLE_ATTENTION:
        return f"attention implementation {attention!r} takes no 4D mask (packing works with {', '.join(PACKABLE_ATTENTION)})"
    if getattr(args, "include_num_input_tokens_seen", "no") not in ("no", False):
        return "--include_num_input_tokens_seen counts the attention mask, which packing makes 4D"
    return None


def _take(value: Any, order: np.ndarray) -> Any:
    """``value`` (an array, or nested lists/tuples of arrays, or None) with its rows taken in ``order``."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return type(value)(_take(item, order) for item in value)
    return value[order]


class LengthSortedSampler(torch.utils.data.Sampler):
    """Dataset indices, longest example first; ``order`` is kept to put predictions back."""

    def __init__(self, lengths: Sequence[int]) -> None:
        self.order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        return iter(self.order.tolist())


class BatchingTrainer(Trainer):
    """``Trainer`` with packed training batches, length-sorted evaluation and lengths read from Arrow.

    ``train_collator`` (e.g. a ``PackingCollator``) collates training batches; ``data_collator`` the
    evaluation ones. ``--train_sampling_strategy group_by_length`` groups the training batches by length
    (the Trainer's own sampler, fed precomputed lengths: it drops a ``length`` column with the unused
    ones) and never shuffles the evaluation set (the Trainer would, which breaks predictions read back
    by position).
    """

    def __init__(self, *args: Any, train_collator: Any = None, sort_eval_by_length: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_collator = train_collator
        self.sort_eval_by_length = sort_eval_by_length

    def get_train_dataloader(self):
        if self.train_collator is None:
            return super().get_train_dataloader()
        eval_collator, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator

    def _get_train_sampler(self, train_dataset: Any = None):
        train_dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and train_dataset is not None and self.args.world_size <= 1:
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=example_lengths(train_dataset)
            )
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset: Any):
        single = self.args.world_size <= 1
        if (
            self.sort_eval_by_length
            and single
            and eval_dataset is not None
            and not self.args.batch_eval_metrics
            and self.args.eval_do_concat_batches  # else predictions stay a list of batches
        ):
            return LengthSortedSampler(example_lengths(eval_dataset))
        if self.args.train_sampling_strategy == "group_by_length":
            # Never the Trainer's shuffled sampler; what it uses without group_by_length instead.
            return torch.utils.data.SequentialSampler(eval_dataset) if single and eval_dataset is not None else None
        return super()._get_eval_sampler(eval_dataset)

    def evaluation_loop(self, dataloader, *args: Any, **kwargs: Any) -> EvalLoopOutput:
        order = _sorted_order(dataloader)
        if order is None:
            return super().evaluation_loop(dataloader, *args, **kwargs)
        restore = np.argsort(order)  # row i of the sorted run is example order[i]
        compute_metrics = self.compute_metrics

        def in_dataset_order(prediction: EvalPrediction) -> dict[str, float]:
            return compute_metrics(
                EvalPrediction(
                    predictions=_take(prediction.predictions, restore),
                    label_ids=_take(prediction.label_ids, restore),
                    inputs=_take(prediction.inputs, restore),
                    losses=prediction.losses,  # batch means, not per example
                )
            )

        self.compute_metrics = in_dataset_order if compute_metrics is not None else None
        try:
            output = super().evaluation_loop(dataloader, *args, **kwargs)
        finally:
            self.compute_metrics = compute_metrics
        return output._replace(predictions=_take(output.predictions, restore), label_ids=_take(output.label_ids, restore))


def _sorted_order(dataloader: Any) -> np.ndarray | None:
    """The ``LengthSortedSampler`` order behind a (possibly accelerate-wrapped) data loader, if it has one."""
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    inner = getattr(batch_sampler, "batch_sampler", None)
    for sampler in (getattr(batch_sampler, "sampler", None), getattr(inner, "sampler", None), getattr(dataloader, "sampler", None)):
        if isinstance(sampler, LengthSortedSampler):
            return sampler.order
    return None
