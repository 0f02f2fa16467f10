"""PNG plots for the output folder: entity-type confusion, per-type F1, confidence reliability, training curves.

Figures are
drawn on an Agg canvas directly, without pyplot: no global figure state, no display needed. Each
PNG is written through ``ner.files.atomic_writer``, so an interrupted run never leaves a truncated image.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import numpy as np

from ner.files import atomic_writer
from ner.outputs.reports import MISSED, SPURIOUS
from ner.outputs.results import VALIDATION, SplitScores

logger = logging.getLogger(__name__)

DPI = 120


def _figure(width: float, height: float):

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_writer(path, binary=True) as stream:
        figure.savefig(stream, format="png", dpi=DPI)
    logger.debug("Plot written: %s", path)
    return path


def plot_confusion(confusion: dict[str, dict[str, int]], path: str | os.PathLike) -> Path:
    """Heat map of an ``entity_confusion`` table (rows gold, columns predicted), counts in the cells.

    The ``spurious`` row and ``missed`` column are drawn like the others; their empty corner is blank.
    """

    rows = list(confusion)
    columns = list(dict.fromkeys(column for cells in confusion.values() for column in cells))
    counts = np.full((len(rows), len(columns)), np.nan)
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            if column in confusion[row]:
                counts[i, j] = confusion[row][column]
    figure = _figure(max(4.0, 1.0 + 0.75 * len(columns)), max(3.0, 1.0 + 0.6 * len(rows)))
    axes = figure.add_subplot()
    if not rows or not columns:
        axes.text(0.5, 0.5, "no entities in gold or predictions", ha="center", va="center")
        axes.set_axis_off()
        return _save(figure, path)
    largest = float(np.nanmax(counts)) if np.isfinite(counts).any() else 0.0
    image = axes.imshow(np.ma.masked_invalid(counts), cmap="Blues", vmin=0, vmax=max(largest, 1.0), aspect="auto")
    for i in range(len(rows)):
        for j in range(len(columns)):
            if not math.isnan(counts[i, j]):
                dark = counts[i, j] > 0.6 * largest
                axes.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color="white" if dark else "black")
    axes.set_xticks(range(len(columns)), labels=columns, rotation=45, ha="right")
    axes.set_yticks(range(len(rows)), labels=rows)
    axes.set_xlabel(f"predicted ({MISSED}: no prediction on the gold span)", fontsize=9)
    axes.set_ylabel(f"gold ({SPURIOUS}: no gold entity on the span)", fontsize=9)
    axes.set_title("Entity confusion by type")

    colorbar = figure.colorbar(image, ax=axes, shrink=0.8)
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(figure, path)


def type_f1_bars(scores: SplitScores) -> list[tuple[str, float, int]]:
    """``(type, F1, support)`` for each entity type of a split, as ``plot_type_f1`` draws them."""
    per_type = scores.per_type
    return [(name, per_type[name].get("f1", 0.0), int(per_type[name].get("support", 0))) for name in per_type]


def plot_type_f1(scores: SplitScores, path: str | os.PathLike) -> Path:
    """Horizontal bars of each type's F1, support in the label, micro F1 as a line.

    F1 is the conlleval-compatible score (an entity opened by ``I-`` counts), as in ``ner.training.metrics``.
    """
    bars = type_f1_bars(scores)
    overall = scores.overall
    names = [name for name, _, _ in bars]
    f1s = [f1 for _, f1, _ in bars]
    figure = _figure(6.0, max(2.5, 1.2 + 0.4 * len(names)))
    axes = figure.add_subplot()
    positions = range(len(names))
    axes.barh(positions, f1s, color="tab:blue")
    labels = [f"{name} ({support})" for name, _, support in bars]
    axes.set_yticks(positions, labels=labels)
    axes.invert_yaxis()
    for position, f1 in zip(positions, f1s):
        axes.text(min(f1 + 0.01, 0.9), position, f"{f1:.3f}", va="center")
    if "f1" in overall:
        axes.axvline(overall["f1"], color="tab:red", linestyle="--", label=f"micro F1 {overall['f1']:.3f}")
        axes.legend(loc="lower right", fontsize=8)
    if not names:
        axes.text(0.5, 0.5, "no per-type scores", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlim(0, 1)
    axes.set_xlabel("F1 (conlleval-compatible, entity level)")
    axes.set_ylabel("type (gold entities)")
    axes.set_title(f"{scores.split.short.capitalize()} F1 by type")
    return _save(figure, path)


def plot_reliability(confidence: dict[str, Any], title: str, path: str | os.PathLike) -> Path:
    """Reliability diagram of ``SplitConfidence.figures()``: share of entities right against mean confidence in each
    bin (calibrated, and uncalibrated where a calibration was fitted), the diagonal of perfect calibration, and each
    bin's entity count as bars underneath."""
    figure = _figure(5.0, 5.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    if confidence["calibrated"]:
        series = [
            ("bins_uncalibrated", f"uncalibrated (ECE {confidence['ece_uncalibrated']:.3f})", "tab:orange"),
            ("bins", f"calibrated (ECE {confidence['ece']:.3f})", "tab:blue"),
        ]
    else:
        series = [("bins", f"uncalibrated (ECE {confidence['ece']:.3f})", "tab:blue")]
    for key, label, color in series:
        filled = [row for row in confidence[key] if row["entities"]]
        top.plot([row["confidence"] for row in filled], [row["accuracy"] for row in filled], marker="o", color=color, label=label)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel("share of entities right")
    top.set_title(f"Entity confidence: {title}")
    top.legend(loc="upper left", fontsize="small")
    bins = confidence["bins"]
    width = bins[0]["high"] - bins[0]["low"]
    bottom.bar([row["low"] + width / 2 for row in bins], [row["entities"] for row in bins], width=width * 0.9, color="tab:blue")
    bottom.set_yscale("symlog")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("entities")
    return _save(figure, path)


def _series(log_history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float], list[float | None]]:
    steps, values, epochs = [], [], []
    for entry in log_history:
        if key in entry and "step" in entry:
            steps.append(entry["step"])
            values.append(entry[key])
            epochs.append(entry.get("epoch"))
    return steps, values, epochs


