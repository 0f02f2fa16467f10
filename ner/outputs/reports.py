"""Per-split error reports: per-type scores, an entity-type confusion table, mistakes shown in context.

``write_split_report`` writes ``{prefix}_report.md`` (for people) and ``{prefix}_report.json`` (the same
data for programs), which name entity types only, and ``{prefix}_mistakes.md/.json``, which quote the
first wrong sentences, from the word-level gold and predicted tags that ``run_ner.py`` already has.
Entities are read exactly as the scores are computed (``ner.data.schemes.entities``, the conlleval reading),
so the confusion table, the F1 and the predictor never disagree about what an entity is.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ner.data.schemes import WordSpan, check_parallel, entities
from ner.files import atomic_writer
from ner.outputs.results import Split, SplitScores

MISSED = "missed"  # column: a gold entity with no predicted entity on the same span
SPURIOUS = "spurious"  # row: a predicted entity with no gold entity on the same span
TOP_CONFUSIONS = 10
MAX_MISTAKES = 10


def entity_confusion(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, dict[str, int]]:
    """Entity-level confusion by type: ``confusion[gold_type][predicted_type]`` counts entities.

    A gold entity is matched only by a predicted entity on exactly the same words: same type counts
    on the diagonal, another type off it. A gold entity with no predicted entity on its span counts
    in column ``"missed"``; a predicted entity on no gold span counts in row ``"spurious"``. A
    boundary error (a prediction that overlaps a gold entity but starts or ends elsewhere) is
    therefore one missed plus one spurious, as F1 scores it (one false negative, one false positive).

    Rows are the sorted types seen in gold or predictions, then ``"spurious"``; columns are the same
    types, then ``"missed"``. Every cell is present (zero when empty) except ``spurious``/``missed``,
    which means nothing.
    """
    check_parallel(gold, predicted)
    return _confusion([entities(tags) for tags in gold], [entities(tags) for tags in predicted])


def _confusion(gold_entities: list[list[WordSpan]], predicted_entities: list[list[WordSpan]]) -> dict[str, dict[str, int]]:
    types = sorted({t for sentence in gold_entities + predicted_entities for _, _, t in sentence})
    confusion = {row: {column: 0 for column in types + [MISSED]} for row in types}
    confusion[SPURIOUS] = {column: 0 for column in types}
    for gold_spans, predicted_spans in zip(gold_entities, predicted_entities):
        predicted_by_span = {(start, end): t for start, end, t in predicted_spans}
        gold_by_span = {(start, end): t for start, end, t in gold_spans}
        for span, gold_type in gold_by_span.items():
            confusion[gold_type][predicted_by_span.get(span, MISSED)] += 1
        for span, predicted_type in predicted_by_span.items():
            if span not in gold_by_span:
                confusion[SPURIOUS][predicted_type] += 1
    return confusion


def top_confusions(confusion: dict[str, dict[str, int]], limit: int = TOP_CONFUSIONS) -> list[dict[str, Any]]:
    """The largest off-diagonal cells (wrong type, missed, spurious), largest first."""
    cells = [
        {"gold": row, "predicted": column, "count": count}
        for row, columns in confusion.items()
        for column, count in columns.items()
        if count and row != column
    ]
    cells.sort(key=lambda cell: (-cell["count"], cell["gold"], cell["predicted"]))
    return cells[:limit]


def mark_entities(words: Sequence[str], spans: Sequence[WordSpan]) -> str:
    """The sentence with each entity bracketed: ``[PER Maria Lopez] visited [LOC Paris] .``"""
    starts = {start: (end, entity_type) for start, end, entity_type in spans}
    pieces, position = [], 0
    while position < len(words):
        if position in starts:
            end, entity_type = starts[position]
            pieces.append(f"[{entity_type} {' '.join(words[position:end])}]")
            position = end
        else:
            pieces.append(words[position])
            position += 1
    return " ".join(pieces)


def _describe(words: Sequence[str], spans: Sequence[WordSpan]) -> list[dict[str, Any]]:
    return [{"type": t, "start": start, "end": end, "text": " ".join(words[start:end])} for start, end, t in spans]


def find_mistakes(
    words: Sequence[Sequence[str]],
    gold_entities: list[list[WordSpan]],
    predicted_entities: list[list[WordSpan]],
    limit: int = MAX_MISTAKES,
) -> tuple[int, list[dict[str, Any]]]:
    """(number of sentences whose entities differ, the first ``limit`` of them in file order, marked up)."""
    wrong, shown = 0, []
    for index, (sentence, gold_spans, predicted_spans) in enumerate(zip(words, gold_entities, predicted_entities)):
        if set(gold_spans) == set(predicted_spans):
            continue
        wrong += 1
        if len(shown) < limit:
            shown.append(
                {
                    "index": index,
                    "gold": mark_entities(sentence, gold_spans),
                    "predicted": mark_entities(sentence, predicted_spans),
                    "gold_entities": _describe(sentence, gold_spans),
                    "predicted_entities": _describe(sentence, predicted_spans),
                }
            )
    return wrong, shown


def split_report(
    words, gold, predicted, scheme: str, scores: SplitScores, confidence: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything ``write_split_report`` writes, as one JSON-ready dict; ``mistakes`` quotes the data. ``confidence``:
    ``ner.predict.calibration.SplitConfidence.figures()``, kept as ``"confidence"``."""
    check_parallel(gold, predicted, words)
    gold_entities = [entities(tags) for tags in gold]
    predicted_entities = [entities(tags) for tags in predicted]
    confusion = _confusion(gold_entities, predicted_entities)
    wrong, mistakes = find_mistakes(words, gold_entities, predicted_entities)
    return {
        "prefix": scores.split.prefix,
        "scheme": scheme,
        "sentences": len(gold),
        "sentences_with_errors": wrong,
        "overall": scores.overall,
        "per_type": scores.per_type,
        "confusion": confusion,
        "top_confusions": top_confusions(confusion),
        **({"confidence": confidence} if confidence is not None else {}),
        "mistakes": mistakes,
    }


