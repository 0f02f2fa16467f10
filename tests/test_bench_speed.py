"""Smoke tests of bench/speed.py (both recipes run on a few demo sentences and report every figure) and
bench/predict_speed.py; no time is asserted. A run's cost is mostly fixed (Trainer setup, the plots, garbage
collection between runs), not the dozen sentences."""

from __future__ import annotations

import importlib.util
import json
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


def test_gpu_mode_needs_a_gpu(speed):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        speed.parse_arguments(["--gpu"])


@pytest.mark.integration  # the whole benchmark: pipeline() and NerPredictor, in fp32 and bf16
def test_predict_speed_benchmark_runs(demo_model, tmp_path):
    """bench/predict_speed.py on a tiny folder: every run reported, F1 against gold, fp32/bf16 agreement."""
    spec = importlib.util.spec_from_file_location("bench_predict_speed", REPO / "bench" / "predict_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main([
        "--model", str(demo_model), "--data", str(DEMO_DATA / "test.txt"), "--sentences", "12", "--repeat", "2",
        "--out", str(tmp_path / "speed.json"),
    ])
    runs = report["results"]
    assert [r["run"].split(",")[0] for r in runs] == ["pipeline simple"] * 2 + ["NerPredictor.tag (words)", "NerPredictor.predict_text (text to entity spans)"] * 2
    assert all(len(r["runs_seconds"]) == 2 and r["sentences"] == 12 for r in runs)
    assert all(0 <= r["test_f1"] <= 1 for r in runs if r["run"].startswith("NerPredictor.tag"))
    assert 0 <= report["word_tag_agreement"]["fraction"] <= 1
    assert json.loads((tmp_path / "speed.json").read_text()) == report