def curve_types(log_history: list[dict[str, Any]]) -> list[str]:
    """The entity types with a dev F1 curve: those with an ``eval_{TYPE}_number`` in some logged evaluation."""
    return sorted({name for entry in log_history for name in SplitScores.from_metrics(entry, VALIDATION).per_type})


def plot_training_curves(log_history: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Training (and dev) loss by step, and dev F1 (overall and per type) by step, from ``trainer.state.log_history``.

    Returns None, writing nothing, when the history holds neither a training loss nor a dev F1.
    """
    loss = _series(log_history, "loss")
    dev_loss = _series(log_history, VALIDATION.key("loss"))
    dev_f1 = _series(log_history, VALIDATION.key("f1"))
    panels = [name for name, series in (("loss", loss), ("f1", dev_f1)) if series[0]]
    if not panels:
        return None
    figure = _figure(5.0 * len(panels), 3.6)
    all_axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel in zip(all_axes, panels):
        if panel == "loss":
            axes.plot(loss[0], loss[1], label="training loss", color="tab:blue")
            if dev_loss[0]:
                axes.plot(dev_loss[0], dev_loss[1], "o-", label="dev loss", color="tab:orange")
            axes.set_ylabel("loss")
            axes.set_title("Loss")
        else:
            types = curve_types(log_history)
            for entity_type in types:
                steps, values, _ = _series(log_history, VALIDATION.key(f"{entity_type}_f1"))
                axes.plot(steps, values, ".-", linewidth=1, alpha=0.7, label=entity_type)
            axes.plot(dev_f1[0], dev_f1[1], "o-", color="black", linewidth=2, label="overall")
            for step, value, epoch in zip(*dev_f1):
                if epoch is not None:
                    axes.annotate(
                        f"ep {epoch:g}", (step, value), textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center"
                    )
            axes.set_ylim(-0.02, 1.05)
            axes.set_ylabel("F1 (conlleval-compatible)")
            axes.set_title("Dev F1")
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return _save(figure, path)
