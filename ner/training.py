"""Trainer glue: training arguments with NER defaults, word-level metrics, evaluation with predictions."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments
from transformers.trainer_utils import EvalPrediction, IntervalStrategy

from ner.alignment import word_sources, word_tags
from ner.metrics import entity_scores

logger = logging.getLogger(__name__)


@dataclass
class NerTrainingArguments(TrainingArguments):
    """transformers' ``TrainingArguments`` with defaults for NER fine-tuning, and ``--warmup_ratio`` back."""

    warmup_ratio: float | None = field(
        default=None,
        metadata={"help": "Linear warmup over this fraction of the training steps (0 to 1). Same as a float --warmup_steps."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train from scratch even if --output_dir already holds checkpoints (they are left there)."},
    )
    eval_strategy: IntervalStrategy | str = field(
        default="epoch",
        metadata={"help": "When to score the validation set during training: 'no', 'steps' (every --eval_steps) or 'epoch'."},
    )
    save_strategy: str = field(
        default="epoch",
        metadata={"help": "When to write a checkpoint: 'no', 'steps' (every --save_steps), 'epoch' or 'best'."},
    )
    metric_for_best_model: str | None = field(
        default="f1",
        metadata={"help": "Validation metric that picks the best checkpoint with --load_best_model_at_end (entity F1)."},
    )
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss every N steps."})
    report_to: None | str | list[str] = field(
        default="auto",
        metadata={"help": "Where to log: 'tensorboard', 'wandb', 'none', ...; 'auto' = tensorboard when installed."},
    )
    pack_sequences: bool = field(
        default=True,
        metadata={
            "help": "Pack each training batch's sentences into rows with block-diagonal attention instead of padding "
            "them (same examples, loss and gradients; about 2x faster on CPU). Off by itself with a CRF."
        },
    )
    push_eval_text: bool = field(
        default=False,
        metadata={
            "help": "With --push_to_hub, also upload what quotes sentences of the dev/test data: *_predictions.txt "
            "and *_mistakes.md/.json (mistakes in context). Off by default: the scores and reports go up, no text."
        },
    )

    def __post_init__(self) -> None:
        self.do_eval_requested = self.do_eval  # before the parent turns it on for eval_strategy
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # nothing to pin for; avoids a warning per data loader
        if self.report_to == "auto":
            self.report_to = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
            if self.warmup_steps:
                raise ValueError("Give --warmup_ratio or --warmup_steps, not both.")
            self.warmup_steps = self.warmup_ratio
        super().__post_init__()


class WordLevelMetrics:
    """``compute_metrics`` for the Trainer: scores word-level tags against the file's gold tags.

    Predictions are read at each word's first sub-token (in the window where it sits farthest from an
    edge); words that got no sub-token are predicted ``O``, so the score is the score of the whole
    file, as conlleval would compute it.
    """

    def __init__(self, examples: Any, gold: Sequence[Sequence[str]], id2label: dict[int, str], scheme: str) -> None:
        self.sources = word_sources(examples, [len(tags) for tags in gold])  # where each word's tag is read
        self.gold = gold
        self.id2label = id2label
        self.scheme = scheme
        self.predicted: list[list[str]] = []

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        self.predicted = word_tags(prediction.predictions, self.sources, self.id2label)
        return entity_scores(self.gold, self.predicted, self.scheme)


def keep_predictions(outputs: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: keep the label ids the model decoded, not the logits.

    ``BertForNer.forward`` decodes in eval mode (argmax, constrained Viterbi or the CRF, one position per
    word) and returns them last (``NerOutput.predictions``); the Trainer hands the outputs here as a tuple.
    """
    if isinstance(outputs, tuple):
        return outputs[-1]
    return outputs.argmax(dim=-1)


def build_trainer(
    model: Any,
    args: NerTrainingArguments,
    tokenizer: Any,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    eval_metrics: WordLevelMetrics | None = None,
) -> Trainer:
    """The Trainer: packed training batches (see ``ner.batching``), length-sorted evaluation, label ids decoded on the device.

    Packing is on unless ``args.pack_sequences`` is False or the model cannot take it (a CRF, an attention
    kernel without 4D masks); evaluation batches are padded (to a multiple of 8 under fp16/bf16).
    """
    from ner.batching import BatchingTrainer, PackingCollator, packing_unsupported

    multiple = 8 if (args.fp16 or args.bf16) else None
    collator = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=multiple)
    train_collator = None
    if train_dataset is not None and args.pack_sequences:
        reason = packing_unsupported(model, args)
        if reason:
            logger.info("Training batches are padded, not packed: %s.", reason)
        else:
            train_collator = PackingCollator(tokenizer.pad_token_id, model.config._attn_implementation, multiple)
    return BatchingTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        train_collator=train_collator,
        compute_metrics=eval_metrics,
        preprocess_logits_for_metrics=keep_predictions,
    )


def evaluate_split(
    trainer: Trainer, dataset: Any, metrics: WordLevelMetrics, prefix: str
) -> tuple[dict[str, float], list[list[str]]]:
    """Predict one split; return its metrics (keys prefixed) and the word-level predicted tags."""
    trainer.compute_metrics = metrics
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    return output.metrics, metrics.predicted

