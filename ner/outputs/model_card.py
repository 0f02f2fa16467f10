"""The model card: ``README.md`` in the output folder, with Hub metadata and the measured scores.

The YAML header carries ``model-index`` results (dev F1 etc. as split ``validation``, test as
``test``), so the Hub shows them on the model page; the body names each data file for what it was
used for (training, validation, test), and has the label set, per-type tables, hyperparameters, a
``pipeline()`` snippet and the plots. Scores are conlleval-compatible (an entity opened by ``I-``
counts); seqeval's strict F1 is shown beside them. Only training data goes into the ``datasets``
metadata. Nothing that looks like a credential is written: hyperparameter keys holding "token",
"secret", "password" or "api_key" are dropped. ``write_model_card`` reads what the run was from a
``CardData`` and its scores from a ``ner.outputs.results.Results``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ner.files import atomic_writer
from ner.outputs.hub import drop_secrets
from ner.outputs.reports import markdown_cell, scores_table
from ner.outputs.results import SCORED_SPLITS, TRAIN, Results

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
LOCAL_DATA_SUFFIXES = (
    ".txt", ".conll", ".conllu", ".tsv", ".csv", ".iob", ".bio", ".json", ".jsonl", ".parquet", ".arrow"
)
CARD_METRICS = (  # model-index metric types: overall scores, and the strict ones as ``{name}_strict``
    ("f1", "F1 (conlleval-compatible, entity level)"),
    ("precision", "Precision (conlleval-compatible, entity level)"),
    ("recall", "Recall (conlleval-compatible, entity level)"),
    ("f1_strict", "F1 (seqeval strict, entity level)"),
    ("accuracy", "Accuracy (token level)"),
)


@dataclass(frozen=True)
class CardData:
    """What the model card says about a run besides its scores.

    ``data_files`` maps each split the run used (``train``, ``validation``, ``test``) to its file or Hub
    dataset id; ``trained`` says whether this run fine-tuned the model (a predict-only run did not, and
    its card says so). ``data_sizes`` maps each split to the sentences the run used and those its data held: fewer
    used (``--max_*_samples``) makes the card say "the first N of M sentences" and the model-index split a slice
    (``validation[:1000]``). ``hyperparameters`` are listed as given, less any credential-like key.
    ``model_name`` defaults to the output folder's name; give the Hub repository id when pushing, so the
    usage snippet names it. ``eval_text_on_hub`` says whether the files quoting evaluation sentences are
    uploaded (``--push_eval_text``).
    """

    base_model: str
    label_list: list[str]
    scheme: str
    trained: bool
    data_files: dict[str, str] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None
    eval_text_on_hub: bool = False
    data_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (sentences used, sentences given)


def is_hub_id(name: str) -> bool:
    """True when ``name`` reads as a Hub repository id (``bert-base-cased``, ``org/name``), not a local path."""
    return bool(HUB_ID.match(name)) and not name.lower().endswith(LOCAL_DATA_SUFFIXES) and not os.path.exists(name)


def _display_name(name: str) -> str:
    """Hub ids as they are; local paths as their last two parts, never the whole path of this machine."""
    if is_hub_id(name):
        return name
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else name


def _dataset_label(source: str | None) -> str:
    """The model-index dataset name of one split: its Hub id, else the folder its file lies in."""
    if source and is_hub_id(source):
        return source
    parent = Path(source).resolve().parent.name if source else ""
    return parent or "custom"


def _source(split: str, source: str | None, sizes: tuple[int, int] | None = None) -> str:
    """One split's data for the card's text: the split of a Hub dataset, or a local file and what it was for, with
    how many of its sentences the run used."""
    if not source:
        return f"{split} data (not recorded)"
    if is_hub_id(source):
        text = f"the `{split}` split of [{source}](https://huggingface.co/datasets/{source})"
    else:
        text = f"`{_display_name(source)}`"
    notes = [split] if split != TRAIN.name and not is_hub_id(source) else []
    if sizes is not None and sizes[0] < sizes[1]:
        text = f"the first {sizes[0]:,} of the {sizes[1]:,} sentences of {text}"
    elif sizes is not None:
        notes.append(f"{sizes[1]:,} sentences")
    return text + (f" ({', '.join(notes)})" if notes else "")


def split_label(split: str, sizes: tuple[int, int] | None) -> str:
    """The model-index split: its name, or a slice of it (``validation[:1000]``) when the run used only its start."""
    if sizes is not None and sizes[0] < sizes[1]:
        return f"{split}[:{sizes[0]}]"
    return split


def model_index(
    model_name: str, data_files: dict[str, str], results: Results, data_sizes: dict[str, tuple[int, int]] | None = None
) -> list[dict[str, Any]]:
    """``model-index`` metadata: one result per scored split (dev, test), a subset named as a slice."""
    entries = []
    for scores in results.splits:
        label = _dataset_label(data_files.get(scores.split.name))
        split = split_label(scores.split.name, (data_sizes or {}).get(scores.split.name))
        values = {**scores.overall, **{f"{name}_strict": value for name, value in scores.strict.items()}}
        metrics = [
            {"type": metric, "value": float(values[metric]), "name": name}
            for metric, name in CARD_METRICS
            if metric in values
        ]
        entries.append(
            {
                "task": {"type": "token-classification", "name": "Named Entity Recognition"},
                "dataset": {"name": label, "type": label, "split": split},
                "metrics": metrics,
            }
        )
    return [{"name": model_name, "results": entries}] if entries else []


def card_metadata(card: CardData, results: Results) -> dict[str, Any]:
    """The YAML header; ``datasets`` lists the training data only (the Hub reads it as "trained on")."""
    metadata: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "token-classification"}
    if is_hub_id(card.base_model):
        metadata["base_model"] = card.base_model
    train = card.data_files.get(TRAIN.name)
    if card.trained and train and is_hub_id(train):
        metadata["datasets"] = [train]
    metadata["tags"] = ["token-classification", "ner", "named-entity-recognition", card.scheme.lower()]
    metadata["metrics"] = ["f1", "precision", "recall", "accuracy"]
    index = model_index(card.model_name, card.data_files, results, card.data_sizes)
    if index:
        metadata["model-index"] = index
    return metadata


def _relative_plot(output_dir: Path, plot: str) -> str:
    path = Path(plot)
    if path.is_absolute():
        path = Path(os.path.relpath(path, output_dir))
    return path.as_posix()


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_data(
    base: str, data_files: dict[str, str], trained: bool, data_sizes: dict[str, tuple[int, int]] | None = None
) -> str:
    """The card's first sentence: what the model was fine-tuned on, and what it was evaluated on (with the number of
    sentences each split had, and how many of them the run used when it used fewer)."""
    sizes = data_sizes or {}
    evaluated = [
        _source(split.name, data_files[split.name], sizes.get(split.name))
        for split in SCORED_SPLITS
        if split.name in data_files
    ]
    if trained:
        text = f"A named entity recognition (token classification) model fine-tuned from {base} on "
        text += _source(TRAIN.name, data_files.get(TRAIN.name), sizes.get(TRAIN.name))
        return text + (f"; evaluated on {_and(evaluated)}." if evaluated else ".")
    text = "A named entity recognition (token classification) model"
    text += f", evaluated on {_and(evaluated)}" if evaluated else ""
    return text + f". The model was not trained in this run; its weights are the base model's, {base}."


def eval_text_note(eval_text_on_hub: bool) -> list[str]:
    """Which files quote sentences of the evaluation data, and whether they go to the Hub."""
    if eval_text_on_hub:
        return [
            "The prediction files (`*_predictions.txt`) and the mistakes in context (`*_mistakes.md`/`.json`) quote "
            "sentences of the evaluation data; they are uploaded with the model (`--push_eval_text`).",
        ]
    return [
        "The prediction files (`*_predictions.txt`) and the mistakes in context (`*_mistakes.md`/`.json`) quote "
        "sentences of the evaluation data, so they stay off the Hub; `--push_eval_text` uploads them. The reports "
        "(`*_report.md`/`.json`: scores and confusions by entity type) hold no text of the data and are uploaded.",
    ]


def confidence_sentence(confidence: dict[str, float]) -> str:
    """One line on a split's entity confidences: their calibration error and what a threshold of 0.9 keeps."""
    text = f"Entity confidences (probability of each whole entity): expected calibration error {confidence['ece']:.4f}"
    if "ece_uncalibrated" in confidence and confidence["ece_uncalibrated"] != confidence["ece"]:
        text += f" after calibration on the dev data ({confidence['ece_uncalibrated']:.4f} before)"
    if "precision_at_0.9" in confidence:
        text += (
            f"; the entities at confidence 0.9 or more have precision {confidence['precision_at_0.9']:.4f} "
            f"and recall {confidence['recall_at_0.9']:.4f}"
        )
    return text + "."


