"""Trainer glue: training arguments with NER defaults, word-level metrics, evaluation with predictions."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments
from transformers.trainer_utils import EvalPrediction, IntervalStrategy, get_last_checkpoint

from ner.metrics import entity_scores
from ner.modeling import IGNORE_INDEX
from ner.predict import word_tags

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


def resolve_checkpoint(args: NerTrainingArguments) -> str | None:
    """The checkpoint to resume from: ``--resume_from_checkpoint PATH|last``; refuse to mix runs silently.

    ``last`` is the newest *complete* ``checkpoint-N``: the Trainer writes ``trainer_state.json`` last
    (after the weights, optimizer, scheduler and RNG states), not atomically, so a folder without a
    readable one for step N, or without whole model weights, was cut off by a kill and is passed over
    with a warning. An explicit incomplete PATH is refused (the Trainer would restart at step 0).
    """
    import json
    import re
    import struct
    import zipfile

    def incomplete(folder: str, step: int | None) -> str | None:
        """Why ``folder`` cannot be resumed from, or None when it is a complete checkpoint."""
        try:
            with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return "no trainer_state.json (it is written last: the run stopped while saving)"
        except (OSError, ValueError) as e:
            return f"trainer_state.json is unreadable or cut off ({e.__class__.__name__})"
        found = state.get("global_step") if isinstance(state, dict) else None
        if step is not None and found != step:
            return f"trainer_state.json is for step {found}, not {step}"
        names = os.listdir(folder)
        # DeepSpeed (global_step*/) and FSDP (pytorch_model_fsdp*) keep sharded weights in their own files.
        if any(name.startswith(("global_step", "pytorch_model_fsdp")) for name in names):
            return None
        weights = [
            name for name in names if re.fullmatch(r"(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)", name)
        ]
        if not weights:
            return "no model weights (model.safetensors or pytorch_model.bin)"
        for name in weights:
            path = os.path.join(folder, name)
            if name.endswith(".bin"):
                whole = zipfile.is_zipfile(path)  # torch.save's zip ends with its directory
            else:
                try:
                    with open(path, "rb") as f:
                        (length,) = struct.unpack("<Q", f.read(8))
                        header = json.loads(f.read(length))
                    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                    whole = os.path.getsize(path) >= 8 + length + end
                except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError):
                    whole = False
            if not whole:
                return f"{name} is cut off"
        return None

    requested = args.resume_from_checkpoint
    last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    if requested == "last":
        if last is None:
            raise ValueError(
                f"--resume_from_checkpoint last: no checkpoint-* folder in {args.output_dir}. "
                "Leave the flag out to start a new run."
            )
        steps = sorted(
            (int(match.group(1)), name)
            for name in os.listdir(args.output_dir)
            if (match := re.fullmatch(r"checkpoint-(\d+)", name)) and os.path.isdir(os.path.join(args.output_dir, name))
        )
        skipped = []
        for step, name in reversed(steps):
            folder = os.path.join(args.output_dir, name)
            reason = incomplete(folder, step)
            if reason is None:
                for other, why in skipped:
                    logger.warning("Skipping %s: incomplete, %s. Resuming from %s; delete %s.", other, why, name, other)
                return folder
            skipped.append((name, reason))
        raise ValueError(
            f"--resume_from_checkpoint last: no complete checkpoint in {args.output_dir} ("
            + "; ".join(f"{name}: {why}" for name, why in skipped)
            + "). Pass --overwrite_output_dir to start again there, or choose another --output_dir."
        )
    if requested:
        if not os.path.isdir(requested):
            raise ValueError(f"--resume_from_checkpoint {requested}: no such folder.")
        match = re.fullmatch(r"checkpoint-(\d+)", os.path.basename(os.path.normpath(requested)))
        reason = incomplete(requested, int(match.group(1)) if match else None)
        if reason is not None:
            raise ValueError(
                f"--resume_from_checkpoint {requested}: not a complete checkpoint, {reason}. Pick an older "
                "checkpoint-* folder or pass --resume_from_checkpoint last (to start from a model folder's "
                "weights instead, pass it as --model_name_or_path)."
            )
        return requested
    if last is not None and args.do_train and not args.overwrite_output_dir:
        raise ValueError(
            f"{args.output_dir} already holds checkpoints ({os.path.basename(last)} is the newest). "
            "Pass --resume_from_checkpoint last to continue that run, --overwrite_output_dir to start again "
            "there, or choose another --output_dir."
        )
    return None


class WordLevelMetrics:
    """``compute_metrics`` for the Trainer: scores word-level tags against the file's gold tags.

    Predictions are read at each word's first sub-token (in the window where it sits farthest from an
    edge); words that got no sub-token are predicted ``O``, so the score is the score of the whole
    file, as conlleval would compute it.
    """

    def __init__(self, examples: Any, gold: Sequence[Sequence[str]], id2label: dict[int, str], scheme: str) -> None:
        self.sentence_index = examples["sentence_index"]
        self.word_positions = examples["word_positions"]
        self.word_margins = examples["word_margins"]
        self.gold = gold
        self.id2label = id2label
        self.scheme = scheme
        self.predicted: list[list[str]] = []

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        self.predicted = word_tags(
            prediction.predictions, self.sentence_index, self.word_positions, self.word_margins, self.id2label, len(self.gold)
        )
        return entity_scores(self.gold, self.predicted, self.scheme)


class LabelDecoder:
    """``preprocess_logits_for_metrics``: decode label ids on the device and keep only those, not the logits.

    Decodes over the labelled sub-tokens (the positions a word's label is read from), with the model's own
    decoding: argmax, constrained Viterbi, or the CRF.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, tuple):
            logits = logits[0]
        decode = getattr(self.model, "decode", None)
        return decode(logits, labels != IGNORE_INDEX) if decode else logits.argmax(dim=-1)


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
        preprocess_logits_for_metrics=LabelDecoder(model),
    )


def evaluate_split(
    trainer: Trainer, dataset: Any, metrics: WordLevelMetrics, prefix: str
) -> tuple[dict[str, float], list[list[str]]]:
    """Predict one split; return its metrics (keys prefixed) and the word-level predicted tags."""
    trainer.compute_metrics = metrics
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    return output.metrics, metrics.predicted