def markdown_cell(value: Any) -> str:
    """``value`` as one cell of a markdown table: dicts and lists as JSON, ``|`` and backslashes escaped, one line."""
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, default=str)
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def scores_table(overall: dict[str, float], per_type: dict[str, dict[str, float]]) -> list[str]:
    """Markdown table rows: one per type, then the micro average; scores to 4 decimals."""
    lines = ["| type | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]

    def row(name: str, scores: dict[str, float]) -> str:
        values = [f"{scores[key]:.4f}" if key in scores else "" for key in ("precision", "recall", "f1")]
        support = str(int(scores["support"])) if "support" in scores else ""
        return f"| {markdown_cell(name)} | " + " | ".join(values + [support]) + " |"

    lines += [row(entity_type, scores) for entity_type, scores in per_type.items()]
    if overall:
        lines.append(row("**overall (micro)**", overall))
    return lines


def _fence(texts: Sequence[str]) -> str:
    longest = max((len(run) for text in texts for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def report_markdown(report: dict[str, Any], split: Split) -> str:
    """The scores and confusions, which name entity types only: no word of the data."""
    lines = [f"# Entity report: {split.display}", ""]
    overall = report["overall"]
    summary = f"{report['sentences']} sentences, scheme {report['scheme']} (conlleval entity matching: an entity opened by I- counts)"
    if "accuracy" in overall:
        summary += f"; token accuracy {overall['accuracy']:.4f}"
    lines += [summary + ".", "", "## Scores by entity type", ""]
    lines += scores_table(overall, report["per_type"])
    lines += ["", "## Top confusions", ""]
    lines.append(
        f"Rows are gold types, columns predicted types; `{MISSED}` = a gold entity with no prediction on its exact "
        f"span, `{SPURIOUS}` = a prediction on no gold span (a boundary error counts once in each)."
    )
    lines.append("")
    if report["top_confusions"]:
        lines += ["| gold | predicted | count |", "| --- | --- | ---: |"]
        lines += [
            f"| {markdown_cell(cell['gold'])} | {markdown_cell(cell['predicted'])} | {cell['count']} |"
            for cell in report["top_confusions"]
        ]
    else:
        lines.append("No confusions: every entity was found with the right span and type.")
    lines += [
        "",
        f"{report['sentences_with_errors']} of {report['sentences']} sentences have an entity error; "
        f"`{report['prefix']}_mistakes.md` shows the first ones in context.",
    ]
    if "confidence" in report:
        lines += ["", *confidence_markdown(report["confidence"], report["prefix"])]
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def confidence_markdown(confidence: dict[str, Any], prefix: str) -> list[str]:
    """The report's confidence section: calibration error before and after, precision and recall above thresholds."""
    lines = ["## Confidence", ""]
    if not confidence["entities"]:
        return lines + ["No entities were predicted: nothing to judge."]
    calibrated = confidence["calibrated"]
    how = "calibrated on the dev data by `calibration.json`" if calibrated else "uncalibrated"
    lines.append(
        f"Each entity's confidence is the probability of that whole entity under the model, {how}; an entity is right "
        f"when its type and words match a gold entity exactly. Expected calibration error over the "
        f"{confidence['entities']} predicted entities, {len(confidence['bins'])} equal-width bins: "
        f"**{_share(confidence['ece'])}**"
        + (f" (uncalibrated: {_share(confidence['ece_uncalibrated'])})." if calibrated else ".")
        + f" Reliability plot: `{prefix}_reliability.png`."
    )
    lines += ["", "| confidence at least | entities kept | precision | recall |", "| ---: | ---: | ---: | ---: |"]
    lines += [
        f"| {row['threshold']} | {row['entities']} | {_share(row['precision'])} | {_share(row['recall'])} |"
        for row in confidence["thresholds"]
    ]
    return lines


def mistakes_markdown(report: dict[str, Any], split: Split) -> str:
    """The first wrong sentences, gold and predicted entities bracketed: this quotes the data."""
    shown = report["mistakes"]
    lines = [f"# Mistakes in context: {split.display}", ""]
    lines.append(
        f"{report['sentences_with_errors']} of {report['sentences']} sentences have an entity error; "
        f"the first {len(shown)} (sentence numbers count from 0 in file order):"
    )
    for mistake in shown:
        fence = _fence([mistake["gold"], mistake["predicted"]])
        lines += ["", f"Sentence {mistake['index']}:", "", fence + "text"]
        lines += [f"gold:      {mistake['gold']}", f"predicted: {mistake['predicted']}", fence]
    return "\n".join(lines) + "\n"


def write_split_report(
    output_dir: str | os.PathLike,
    scores: SplitScores,
    words: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    scheme: str,
    confidence: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``{prefix}_report.md/.json`` (scores, confusions: no text of the data) and ``{prefix}_mistakes.md/.json``
    (the first wrong sentences in context) into ``output_dir``; return the four paths in that order.

    ``scores`` are the split's scores (its prefix: ``eval`` for the dev set, ``predict`` for the test set).
    The two kinds are apart so that the scores can be published where the data cannot (``--push_eval_text``).
    ``confidence`` (``SplitConfidence.figures()``) adds the report's confidence section.
    """
    split = scores.split
    report = split_report(words, gold, predicted, scheme, scores, confidence)
    mistakes = {key: report[key] for key in ("prefix", "sentences", "sentences_with_errors")}
    mistakes["mistakes"] = report.pop("mistakes")
    folder = Path(output_dir)
    paths = []
    for name, data, markdown in (
        ("report", report, report_markdown(report, split)),
        ("mistakes", mistakes, mistakes_markdown(mistakes, split)),
    ):
        markdown_path, json_path = folder / f"{split.prefix}_{name}.md", folder / f"{split.prefix}_{name}.json"
        with atomic_writer(markdown_path) as out:
            out.write(markdown)
        with atomic_writer(json_path) as out:
            json.dump(data, out, indent=2, ensure_ascii=False)
            out.write("\n")
        paths += [markdown_path, json_path]
    return paths
