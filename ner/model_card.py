"""The model card: ``README.md`` in the output folder, with Hub metadata and the measured scores.

The YAML header carries ``model-index`` results (dev F1 etc. as split ``validation``, test as
``test``), so the Hub shows them on the model page; the body has the label set, per-type tables,
hyperparameters, a ``pipeline()`` snippet and the plots. Nothing that looks like a credential is
written: hyperparameter keys holding "token", "secret", "password" or "api_key" are dropped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ner.files import atomic_writer
from ner.hub import drop_secrets
from ner.reports import overall_scores, per_type_scores, scores_table

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
LOCAL_DATA_SUFFIXES = (
    ".txt", ".conll", ".conllu", ".tsv", ".csv", ".iob", ".bio", ".json", ".jsonl", ".parquet", ".arrow"
)
SPLITS = (("eval", "validation", "Validation (dev)"), ("predict", "test", "Test"))
CARD_METRICS = (
    ("f1", "F1 (strict, entity level)"),
    ("precision", "Precision (strict, entity level)"),
    ("recall", "Recall (strict, entity level)"),
    ("accuracy", "Accuracy (token level)"),
)


def is_hub_id(name: str) -> bool:
    """True when ``name`` reads as a Hub repository id (``bert-base-cased``, ``org/name``), not a local path."""
    return bool(HUB_ID.match(name)) and not name.lower().endswith(LOCAL_DATA_SUFFIXES) and not os.path.exists(name)


def _display_name(name: str) -> str:
    """Hub ids as they are; local paths as their last two parts, never the whole path of this machine."""
    if is_hub_id(name):
        return name
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else name


def _dataset_label(datasets: Sequence[str]) -> str:
    hub = [name for name in datasets if is_hub_id(name)]
    if hub:
        return ", ".join(hub)
    parents = {Path(name).resolve().parent.name for name in datasets}
    return parents.pop() if len(parents) == 1 and "" not in parents else "custom"


def model_index(model_name: str, datasets: Sequence[str], results: dict[str, float]) -> list[dict[str, Any]]:
    """``model-index`` metadata: one result per split (dev, test) that has ``{prefix}_f1`` in ``results``."""
    entries = []
    label = _dataset_label(datasets)
    for prefix, split, _ in SPLITS:
        if f"{prefix}_f1" not in results:
            continue
        metrics = [
            {"type": metric, "value": float(results[f"{prefix}_{metric}"]), "name": name}
            for metric, name in CARD_METRICS
            if f"{prefix}_{metric}" in results
        ]
        entries.append(
            {
                "task": {"type": "token-classification", "name": "Named Entity Recognition"},
                "dataset": {"name": label, "type": label, "split": split},
                "metrics": metrics,
            }
        )
    return [{"name": model_name, "results": entries}] if entries else []


def card_metadata(
    *, model_name: str, base_model: str, datasets: Sequence[str], scheme: str, results: dict[str, float]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "token-classification"}
    if is_hub_id(base_model):
        metadata["base_model"] = base_model
    hub_datasets = [name for name in datasets if is_hub_id(name)]
    if hub_datasets:
        metadata["datasets"] = hub_datasets
    metadata["tags"] = ["token-classification", "ner", "named-entity-recognition", scheme.lower()]
    metadata["metrics"] = ["f1", "precision", "recall", "accuracy"]
    index = model_index(model_name, datasets, results)
    if index:
        metadata["model-index"] = index
    return metadata


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, default=str)
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _relative_plot(output_dir: Path, plot: str) -> str:
    path = Path(plot)
    if path.is_absolute():
        path = Path(os.path.relpath(path, output_dir))
    return path.as_posix()


def card_body(
    *,
    output_dir: Path,
    model_name: str,
    base_model: str,
    datasets: Sequence[str],
    label_list: Sequence[str],
    scheme: str,
    hyperparameters: dict[str, Any],
    results: dict[str, float],
    plots: Sequence[str],
) -> str:
    if is_hub_id(base_model):
        base = f"[{base_model}](https://huggingface.co/{base_model})"
    else:
        base = f"`{_display_name(base_model)}` (a local model)"
    data = ", ".join(
        f"[{name}](https://huggingface.co/datasets/{name})" if is_hub_id(name) else f"`{_display_name(name)}`"
        for name in datasets
    ) or "not recorded"
    types = sorted({label.partition("-")[2] for label in label_list if label != "O"})
    lines = [
        f"# {model_name}",
        "",
        f"A named entity recognition (token classification) model fine-tuned from {base} on {data}.",
        "",
        "## Labels",
        "",
        f"Tag scheme **{scheme}**; entity types: {', '.join(f'`{t}`' for t in types) or 'none'}.",
        f"The model's {len(label_list)} labels, in id order: {' '.join(f'`{label}`' for label in label_list)}.",
        "",
        "## Results",
        "",
        "Entity-level precision, recall and F1 (seqeval, strict matching with the scheme above); support is the "
        "number of gold entities.",
    ]
    for prefix, _, title in SPLITS:
        if f"{prefix}_f1" not in results:
            continue
        overall = overall_scores(results, prefix)
        lines += ["", f"### {title}", ""]
        lines += scores_table(overall, per_type_scores(results, prefix))
        if "accuracy" in overall:
            lines += ["", f"Token accuracy: {overall['accuracy']:.4f}."]
    if not any(f"{prefix}_f1" in results for prefix, _, _ in SPLITS):
        lines += ["", "No evaluation results were recorded."]
    reference = model_name if is_hub_id(model_name) else "path/to/this/folder"
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'ner = pipeline("token-classification", model="{reference}", aggregation_strategy="first")',
        'ner("Maria Lopez flew from Madrid to Berlin on Monday.")',
        "```",
        "",
        'The model was trained on the first sub-token of each word, which `aggregation_strategy="first"` reads.',
    ]
    if scheme not in ("IOB1", "IOB2"):
        lines.append(
            f"The pipeline's grouping understands only `B-`/`I-` prefixes; with {scheme} labels use "
            '`aggregation_strategy="none"` and join the tags yourself.'
        )
    secrets_free = drop_secrets(hyperparameters)
    if secrets_free:
        lines += ["", "## Training hyperparameters", "", "| name | value |", "| --- | --- |"]
        lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in secrets_free.items()]
    if plots:
        lines += ["", "## Plots", ""]
        for plot in plots:
            relative = _relative_plot(output_dir, plot)
            lines += [f"![{Path(relative).stem.replace('_', ' ')}]({relative})", ""]
        lines.pop()
    return "\n".join(lines) + "\n"


def write_model_card(
    output_dir: str | os.PathLike,
    *,
    base_model: str,
    datasets: list[str],
    label_list: list[str],
    scheme: str,
    hyperparameters: dict[str, Any],
    results: dict[str, float],
    plots: list[str] | None = None,
    model_name: str | None = None,
) -> Path:
    """Write ``README.md`` (YAML metadata + card) into ``output_dir``; return its path.

    ``results`` is the flat metrics dict of ``all_results.json`` (``eval_f1``, ``eval_PER_f1``, ...,
    ``predict_*`` for the test set). ``plots`` are image paths relative to ``output_dir`` (absolute
    paths inside it are made relative). ``model_name`` defaults to the folder's name; give the Hub
    repository id when pushing, so the usage snippet names it.
    """
    folder = Path(output_dir)
    name = model_name or folder.resolve().name
    metadata = card_metadata(model_name=name, base_model=base_model, datasets=datasets, scheme=scheme, results=results)
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, default_flow_style=False)
    body = card_body(
        output_dir=folder,
        model_name=name,
        base_model=base_model,
        datasets=datasets,
        label_list=label_list,
        scheme=scheme,
        hyperparameters=hyperparameters,
        results=results,
        plots=plots or [],
    )
    path = folder / "README.md"
    with atomic_writer(path) as out:
        out.write(f"---\n{header}---\n\n{body}")
    return path
