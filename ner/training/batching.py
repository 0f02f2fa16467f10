"""The Trainer's batches: packed training rows (``ner.training.packing``), length-sorted evaluation, lengths read from Arrow.

Length-sorted evaluation: examples are run longest first, so each batch pads to nearly its own
length, and the predictions are put back in dataset order before scoring. Nothing random happens at
evaluation, so the predictions are those of the dataset order.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, seed_worker

from ner.training.attention import with_block_mask
from ner.training.packing import StaticPackingSampler, example_lengths

logger = logging.getLogger(__name__)


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


# The private parts of transformers' Trainer this module relies on, where it offers no public hook: the samplers
# (length-sorted evaluation, group_by_length on precomputed lengths) and the column pruning of a static loader.
# tests/training/test_batching.py fails loudly when a transformers upgrade renames or reshapes any of them.
PRIVATE_TRAINER_HOOKS = {
    "_get_train_sampler": ("self", "train_dataset"),
    "_get_eval_sampler": ("self", "eval_dataset"),
    "_remove_unused_columns": ("self", "dataset", "description"),
}


class BatchingTrainer(Trainer):
    """``Trainer`` with packed training batches, length-sorted evaluation and lengths read from Arrow.

    ``train_collator`` (e.g. a ``PackingCollator``) collates training batches; ``data_collator`` the
    evaluation ones. ``train_batch_sampler`` (a ``StaticPackingSampler``), if given, makes the training
    batches instead of the Trainer's sampler. A batch with ``document_ids`` gets its ``BlockMask`` once on
    the device. ``--train_sampling_strategy group_by_length`` groups the training batches by length
    (the Trainer's own sampler, fed precomputed lengths: it drops a ``length`` column with the unused
    ones) and never shuffles the evaluation set (the Trainer would, which breaks predictions read back
    by position).
    """

    def __init__(
        self,
        *args: Any,
        train_collator: Any = None,
        train_batch_sampler: StaticPackingSampler | None = None,
        sort_eval_by_length: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.train_collator = train_collator
        self.train_batch_sampler = train_batch_sampler
        self.sort_eval_by_length = sort_eval_by_length
        self.sorted_eval: tuple[Any, np.ndarray] | None = None  # (dataset, order) of the last length-sorted loader

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer; with ``args.head_learning_rate``, the head's parameters in groups of their own
        at that rate (weight decay as the Trainer chose it; the scheduler then scales every group alike)."""
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        rate = getattr(self.args, "head_learning_rate", None)
        target = self.model if model is None else model
        if fresh and rate is not None and hasattr(target, "head_parameters"):
            head = target.head_parameters()
            split_head_groups(optimizer, head, rate)
            logger.info("Learning rate %g for the head (%d tensors), %g for the encoder.", rate, len(head), self.args.learning_rate)
        return optimizer

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """The Trainer's loss; a packed batch with ``document_ids`` (flex attention) first gets its ``BlockMask``,
        built where the batch already is (on the device)."""
        return super().compute_loss(model, with_block_mask(inputs) if "document_ids" in inputs else inputs, *args, **kwargs)

    def get_train_dataloader(self):
        if self.train_batch_sampler is not None:
            return self._static_train_dataloader()
        if self.train_collator is None:
            return super().get_train_dataloader()
        eval_collator, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator

    def _static_train_dataloader(self) -> Any:
        """The batches of ``train_batch_sampler``, collated by ``train_collator``, with the Trainer's loader settings."""

        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        dataset = self.train_dataset
        if isinstance(dataset, datasets.Dataset):
            dataset = self._remove_unused_columns(dataset, description="training")
        args = self.args
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self.train_batch_sampler,
            collate_fn=self.train_collator or self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
            worker_init_fn=functools.partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        )
        return self.accelerator.prepare(loader)

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
            sampler = LengthSortedSampler(example_lengths(eval_dataset))
            self.sorted_eval = (eval_dataset, sampler.order)
            return sampler
        if self.args.train_sampling_strategy == "group_by_length":
            # Never the Trainer's shuffled sampler; what it uses without group_by_length instead.
            return torch.utils.data.SequentialSampler(eval_dataset) if single and eval_dataset is not None else None
        return super()._get_eval_sampler(eval_dataset)

    def evaluation_loop(self, dataloader, *args: Any, **kwargs: Any) -> EvalLoopOutput:
        # The loader's dataset is the one its sampler was made for (the Trainer prunes the columns first, then makes
        # both from the pruned dataset): the same object means the same order.
        dataset, order = self.sorted_eval if self.sorted_eval is not None else (None, None)
        if order is None or getattr(dataloader, "dataset", None) is not dataset:
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


def split_head_groups(optimizer: torch.optim.Optimizer, head: Sequence[torch.nn.Parameter], rate: float) -> None:
    """Move ``head``'s parameters out of each of ``optimizer``'s groups into a copy of that group at learning rate
    ``rate``. Before the first step only (no optimizer state yet)."""
    ids = {id(parameter) for parameter in head}
    groups = []
    for group in optimizer.param_groups:
        settings = {key: value for key, value in group.items() if key != "params"}
        rest = [p for p in group["params"] if id(p) not in ids]
        moved = [p for p in group["params"] if id(p) in ids]
        groups += [{**settings, "params": rest}] if rest else []
        groups += [{**settings, "params": moved, "lr": rate}] if moved else []
    optimizer.param_groups = groups
