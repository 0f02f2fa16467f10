"""Where a training step's time goes: the stock recipe and run_ner's variants, step time and a torch.profiler table.

    python bench/step_profile.py --variants stock ours-before ours [--extra_variant "name=run_ner flags"]
                                 [--model minilm] [--steps 90] [--out DIR]

Each variant trains on the first ``--steps`` x 32 CoNLL-2003 training sentences (batch 32, bf16 on a GPU) through
bench/speed.py's harness. Every call of ``Trainer.training_step`` is timed from one call to the next, so a step
covers the data loader, forward, backward and optimizer; the median over the steps after ``--skip`` is
reported. A variant whose name holds ``nocudnn`` runs with SDPA's cuDNN kernel switched off. Steps ``--profile_from`` to ``--profile_from + --profile_steps`` run under torch.profiler (CPU and
CUDA): the tables of the top operators by self CPU time and by self device time go to DIR/profiles.txt,
the step times to DIR/steps.json. On a CPU it runs too (tiny sizes: --steps 40), for rehearsal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))


class StepClock:
    """Wraps ``Trainer.training_step``: the time between calls, and a profiler over a window of steps."""

    def __init__(self, profile_from: int, profile_steps: int) -> None:
        self.profile_from, self.profile_steps = profile_from, profile_steps
        self.reset()

    def reset(self) -> None:
        self.times: list[float] = []
        self.profiler = None
        self.table = ""

    def install(self) -> None:
        import torch
        from transformers import Trainer

        original = Trainer.training_step
        clock = self

        def training_step(trainer, *args, **kwargs):
            step = len(clock.times)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            clock.times.append(time.perf_counter())
            if step == clock.profile_from:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if torch.cuda.is_available():
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                clock.profiler = torch.profiler.profile(activities=activities)
                clock.profiler.__enter__()
            elif step == clock.profile_from + clock.profile_steps and clock.profiler is not None:
                clock.profiler.__exit__(None, None, None)
                averages = clock.profiler.key_averages()
                device_key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
                clock.table = (
                    f"{clock.profile_steps} steps from step {clock.profile_from}\n\nby self CPU time\n"
                    + averages.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=70)
                    + "\nby self device time\n"
                    + averages.table(sort_by=device_key, row_limit=30, max_name_column_width=70)
                )
                clock.profiler = None
            return original(trainer, *args, **kwargs)

        Trainer.training_step = training_step

    def median_ms(self, skip: int) -> float | None:
        gaps = [b - a for a, b in zip(self.times, self.times[1:])][skip:]
        window = range(self.profile_from - skip - 1, self.profile_from + self.profile_steps - skip + 1)
        gaps = [gap for i, gap in enumerate(gaps) if i not in window]  # the profiled steps are slower
        return round(statistics.median(gaps) * 1000, 2) if gaps else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["stock", "ours-before", "ours"])
    parser.add_argument("--extra_variant", action="append", default=[], help="NAME=run_ner flags, as bench/speed.py")
    parser.add_argument("--model", default="minilm", help="minilm, bert-base or a model folder")
    parser.add_argument("--minilm", default=os.environ.get("MINILM"))
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--skip", type=int, default=10, help="first steps left out of the median (warm-up, compilation)")
    parser.add_argument("--profile_from", type=int, default=60)
    parser.add_argument("--profile_steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out/step-profile")))
    args = parser.parse_args(argv)

    import tempfile

    import torch

    import speed

    variants = [speed.VARIANTS[name] for name in args.variants]
    variants += [speed.Variant.from_spec(spec) for spec in args.extra_variant]
    args.out.mkdir(parents=True, exist_ok=True)
    clock = StepClock(args.profile_from, args.profile_steps)
    clock.install()
    data = REPO.parent / "shared" / "data" / "conll2003"
    limits = {"train": args.steps * 32, "validation": 200, "test": 200}
    common = {"batch_size": 32, "eval_batch_size": 64, "bf16": torch.cuda.is_available(), "epochs": 1.0, "seed": 42,
              "sentences": {"validation": 200, "test": 200}}
    results = []
    speed.warm_up_gpu()
    with tempfile.TemporaryDirectory() as scratch:
        model = speed.prepare_models([args.model], Path(scratch), args.minilm or speed.minilm_path())[args.model]
        for variant in variants:
            clock.reset()
            cudnn = torch.backends.cuda.cudnn_sdp_enabled()
            if "nocudnn" in variant.name:  # SDPA without cuDNN's kernel (it builds a plan for each new shape)
                torch.backends.cuda.enable_cudnn_sdp(False)
            try:
                row = speed.run_one(variant, args.model, model, data, limits, common)
                error = None
            except Exception as exc:  # a variant that fails is reported; the others still run
                row, error = {}, f"{type(exc).__name__}: {exc}"[:500]
            finally:
                torch.backends.cuda.enable_cudnn_sdp(cudnn)
            result = {
                "variant": variant.name, "flags": variant.args, "steps": max(len(clock.times) - 1, 0),
                "median_step_ms": clock.median_ms(args.skip), "first_step_ms": round((clock.times[1] - clock.times[0]) * 1000, 1)
                if len(clock.times) > 1 else None,
                "train_samples_per_second": row.get("train_samples_per_second"), "fed_token_ratio": row.get("fed_token_ratio"),
                "peak_gpu_memory_gb": row.get("peak_gpu_memory_gb"), "error": error,
            }
            print(json.dumps(result), flush=True)
            results.append(result)
            if clock.table:
                with open(args.out / "profiles.txt", "a", encoding="utf-8") as f:
                    f.write(f"\n\n===== {variant.name} {' '.join(variant.args)}\n{clock.table}")
            (args.out / "steps.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
