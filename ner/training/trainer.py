"""Trainer glue: training arguments with NER defaults, word-level metrics, evaluation with predictions."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments
from transformers.debug_utils import DebugOption
from transformers.trainer_utils import EvalPrediction, IntervalStrategy
from transformers.training_args import OptimizerNames

from ner.data.alignment import word_sources, word_tags
from ner.limits import LARGEST_SEED, Range, check_numbers
from ner.training.attention import FLEX_FORM, choose_packed_attention, enable_flex_packing
from ner.training.batching import BatchingTrainer
from ner.training.metrics import entity_scores
from ner.training.packing import PackingCollator, StaticPackingSampler, example_lengths, packing_unsupported

logger = logging.getLogger(__name__)


DEFAULT_WARMUP_RATIO = 0.1  # of the training steps, when neither --warmup_ratio nor --warmup_steps is given


@dataclass
class NerTrainingArguments(TrainingArguments):
    """transformers' ``TrainingArguments`` with defaults for NER fine-tuning, and ``--warmup_ratio`` back."""

    # The recipe measured in bench/accuracy.jsonl (README, "Whole corpora, two seeds"): batch 32, warmup 10%.
    per_device_train_batch_size: int = field(
        default=32, metadata={"help": "Training sentences per batch and device (transformers' default: 8)."}
    )
    per_device_eval_batch_size: int = field(
        default=64, metadata={"help": "Evaluation sentences per batch and device (does not change results)."}
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
        self.learning_rate_given = self.learning_rate is not None  # else an entry point may choose (default_learning_rate)
        if self.learning_rate is None:
            self.learning_rate = TrainingArguments.learning_rate
        self.do_eval_requested = self.do_eval  # before the parent turns it on for eval_strategy
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
            self.warmup_ratio = DEFAULT_WARMUP_RATIO
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


SMALL_ENCODER_WIDTH = 384  # MiniLM's hidden size
SMALL_ENCODER_LEARNING_RATE = 1e-4


def default_learning_rate(config: Any) -> float | None:
    """The learning rate measured best for this model when the user gave none, or None for transformers' 5e-5.

    An encoder up to 384 wide: 1e-4 (MiniLM, both shared corpora, 3 epochs, seeds 42 and 1, dev F1 over 5e-5: with
    the CRF head NCBI-disease +1.5, CoNLL-2003 +1.0; with the linear head +3.7 and +1.1; bench/accuracy.jsonl).
    Wider encoders keep 5e-5 until measured.
    """
    if config.hidden_size <= SMALL_ENCODER_WIDTH:
        return SMALL_ENCODER_LEARNING_RATE
    return None


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
        decoded, plain = prediction.predictions, None
        if isinstance(decoded, tuple):  # a Viterbi model: its decoding, and the emissions' argmax
            decoded, plain = decoded
        self.predicted = word_tags(decoded, self.sources, self.id2label)
        scores = entity_scores(self.gold, self.predicted, self.scheme)
        if plain is not None:
            # What plain transformers (pipeline(), no trust_remote_code) reads from the folder: the emissions by argmax.
            plain_tags = word_tags(plain, self.sources, self.id2label)
            scores["plain_f1"] = entity_scores(self.gold, plain_tags, self.scheme)["f1"]
        return scores


def keep_predictions(outputs: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``preprocess_logits_for_metrics``: keep the label ids the model decoded, not the logits.

    ``BertForNer.forward`` decodes in eval mode (argmax, constrained Viterbi or the CRF, one position per
    word) and returns them last (``NerOutput.predictions``); the Trainer hands the outputs here as a tuple. A
    model that decodes by Viterbi also returns its ``emissions``: their argmax is kept beside, for ``plain_f1``.
    """
    if isinstance(outputs, tuple):
        if len(outputs) >= 3:  # (logits, emissions, predictions)
            return outputs[-1], outputs[-2].argmax(dim=-1)
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
    """The Trainer: packed training batches (see ``ner.training.packing``), length-sorted evaluation, label ids decoded on the device.

    Packing is on unless ``args.pack_sequences`` is False or the model cannot take it (an attention kernel
    without 4D masks, a CRF under DataParallel); ``args.packed_attention`` picks the mask form (flex attention switches the model
    to ``ner.training.attention.SDPA_OR_FLEX``) and ``args.pack_to_length`` static shapes. One log line says which.
    Evaluation batches are padded (to a multiple of 8 under fp16/bf16).
    """

    multiple = 8 if (args.fp16 or args.bf16) else None
    collator = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=multiple)
    train_collator = sampler = None
    if train_dataset is not None and args.pack_sequences:
        reason = packing_unsupported(model, args)
        if reason and args.pack_to_length is not None:
            raise ValueError(f"--pack_to_length needs packed training batches, and these cannot be packed: {reason}.")
        if reason:
            logger.info("Training batches are padded, not packed: %s.", reason)
        else:
            config = model.config
            crf = bool(getattr(config, "use_crf", False))  # the CRF reads each packed sentence by its word_index
            dropout = getattr(config, "attention_probs_dropout_prob", 0.0) or 0.0
            path = choose_packed_attention(args.packed_attention, config._attn_implementation, args.device.type, dropout)
            if path == "flex":
                enable_flex_packing(model)
                form = FLEX_FORM
                how = "flex attention with a document block mask" + (
                    f" (attention dropout {dropout} not applied: flex attention has none)" if dropout else ""
                )
            else:
                form = config._attn_implementation
                how = f"a 4D block-diagonal mask ({form})"
                if args.packed_attention == "auto" and args.device.type == "cuda" and dropout:
                    how += f" (flex attention would drop the attention dropout {dropout}; --packed_attention flex takes it)"
            if args.pack_to_length is None:
                train_collator = PackingCollator(tokenizer.pad_token_id, form, multiple, sentences=crf)
                shape = "rows as long as each batch's longest sentence"
            else:
                sampler = StaticPackingSampler(
                    example_lengths(train_dataset), args.pack_to_length, args.per_device_train_batch_size,
                    seed=args.data_seed if args.data_seed is not None else args.seed,
                )
                train_collator = PackingCollator(
                    tokenizer.pad_token_id, form, row_length=args.pack_to_length, num_rows=sampler.num_rows, sentences=crf
                )
                shape = (
                    f"static shape {sampler.num_rows} x {args.pack_to_length} sub-tokens, {len(sampler)} batches per epoch "
                    f"of about {len(train_dataset) / len(sampler):.1f} sentences"
                )
            logger.info("Training batches are packed: %s; attention: %s.", shape, how)
    return BatchingTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        train_collator=train_collator,
        train_batch_sampler=sampler,
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

