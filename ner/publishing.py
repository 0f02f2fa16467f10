"""Everything written into the output folder after scoring: predictions, reports, plots, model card, push.

Called on the main process only. Keeps ``run_ner.main`` to glue: it hands over what it has.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ner.hub import push_output_dir, write_training_args_json
from ner.model_card import write_model_card
from ner.plots import plot_confusion, plot_training_curves, plot_type_f1
from ner.predict import write_predictions
from ner.reports import entity_confusion, write_split_report

logger = logging.getLogger(__name__)

HYPERPARAMETERS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "warmup_steps", "weight_decay", "lr_scheduler_type", "optim", "seed", "fp16", "bf16",
)
def write_split_outputs(
    output_dir: str | os.PathLike,
    prefix: str,
    *,
    words: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    doc_start: Sequence[bool],
    scheme: str,
    metrics: dict[str, float],
) -> list[str]:
    """``{prefix}_predictions.txt``, ``{prefix}_report.md/.json``, ``{prefix}_mistakes.md/.json`` and two plots.

    Returns the plot file names.
    """
    output_dir = Path(output_dir)
    write_predictions(output_dir / f"{prefix}_predictions.txt", words, gold, predicted, doc_start)
    write_split_report(output_dir, prefix, words, gold, predicted, scheme, metrics)
    confusion = plot_confusion(entity_confusion(list(gold), list(predicted), scheme), output_dir / f"{prefix}_confusion.png")
    bars = plot_type_f1(metrics, prefix, output_dir / f"{prefix}_type_f1.png")
    return [confusion.name, bars.name]


def finish_output_dir(
    output_dir: str | os.PathLike,
    *,
    training_args: Any,
    log_history: list[dict[str, Any]],
    base_model: str,
    data_files: dict[str, str],
    trained: bool,
    label_list: list[str],
    scheme: str,
    results: dict[str, float],
    plots: list[str],
    extra_hyperparameters: dict[str, Any],
    push: bool,
    hub_token: str | None = None,
) -> None:
    """Training curves, ``training_args.json``, the model card; then the push when asked for.

    ``data_files`` maps each split the run used (``train``, ``validation``, ``test``) to its file or Hub
    dataset id; ``trained`` says whether this run trained the model. Files quoting dev/test sentences
    are pushed only with ``training_args.push_eval_text``.
    """
    curves = plot_training_curves(log_history, Path(output_dir) / "training_curves.png")
    plots = plots + ([curves.name] if curves else [])
    write_training_args_json(training_args, output_dir)
    hyperparameters = {key: getattr(training_args, key) for key in HYPERPARAMETERS} if trained else {}
    hyperparameters.update(extra_hyperparameters)
    eval_text = training_args.push_eval_text
    card = write_model_card(
        output_dir,
        base_model=base_model,
        data_files=data_files,
        trained=trained,
        label_list=label_list,
        scheme=scheme,
        hyperparameters=hyperparameters,
        results=results,
        plots=plots,
        model_name=training_args.hub_model_id,
        eval_text_on_hub=eval_text,
    )
    logger.info("Model card in %s", card)
    if push:
        url = push_output_dir(
            output_dir,
            training_args.hub_model_id or Path(output_dir).resolve().name,
            token=hub_token,
            private=training_args.hub_private_repo,
            revision=training_args.hub_revision,
            include_eval_text=eval_text,
        )
        logger.info("Pushed to %s", url)
