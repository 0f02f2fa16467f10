"""Smoke tests of bench/speed.py (both recipes run on a few demo sentences and report every figure),
bench/predict_speed.py and bench/gpu.sh (its report, time limits and deadline); no time is asserted. A run's cost
is mostly fixed (Trainer setup, the plots, garbage collection between runs), not the dozen sentences."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import DEMO_DATA, REPO


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("bench_speed", REPO / "bench" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


FIGURES = {
    "train_samples_per_second", "train_tokens_per_second", "fed_token_ratio", "eval_fed_token_ratio", "mfu", "eval_sentences_per_second",
    "predict_sentences_per_second", "train_runtime_s", "wall_s", "peak_rss_gb", "rss_start_gb", "dev_f1", "test_f1",
}


@pytest.mark.integration  # three trainings and two run_ner.py runs
@pytest.mark.filterwarnings("ignore:.pin_memory. argument")  # the stock recipe keeps its defaults
def test_speed_harness_runs_stock_and_ours(speed, tiny_bert, tmp_path, capsys):
    out = tmp_path / "speed.json"
    report = speed.main([
        "--models", str(tiny_bert), "--data", str(DEMO_DATA), "--train_samples", "12", "--eval_samples", "6",
        "--batch_size", "4", "--eval_batch_size", "4", "--variants", "stock", "ours-before", "ours", "--out", str(out),
        "--keep", str(tmp_path / "kept"),
    ])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    runs = [line for line in lines if not line.get("median")]
    assert [run["variant"] for run in runs] == ["stock", "ours-before", "ours"]
    for run in runs:
        assert FIGURES <= set(run)
        assert run["mfu"] is None  # CPU: no utilisation figure
        assert 0 <= run["dev_f1"] <= 1 and 0 <= run["test_f1"] <= 1
        assert run["train_samples_per_second"] > 0 and run["fed_token_ratio"] >= 1
    assert all({"dev_strict_f1", "test_strict_f1"} <= set(run) for run in runs)
    # The stock run and ours-before pad the same batches; ours packs them into fewer positions, and
    # evaluates in length order (less padding there too).
    assert runs[0]["fed_token_ratio"] == runs[1]["fed_token_ratio"]
    assert runs[2]["fed_token_ratio"] <= runs[1]["fed_token_ratio"]
    assert runs[2]["eval_fed_token_ratio"] <= runs[1]["eval_fed_token_ratio"]
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["setup"]["eval_sentences"] == {"validation": 6, "test": 6}
    assert [m["variant"] for m in saved["medians"]] == ["stock", "ours-before", "ours"]
    assert saved["medians"][0]["speedup_vs_stock"] == 1.0
    assert saved["setup"]["epochs"] == {str(tiny_bert): 1.0} and all(run["epochs"] == 1.0 for run in runs)
    # --keep: the model ours trained, ready for bench/predict_speed.py --model
    assert (tmp_path / "kept" / "config.json").is_file() and (tmp_path / "kept" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "kept" / "all_results.json").read_text())["eval_f1"] == pytest.approx(runs[2]["dev_f1"], abs=1e-4)


def test_epochs_per_model(speed, monkeypatch):
    """GPU mode trains MiniLM 3 epochs and the bert-base shape 1 (the runs the goals compare with); --epochs sets
    every model's, --model_epochs one model's, and a model that is not run is refused."""
    monkeypatch.setattr(speed.torch.cuda, "is_available", lambda: True)
    assert speed.parse_arguments(["--gpu"]).epochs_by_model == {"minilm": 3.0, "bert-base": 1.0}
    assert speed.parse_arguments(["--gpu", "--epochs", "2"]).epochs_by_model == {"minilm": 2.0, "bert-base": 2.0}
    monkeypatch.undo()
    args = speed.parse_arguments(["--models", "minilm", "bert-base", "--model_epochs", "bert-base=0.5"])
    assert args.epochs_by_model == {"minilm": 1.0, "bert-base": 0.5}
    for bad in (["--model_epochs", "bert-base=1"], ["--model_epochs", "minilm=one"]):
        with pytest.raises(SystemExit):
            speed.parse_arguments(bad)


def test_gpu_mode_needs_a_gpu(speed):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        speed.parse_arguments(["--gpu"])


@pytest.mark.integration  # the whole benchmark: pipeline() and NerPredictor, in fp32 and bf16
def test_predict_speed_benchmark_runs(demo_model, tmp_path):
    """bench/predict_speed.py on a tiny folder: both recipes at every batch size, the other precision at the largest,
    ratios to the pipeline at the same batch size, F1 against gold, bf16's agreement with fp32."""
    spec = importlib.util.spec_from_file_location("bench_predict_speed", REPO / "bench" / "predict_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main([
        "--model", str(demo_model), "--data", str(DEMO_DATA / "test.txt"), "--sentences", "12", "--repeat", "2",
        "--batch_sizes", "4", "1", "--out", str(tmp_path / "speed.json"),
    ])
    runs = report["results"]
    assert [(r["run"].split(",")[0], r["batch_size"]) for r in runs] == [
        ("pipeline simple", 1), ("pipeline simple", 4),
        ("NerPredictor.tag (words)", 1), ("NerPredictor.tag (words)", 4), ("NerPredictor.predict_text (text to entity spans)", 4),
        ("NerPredictor.tag (words)", 4), ("NerPredictor.predict_text (text to entity spans)", 4),
    ]
    assert [r["run"].rsplit(", ", 1)[1] for r in runs[2:]] == ["auto: float32"] * 3 + ["bfloat16: bfloat16"] * 2
    assert all(len(r["runs_seconds"]) == 2 and r["sentences"] == 12 for r in runs)
    pipeline = {r["batch_size"]: r["sentences_per_second"] for r in runs[:2]}
    for run in runs[2:]:
        assert run["x_pipeline_same_batch"] == pytest.approx(run["sentences_per_second"] / pipeline[run["batch_size"]], abs=0.01)
    assert all(0 <= r["test_f1"] <= 1 for r in runs if r["run"].startswith("NerPredictor.tag"))
    [agreement] = report["word_tag_agreement"]
    assert agreement["between"] == ["float32", "bfloat16"] and 0 <= agreement["fraction"] <= 1
    assert json.loads((tmp_path / "speed.json").read_text()) == report


