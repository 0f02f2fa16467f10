"""The training arguments: transformers' ``TrainingArguments`` with the recipe's defaults (``ner.training.recipe``),
``--warmup_ratio`` back, the ranges of every numeric option checked before any work, and device-dependent settings."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.debug_utils import DebugOption
from transformers.trainer_utils import IntervalStrategy
from transformers.training_args import OptimizerNames

from ner.limits import LARGEST_SEED, Range, check_numbers
from ner.training.recipe import RECIPE


@dataclass
class NerTrainingArguments(TrainingArguments):
    """transformers' ``TrainingArguments`` with defaults for NER fine-tuning, and ``--warmup_ratio`` back."""

    # Defaults from the recipe (ner.training.recipe): batch 32, warmup 10%.
    per_device_train_batch_size: int = field(
        default=RECIPE.train_batch_size, metadata={"help": "Training sentences per batch and device (transformers' default: 8)."}
    )
    per_device_eval_batch_size: int = field(
        default=RECIPE.eval_batch_size, metadata={"help": "Evaluation sentences per batch and device (does not change results)."}
    )
    warmup_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Linear warmup over this fraction of the training steps (0 to 1). Same as a float --warmup_steps. "
            "Default: 0.1 unless --warmup_steps is given (--warmup_ratio 0 for none)."
        },
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
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "After training, fit the temperature of the confidences on the validation data (calibration.json in "
            "the output folder, applied by prediction): entity confidences then match how often entities are right. "
            "false: leave them uncalibrated."
        },
    )
    pack_sequences: bool = field(
        default=True,
        metadata={
            "help": "Pack each training batch's sentences into rows with block-diagonal attention instead of padding "
            "them (same examples, loss and gradients; about 2x faster on CPU)."
        },
    )
    packed_attention: str = field(
        default="auto",
        metadata={
            "help": "How packed rows keep their sentences apart: 'mask' (a 4D block-diagonal mask, any device; SDPA then "
            "has no flash kernel), 'flex' (CUDA: flex attention with a document block mask; it has no attention "
            "dropout, so attention_probs_dropout_prob is not applied while training), or 'auto' (flex on CUDA when "
            "the model's attention dropout is 0, else mask).",
            "choices": ["auto", "flex", "mask"],
        },
    )
    pack_to_length: int | None = field(
        default=None,
        metadata={
            "help": "Static shapes (for --torch_compile / CUDA graphs): every training batch is the same number of rows "
            "of exactly N sub-tokens, N at least the longest example (--max_seq_length). Batches are then whole packed "
            "rows drawn at random, about --per_device_train_batch_size sentences each, every sentence once per epoch "
            "(not the Trainer's batches of exactly that many)."
        },
    )
    optim: OptimizerNames | str | None = field(
        default=None,
        metadata={"help": "The optimizer (OptimizerNames). Default: adamw_torch_fused on CUDA, else transformers' default."},
    )
    logging_nan_inf_filter: bool | None = field(
        default=None,
        metadata={
            "help": "Leave NaN/inf losses out of the logged loss. Checking costs a GPU-to-CPU wait every step, so the "
            "default is off on CUDA, on elsewhere."
        },
    )
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Initial learning rate (AdamW). Default: 1e-4 when run_ner.py trains an encoder up to 384 wide "
            "(MiniLM-sized: measured best on both shared corpora, CRF and linear heads), else 5e-5 (transformers' default)."
        },
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the head (MLP layers, classifier, CRF), which starts from random values while the "
            "encoder is pretrained; the same warmup and decay apply. Default: --learning_rate for every parameter."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Resume training: 'last' for the newest complete checkpoint-N of this run in --output_dir, or the "
            "path of a checkpoint folder. Without it, an --output_dir that holds checkpoints is refused (unless "
            "--overwrite_output_dir)."
        },
    )
    debug: str | list[DebugOption] = field(
        default="",
        metadata={
            "help": "Alone (a bare --debug, or NER_DEBUG=1 in the environment): show the Python traceback of an error "
            "instead of its one `error:` line. With a value: transformers' debug features ('underflow_overflow', "
            "'tpu_metrics_debug')."
        },
    )
    # Set from what was given, not options: whether --learning_rate was (else the recipe's rule may choose one), and
    # whether --do_eval was (the parent turns do_eval on for any eval_strategy).
    learning_rate_given: bool = field(default=False, init=False, repr=False)
    do_eval_requested: bool = field(default=False, init=False, repr=False)
    push_eval_text: bool = field(
        default=False,
        metadata={
            "help": "With --push_to_hub, also upload what quotes sentences of the dev/test data: *_predictions.txt "
            "and *_mistakes.md/.json (mistakes in context). Off by default: the scores and reports go up, no text."
        },
    )

    def __post_init__(self) -> None:
        # Before transformers reads them: a bad number otherwise ends deep in the Trainer, after the data are read.
        check_numbers({option.name: getattr(self, option.name) for option in fields(self)}, TRAINING_RANGES)
        if self.dataloader_prefetch_factor is not None and not self.dataloader_num_workers:
            raise ValueError("--dataloader_prefetch_factor is for loader processes: give --dataloader_num_workers 1 or more too.")
        for name in ("deepspeed", "fsdp_config", "accelerator_config"):
            check_settings_file(name, getattr(self, name))
        self.learning_rate_given = self.learning_rate is not None
        if self.learning_rate is None:
            self.learning_rate = TrainingArguments.learning_rate
        self.do_eval_requested = self.do_eval
        cuda = torch.cuda.is_available() and not self.use_cpu
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # nothing to pin for; avoids a warning per data loader
        fill_device_defaults(self, cuda)
        if self.pack_to_length is not None:
            if not self.pack_sequences:
                raise ValueError("--pack_to_length packs training batches into fixed rows: leave out --pack_sequences false.")
            if self.train_sampling_strategy == "group_by_length":
                raise ValueError(
                    "--pack_to_length makes its own batches (whole packed rows): leave out --train_sampling_strategy "
                    "group_by_length, or --pack_to_length."
                )
        if self.report_to == "auto":
            self.report_to = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
        if self.warmup_ratio is None and not self.warmup_steps:
            self.warmup_ratio = RECIPE.warmup_ratio
        if self.warmup_ratio is not None:
            if self.warmup_steps:
                raise ValueError("Give --warmup_ratio or --warmup_steps, not both.")
            self.warmup_steps = self.warmup_ratio
        super().__post_init__()


