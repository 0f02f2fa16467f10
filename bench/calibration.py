"""Calibrated entity confidences on whole corpora: expected calibration error before and after the calibration
fitted on dev, precision and recall above confidence thresholds, and prediction speed with and without confidences.

Each folder is a run_ner.py output folder trained with the defaults (``--output_dir DIR`` named ``CORPUS-SEED``, see
bench/RESULTS.md "Calibrated confidence" for the commands). The calibration is fitted by the function run_ner.py
calls after training (``ner.predict.calibration.calibrate_folder``, on the corpus' dev.txt, written to the folder's
calibration.json), then the test file is tagged by ``NerPredictor`` as ``python -m ner predict`` tags it. Speed: the
whole test file tagged with and without confidences, alternately, ``--repeats`` times each (the best of each kept).
"by chance": the mean error a perfectly calibrated model with the same confidences shows on a test set of this size
(each entity drawn right with probability its confidence, 200 draws): the floor that 10-bin ECE cannot go below.

    OMP_WAIT_POLICY=PASSIVE python bench/calibration.py /tmp/cal/ncbi_disease-42 /tmp/cal/conll2003-42 ... \\
        --out bench/calibration.jsonl [--speed]
    python bench/calibration.py --summary --out bench/calibration.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ner.data.conll import read_conll  # noqa: E402
from ner.predict.calibration import Judged, calibrate_folder, reliability, split_confidence  # noqa: E402
from ner.predict.predictor import NerPredictor  # noqa: E402
from ner.training.metrics import entity_scores  # noqa: E402


def sentences_of(path: Path) -> tuple[list[list[str]], list[list[str]], list[bool]]:
    sentences = list(read_conll(str(path)))
    return [s.words for s in sentences], [s.tags for s in sentences], [s.doc_start for s in sentences]


def speed(folder: Path, words: list[list[str]], repeats: int, batch_size: int) -> dict[str, float]:
    """Sentences per second tagging ``words``, with and without confidences (alternating runs, best of each)."""
    predictors = {
        "with": NerPredictor(str(folder), device="cpu", batch_size=batch_size),
        "without": NerPredictor(str(folder), device="cpu", batch_size=batch_size, confidence=False),
    }
    predictors["with"].tag(words[:64])  # warm up both
    predictors["without"].tag(words[:64])
    best = {name: 0.0 for name in predictors}
    for _ in range(repeats):
        for name, predictor in predictors.items():
            started = time.perf_counter()
            predictor.tag(words)
            best[name] = max(best[name], len(words) / (time.perf_counter() - started))
    return {
        "sentences_per_second_with_confidence": round(best["with"], 1),
        "sentences_per_second_without": round(best["without"], 1),
        "speed_ratio": round(best["with"] / best["without"], 4),
    }


def chance_error(confidences: list[float], draws: int = 200, seed: int = 0) -> float:
    """Mean expected calibration error of a perfectly calibrated model with these confidences (each entity right with
    probability its confidence): what binning a finite test set shows by chance alone."""
    generator = random.Random(seed)
    total = 0.0
    for _ in range(draws):
        outcomes = [generator.random() < p for p in confidences]
        total += reliability(Judged(confidences, outcomes, gold=0))[0]
    return total / draws


def measure(folder: Path, data_root: Path, args: argparse.Namespace) -> dict:
    corpus, seed = folder.name.rsplit("-", 1)
    data = data_root / corpus
    dev_words, dev_tags, dev_starts = sentences_of(data / "dev.txt")
    started = time.perf_counter()
    fitted = calibrate_folder(folder, dev_words, dev_tags, dev_starts, data_name=f"{corpus}/dev.txt", device="cpu")
    fit_seconds = time.perf_counter() - started
    words, tags, starts = sentences_of(data / "test.txt")
    predictor = NerPredictor(str(folder), device="cpu")
    confidence = split_confidence(predictor, words, tags, starts)
    figures = confidence.figures()
    tagged = predictor.tag(words)
    row = {
        "corpus": corpus, "seed": int(seed), "slope": fitted["slope"], "intercept": fitted["intercept"],
        "dev_entities": fitted["entities"],
        "dev_ece_before": round(fitted["ece_before"], 4), "dev_ece_after": round(fitted["ece_after"], 4),
        "fit_seconds": round(fit_seconds, 1),
        "test_entities": figures["entities"], "test_f1": round(entity_scores(tags, [t.tags for t in tagged], "IOB2")["f1"], 4),
        "test_ece_before": round(figures["ece_uncalibrated"], 4), "test_ece_after": round(figures["ece"], 4),
        "test_ece_by_chance": round(chance_error(confidence.calibrated.confidences), 4),
        **{f"test_precision_at_{r['threshold']}": r["precision"] and round(r["precision"], 4) for r in figures["thresholds"]},
        **{f"test_recall_at_{r['threshold']}": r["recall"] and round(r["recall"], 4) for r in figures["thresholds"]},
        **{f"test_entities_at_{r['threshold']}": r["entities"] for r in figures["thresholds"]},
        "test_bins": figures["bins"], "test_bins_uncalibrated": figures["bins_uncalibrated"],
    }
    if args.speed:
        row.update(speed(folder, words, args.repeats, args.batch_size), batch_size=args.batch_size)
    return row


def summary(rows: list[dict]) -> str:
    lines = [
        "| corpus | seed | slope, intercept | dev ECE before → after | test ECE before → after (by chance) | test entities | precision ≥0.5 / 0.8 / 0.9 / 0.95 "
        "| recall ≥0.9 | speed with / without confidences (sentences/s) |",
        "| --- | --- | --- | --- | --- | ---: | --- | ---: | --- |",
    ]
    for row in rows:
        precisions = " / ".join(f"{row[f'test_precision_at_{t}']:.3f}" if row[f"test_precision_at_{t}"] is not None else "-"
                                for t in (0.5, 0.8, 0.9, 0.95))
        speed_cell = (f"{row['sentences_per_second_with_confidence']} / {row['sentences_per_second_without']} "
                      f"({(row['speed_ratio'] - 1) * 100:+.1f}%)") if "speed_ratio" in row else ""
        lines.append(
            f"| {row['corpus']} | {row['seed']} | {row['slope']:.3f}, {row['intercept']:.3f} | {row['dev_ece_before']:.4f} → {row['dev_ece_after']:.4f} "
            f"| {row['test_ece_before']:.4f} → {row['test_ece_after']:.4f} ({row['test_ece_by_chance']:.4f}) | {row['test_entities']} | {precisions} "
            f"| {row['test_recall_at_0.9']:.3f} | {speed_cell} |"
        )
    after = [row["test_ece_after"] for row in rows]
    if after:
        lines.append(f"\nTest ECE after calibration: mean {statistics.mean(after):.4f}, worst {max(after):.4f}.")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "calibration.jsonl")
    parser.add_argument("--data_root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--speed", action="store_true", help="also time prediction with and without confidences")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--summary", action="store_true", help="print the table from --out and stop")
    args = parser.parse_args()
    if not args.summary:
        for folder in args.folders:
            row = measure(folder, args.data_root, args)
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if "bins" not in k}), flush=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()] if args.out.exists() else []
    print(summary(rows))