def gpu_check(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``bash bench/gpu.sh ARGS`` with $OUT in tmp_path; what it printed and the report it wrote."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path), "PYTHON": sys.executable}
    finished = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), *args], env=env, capture_output=True, text=True, timeout=300)
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    return finished, report


@pytest.mark.integration  # starts bench/gpu.sh, which starts Python
def test_gpu_check_reports_its_steps_and_stops_at_the_deadline(tmp_path):
    """--smoke with one step selected and no time left for it: the set-up ran (carried size, machine), the step is
    skipped for the deadline, the others as not selected; the report is printed as written, the exit code says
    not everything ran."""
    finished, report = gpu_check(tmp_path, "--smoke", "--only", "predict", "--deadline", "0")
    assert finished.returncode == 1, finished.stdout + finished.stderr
    printed = finished.stdout[finished.stdout.rindex("\n{\n") + 1 :]
    assert json.loads(printed) == report
    assert report["mode"] == "smoke" and report["finished"] and not report["all_steps_ok"]
    steps = {step["step"]: step for step in report["steps"]}
    assert list(steps) == ["setup", "cuda-tests", "speed-minilm", "speed-bert-base", "predict"]
    assert steps["setup"]["status"] == "ok"
    assert steps["predict"]["status"] == "skipped" and "deadline" in steps["predict"]["note"]
    assert {steps[name]["note"] for name in ("cuda-tests", "speed-minilm", "speed-bert-base")} == {"not selected (--only)"}
    assert report["machine"]["cuda"] is False and report["machine"]["torch"]
    carry = report["carry"]  # the tracked files, and .device/ where device-prep.sh made it
    assert carry["bytes"] > 0 and carry["limit_bytes"] == 64 * 2**20 and carry["fits"] == (carry["bytes"] < carry["limit_bytes"])
    assert all(goal["met"] is None for goal in report["goals"])  # nothing measured
    assert sorted(report["files"]) == ["gpu-check.json", "gpu-check.log"]
    assert "=== bench/gpu.sh (smoke)" in (tmp_path / "out" / "gpu-check.log").read_text()


@pytest.mark.integration  # starts bench/gpu.sh, which starts pytest
def test_gpu_check_stops_a_step_at_its_limit(tmp_path):
    """A step that outlasts its --limit is stopped and reported as timed out; the report is still written."""
    finished, report = gpu_check(tmp_path, "--smoke", "--only", "cuda-tests", "--limit", "setup=0", "--limit", "cuda-tests=1")
    assert finished.returncode == 1
    steps = {step["step"]: step for step in report["steps"]}
    assert steps["cuda-tests"]["status"] == "timed_out", steps
    assert steps["cuda-tests"]["limit_s"] == 1 and steps["cuda-tests"]["exit_code"] in (124, 137)  # TERM, or KILL after it


def test_gpu_check_refuses_unknown_steps(tmp_path):
    finished = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--only", "speed"], capture_output=True, text=True,
                              env={**os.environ, "OUT": str(tmp_path)})
    assert finished.returncode == 2 and "no step 'speed'" in finished.stderr