UNIT = Range(0, 1, high_open=True)
POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
NOT_NEGATIVE = Range(0)
# The numeric options of NerTrainingArguments with a meaning outside which nothing sensible happens; every other
# number is only checked to be finite and to fit 64 bits (ner.limits).
TRAINING_RANGES = {
    "per_device_train_batch_size": AT_LEAST_ONE, "per_device_eval_batch_size": AT_LEAST_ONE,
    "gradient_accumulation_steps": AT_LEAST_ONE, "eval_accumulation_steps": AT_LEAST_ONE,
    "learning_rate": NOT_NEGATIVE, "head_learning_rate": POSITIVE, "weight_decay": NOT_NEGATIVE,
    "adam_beta1": UNIT, "adam_beta2": UNIT, "adam_epsilon": NOT_NEGATIVE, "max_grad_norm": NOT_NEGATIVE,
    "num_train_epochs": POSITIVE, "max_steps": Range(1, also=(-1,)), "warmup_steps": NOT_NEGATIVE, "warmup_ratio": UNIT,
    "label_smoothing_factor": UNIT, "neftune_noise_alpha": POSITIVE,
    "logging_steps": POSITIVE, "eval_steps": POSITIVE, "save_steps": POSITIVE, "eval_delay": NOT_NEGATIVE,
    "save_total_limit": AT_LEAST_ONE, "torch_empty_cache_steps": AT_LEAST_ONE,
    "seed": Range(0, LARGEST_SEED), "data_seed": Range(0, LARGEST_SEED),
    "dataloader_num_workers": Range(0, os.cpu_count() or 1), "dataloader_prefetch_factor": AT_LEAST_ONE,
    "ddp_timeout": Range(1, 2**31 - 1), "ddp_bucket_cap_mb": AT_LEAST_ONE, "pack_to_length": AT_LEAST_ONE,
}


def check_settings_file(name: str, value: Any) -> None:
    """``--deepspeed``, ``--fsdp_config``, ``--accelerator_config``: a JSON file (or inline JSON, or a dict from a
    config file); refuse a path that is not a file, and DeepSpeed when it is not installed."""
    if not isinstance(value, str) or not value or value.lstrip().startswith("{"):
        return
    if not os.path.isfile(value):
        raise ValueError(f"--{name} {value}: {'a folder' if os.path.isdir(value) else 'no such file'}; give a JSON file.")
    try:
        with open(value, encoding="utf-8") as stream:
            json.load(stream)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--{name} {value}: not a JSON file ({error}); give a JSON file.") from None
    if name == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ValueError("--deepspeed needs DeepSpeed: pip install deepspeed (or leave out --deepspeed).")


def fill_device_defaults(args: Any, cuda: bool) -> None:
    """Fill the settings left unset (None) on ``args`` with what suits the device.

    On CUDA: fused AdamW (one kernel for all parameters), no NaN/inf check of each step's loss (a host
    sync per step), and non-blocking copies of the (pinned) batches to the GPU, so that the CPU can queue
    the next step while the GPU runs this one. Elsewhere: transformers' defaults. An explicit choice is kept.
    """
    if args.optim is None:
        args.optim = "adamw_torch_fused" if cuda else TrainingArguments.default_optim
    if args.logging_nan_inf_filter is None:
        args.logging_nan_inf_filter = not cuda
    if cuda and args.accelerator_config is None:
        args.accelerator_config = {"non_blocking": True}
