"""Trainer glue: word-level metrics, the Trainer with packed batches, evaluation with predictions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DataCollatorForTokenClassification, Trainer
from transformers.trainer_utils import EvalPrediction

from ner.data.alignment import word_sources, word_tags
from ner.training.arguments import NerTrainingArguments
from ner.training.attention import FLEX_FORM, choose_packed_attention, enable_flex_packing
from ner.training.batching import BatchingTrainer
from ner.training.metrics import entity_scores
from ner.training.packing import PackingCollator, StaticPackingSampler, example_lengths, packing_unsupported

logger = logging.getLogger(__name__)


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

    def tags(self, predictions: Any) -> list[list[str]]:
        """The word-level tags of the Trainer's predictions (label ids in dataset order, as ``keep_predictions``
        leaves them: for a Viterbi model, its decoding first)."""
        return word_tags(predictions[0] if isinstance(predictions, tuple) else predictions, self.sources, self.id2label)

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        decoded, plain = prediction.predictions, None
        if isinstance(decoded, tuple):  # a Viterbi model: its decoding, and the emissions' argmax
            decoded, plain = decoded
        scores = entity_scores(self.gold, self.tags(decoded), self.scheme)
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
    """Predict one split; return its metrics (keys prefixed) and the word-level predicted tags, read from the
    predictions ``Trainer.predict`` returns (in dataset order). The split's scorer becomes the Trainer's
    ``compute_metrics``: the Trainer has one, and ``predict`` takes no other."""
    trainer.compute_metrics = metrics
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    return output.metrics, metrics.tags(output.predictions)

