"""Everything written into the output folder after scoring: predictions, reports, plots, model card, push.

Called on the main process only. Keeps ``run_ner.main`` to glue: it hands over what it has, each split's
scores (``ner.outputs.results``) and what the card says about the run (``ner.outputs.model_card.CardData``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any

from ner.data.conll import write_predictions
from ner.files import atomic_writer
from ner.outputs.hub import push_output_dir, write_training_args_json
from ner.outputs.model_card import CardData, write_model_card
from ner.outputs.plots import plot_confusion, plot_reliability, plot_training_curves, plot_type_f1
from ner.outputs.reports import entity_confusion, write_split_report
from ner.outputs.results import Results, SplitScores

logger = logging.getLogger(__name__)

# Listed after the learning rates, the training length and the warmup, which training_hyperparameters adds as given.
HYPERPARAMETERS = (
    "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay", "lr_scheduler_type", "optim", "seed",
    "fp16", "bf16",
)


def plain_value(value: Any) -> Any:
    """A setting as a person writes it: an enum's value (``linear``, not ``SchedulerType.LINEAR``)."""
    return value.value if isinstance(value, Enum) else value


def training_hyperparameters(training_args: Any, steps: int | None = None, epochs: float | None = None) -> dict[str, Any]:
    """The card's training settings: learning rates, batch, the length that ended training (``max_steps`` when it
    was given, else ``num_train_epochs``), the warmup as given (a ratio or steps), optimizer; plain values.

    ``steps`` and ``epochs``, the optimizer steps and epochs the run really trained (the Trainer's state), are
    listed as ``trained``.
    """
    values: dict[str, Any] = {"learning_rate": training_args.learning_rate}
    if training_args.head_learning_rate is not None:
        values["head_learning_rate"] = training_args.head_learning_rate
    if training_args.max_steps is not None and training_args.max_steps > 0:
        values["max_steps"] = training_args.max_steps
    else:
        values["num_train_epochs"] = training_args.num_train_epochs
    if steps is not None:
        values["trained"] = f"{steps} steps" + (f" ({epochs:.2f} epochs)" if epochs is not None else "")
    if getattr(training_args, "warmup_ratio", None) is not None:
        values["warmup_ratio"] = training_args.warmup_ratio
    else:
        values["warmup_steps"] = training_args.warmup_steps
    for key in HYPERPARAMETERS:
        values[key] = getattr(training_args, key)
    return {key: plain_value(value) for key, value in values.items() if value is not None}


def write_split_outputs(
    output_dir: str | os.PathLike,
    scores: SplitScores,
    *,
    words: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    doc_start: Sequence[bool],
    scheme: str,
    confidence: dict[str, Any] | None = None,
) -> list[str]:
    """``{prefix}_predictions.txt``, ``{prefix}_report.md/.json``, ``{prefix}_mistakes.md/.json`` and two plots; with
    ``confidence`` (``SplitConfidence.figures()``) the report's confidence section and ``{prefix}_reliability.png``.

    Returns the plot file names.
    """
    output_dir, prefix = Path(output_dir), scores.split.prefix
    write_predictions(output_dir / f"{prefix}_predictions.txt", words, gold, predicted, doc_start)
    write_split_report(output_dir, scores, words, gold, predicted, scheme, confidence)
    confusion = plot_confusion(entity_confusion(list(gold), list(predicted)), output_dir / f"{prefix}_confusion.png")
    bars = plot_type_f1(scores, output_dir / f"{prefix}_type_f1.png")
    plots = [confusion.name, bars.name]
    if confidence is not None and confidence["entities"]:
        plots.append(plot_reliability(confidence, scores.split.display, output_dir / f"{prefix}_reliability.png").name)
    return plots


# The tokenizer a folder with its own model code names for trust_remote_code (ner/model/tokenization_ner.py, copied there
# with the model's code by BertForNer.save_pretrained): it marks word starts, which pipeline() hands to the model.
REMOTE_TOKENIZER = [None, "tokenization_ner.NerTokenizerFast"]


def link_remote_tokenizer(output_dir: str | os.PathLike) -> bool:
    """Name ``REMOTE_TOKENIZER`` in tokenizer_config.json's ``auto_map`` when the saved model carries its own code
    (config.json has an ``auto_map``); True if it did. Run after the tokenizer is saved (it rewrites that file)."""
    folder = Path(output_dir)
    config_file, tokenizer_file = folder / "config.json", folder / "tokenizer_config.json"
    if not (config_file.is_file() and tokenizer_file.is_file() and (folder / "tokenization_ner.py").is_file()):
        return False
    if "auto_map" not in json.loads(config_file.read_text(encoding="utf-8")):
        return False
    settings = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    settings["auto_map"] = {"AutoTokenizer": REMOTE_TOKENIZER}
    with atomic_writer(tokenizer_file) as out:
        out.write(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    return True


def finish_output_dir(
    output_dir: str | os.PathLike,
    card: CardData,
    results: Results,
    *,
    training_args: Any,
    log_history: list[dict[str, Any]],
    plots: list[str],
    push: bool,
    hub_token: str | None = None,
    trained_for: tuple[int, float] | tuple[()] = (),
) -> None:
    """Training curves, ``training_args.json``, the model card; then the push when asked for.

    ``card.hyperparameters`` are the run's own settings; the card lists them after the training
    hyperparameters of ``training_args`` (when the run trained; ``trained_for``: the steps and epochs it
    really trained), and takes its model name and
    ``eval_text_on_hub`` from ``training_args`` (``hub_model_id``, ``push_eval_text``). Files quoting
    dev/test sentences are pushed only with ``push_eval_text``.
    """
    link_remote_tokenizer(output_dir)
    curves = plot_training_curves(log_history, Path(output_dir) / "training_curves.png")
    plots = plots + ([curves.name] if curves else [])
    write_training_args_json(training_args, output_dir)
    training = training_hyperparameters(training_args, *trained_for) if card.trained else {}
    card = replace(
        card,
        hyperparameters=training | card.hyperparameters,
        model_name=training_args.hub_model_id,
        eval_text_on_hub=training_args.push_eval_text,
    )
    path = write_model_card(output_dir, card, results, plots)
    logger.info("Model card in %s", path)
    if push:
        url = push_output_dir(
            output_dir,
            training_args.hub_model_id or Path(output_dir).resolve().name,
            token=hub_token,
            private=training_args.hub_private_repo,
            revision=training_args.hub_revision,
            include_eval_text=card.eval_text_on_hub,
        )
        logger.info("Pushed to %s", url)