def card_body(output_dir: Path, card: CardData, results: Results, plots: Sequence[str]) -> str:
    """The card's markdown below the YAML header."""
    model_name, base_model, label_list, scheme = card.model_name, card.base_model, card.label_list, card.scheme
    if is_hub_id(base_model):
        base = f"[{base_model}](https://huggingface.co/{base_model})"
    else:
        base = f"`{_display_name(base_model)}` (a local model)"
    types = sorted({label.partition("-")[2] for label in label_list if label != "O"})
    lines = [
        f"# {model_name}",
        "",
        describe_data(base, card.data_files, card.trained, card.data_sizes),
        "",
        "## Labels",
        "",
        f"Tag scheme **{scheme}**; entity types: {', '.join(f'`{t}`' for t in types) or 'none'}.",
        f"The model's {len(label_list)} labels, in id order: {' '.join(f'`{label}`' for label in label_list)}.",
        "",
        "## Results",
        "",
        "Entity-level precision, recall and F1, conlleval-compatible: entities are read as conlleval reads them "
        "(an entity opened by `I-` counts), as the CoNLL shared tasks and the Hugging Face example score; support "
        f"is the number of gold entities. Strict F1 is seqeval's strict mode with the {scheme} scheme, which does "
        "not count such entities.",
    ]
    for scores in results.splits:
        lines += ["", f"### {scores.split.display.capitalize()}", ""]
        lines += scores_table(scores.overall, scores.per_type)
        lines.append("")
        if "f1" in scores.strict:
            lines.append(f"Strict F1 (seqeval strict, {scheme}): {float(scores.strict['f1']):.4f}.")
        if "accuracy" in scores.overall:
            lines.append(f"Token accuracy: {scores.overall['accuracy']:.4f}.")
        if scores.plain_f1 is not None:
            lines.append(
                f"Read by plain transformers (argmax of the emissions, without this model's decoding): F1 {scores.plain_f1:.4f}."
            )
        if "ece" in scores.confidence:
            lines.append(confidence_sentence(scores.confidence))
        if lines[-1] == "":
            lines.pop()
    if results.splits:
        lines += ["", "### Evaluation data", "", *eval_text_note(card.eval_text_on_hub)]
    else:
        lines += ["", "No evaluation results were recorded."]
    reference = model_name if is_hub_id(model_name) else "path/to/this/folder"
    decoding = own_decoding(card.hyperparameters)
    own_code = decoding or (card.hyperparameters.get("head_layers") or 1) > 1
    example = "Maria Lopez flew from Madrid to Berlin on Monday."
    lines += ["", "## Usage", ""]
    if own_code:
        plain = [scores for scores in results.splits if scores.plain_f1 is not None]
        lines += [
            f"This model {'decodes with ' + decoding if decoding else 'has an MLP head'}, and its scores above were "
            "measured that way. The folder carries the code that runs it (configuration.py, modeling.py, crf.py, "
            "tag_rules.py, tokenization_ner.py, named in config.json's `auto_map`), which transformers runs with "
            "`trust_remote_code=True`, the Hub's convention for custom heads; this toolkit need not be installed:",
            "",
            "```python",
            "from transformers import pipeline",
            "",
            f'ner = pipeline("token-classification", model="{reference}", trust_remote_code=True, aggregation_strategy="first")',
            f'ner("{example}")',
            'ner(["Maria", "Lopez", "flew", "to", "Berlin"], is_split_into_words=True)  # your own words',
            "```",
            "",
        ]
        if decoding:
            measured = "; ".join(f"{s.split.short} F1 {s.plain_f1:.4f} (with its decoding {float(s.overall['f1']):.4f})" for s in plain)
            lines += [
                "Without `trust_remote_code`, plain transformers reads the folder as a stock BERT token classifier over "
                "the same emissions and decodes them by argmax, without "
                + ("the CRF" if card.hyperparameters.get("use_crf") else "the constraints")
                + (f": {measured}." if measured else "."),
                "",
            ]
        else:
            lines += ["Without it, plain transformers refuses the folder (model type `ner_bert`): no stock class computes this head.", ""]
        lines += [
            "With the toolkit that wrote it, the same decoding on files of any size (windows for long sentences, "
            "document context): `python -m ner predict --model "
            f"{reference} --input FILE`, or",
            "",
            "```python",
            "from ner.predict import NerPredictor",
            "",
            f'NerPredictor("{reference}").predict_text(["{example}"])',
            "```",
        ]
    else:
        lines += [
            "```python",
            "from transformers import pipeline",
            "",
            f'ner = pipeline("token-classification", model="{reference}", aggregation_strategy="first")',
            f'ner("{example}")',
            "```",
            "",
        ]
        if card.hyperparameters.get("label_all_tokens"):
            lines.append(
                "The model was trained on every sub-token of each word (`--label_all_tokens`: later pieces as `I-`), and "
                'scored on the first, which `aggregation_strategy="first"` reads.'
            )
        else:
            lines.append(
                'The model was trained on the first sub-token of each word, which `aggregation_strategy="first"` reads.'
            )
    if scheme not in ("IOB1", "IOB2") and not decoding:
        lines.append(
            f"The pipeline's grouping understands only `B-`/`I-` prefixes; with {scheme} labels use "
            '`aggregation_strategy="none"` and join the tags yourself.'
        )
    secrets_free = drop_secrets(card.hyperparameters)
    if secrets_free:
        heading = "## Training hyperparameters" if card.trained else "## Evaluation settings"
        lines += ["", heading, "", "| name | value |", "| --- | --- |"]
        lines += [f"| {markdown_cell(key)} | {markdown_cell(value)} |" for key, value in secrets_free.items()]
    if plots:
        lines += ["", "## Plots", ""]
        for plot in plots:
            relative = _relative_plot(output_dir, plot)
            lines += [f"![{Path(relative).stem.replace('_', ' ')}]({relative})", ""]
        lines.pop()
    return "\n".join(lines) + "\n"


def own_decoding(hyperparameters: dict[str, Any]) -> str | None:
    """How the model decodes when ``pipeline()``'s argmax would not give it (None for a stock linear argmax model)."""
    if hyperparameters.get("use_crf"):
        return "a CRF (Viterbi over its learnt transition scores)"
    if hyperparameters.get("decoding") == "constrained":
        return "constrained Viterbi decoding (only the tag transitions the scheme allows)"
    return None


def write_model_card(output_dir: str | os.PathLike, card: CardData, results: Results, plots: Sequence[str] = ()) -> Path:
    """Write ``README.md`` (YAML metadata + card) into ``output_dir``; return its path.

    ``plots`` are image paths relative to ``output_dir`` (absolute paths inside it are made relative).
    """
    folder = Path(output_dir)
    card = replace(card, model_name=card.model_name or folder.resolve().name)
    header = yaml.safe_dump(card_metadata(card, results), sort_keys=False, allow_unicode=True, default_flow_style=False)
    body = card_body(folder, card, results, plots)
    path = folder / "README.md"
    with atomic_writer(path) as out:
        out.write(f"---\n{header}---\n\n{body}")
    return path
