"""Two processes (DDP over gloo, on the CPU) against one, end to end through ``accelerate launch``.

The same job runs as ``python run_ner.py`` (per-device batch 8) and as ``accelerate launch
--multi_gpu --num_processes 2 ... run_ner.py --use_cpu`` (per-device batch 4, so the global batch
is the same), on an odd number of training, dev and test sentences so that one rank gets fewer
batches. Each run goes through a small recorder that notes, per rank, every file renamed into
place (all of the project's outputs are written atomically, with ``os.replace``) and every CoNLL
file parsed; it then runs ``run_ner.py`` unchanged as ``__main__``.

Why ``--multi_gpu`` on a CPU-only machine: in accelerate 1.15 ``accelerate launch --cpu`` always
uses its single-process launcher (``--num_processes 2 --cpu`` starts *one* process). ``--multi_gpu``
selects the torchrun launcher, which starts the processes; ``--use_cpu`` (TrainingArguments) then
keeps them on the CPU with the gloo backend. See RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEMO_DATA, REPO, make_tiny_bert
from ner.conll import read_conll

pytestmark = pytest.mark.slow  # about 35 s on 2 cores (both runs side by side); still runs in CI

TIMEOUT_S = 300  # a deadlocked rank fails the test instead of hanging CI
N_TRAIN, N_EVAL = 41, 25  # odd: rank 1 gets one batch fewer; test.txt has 51 sentences
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",  # two ranks on two cores
}

RECORDER = """
import json, os, runpy, sys

record = os.path.join(sys.argv[1], f"rank-{os.environ.get('RANK', '0')}.jsonl")

def note(kind, value):
    with open(record, "a", encoding="utf-8") as f:
        f.write(json.dumps([kind, value]) + "\\n")

replace = os.replace
def recorded_replace(source, destination, **kwargs):
    replace(source, destination, **kwargs)
    note("wrote", os.path.abspath(destination))
os.replace = recorded_replace

sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
note("started", sys.argv[0])
import ner.conll
read_conll = ner.conll.read_conll
def recorded_read_conll(path, **kwargs):
    note("parsed", os.path.abspath(path))
    return read_conll(path, **kwargs)
ner.conll.read_conll = recorded_read_conll
runpy.run_path(sys.argv[0], run_name="__main__")

import torch.distributed as dist
note("backend", dist.get_backend() if dist.is_initialized() else "none")
"""


def job(model: Path, out: Path, batch: int) -> list[str]:
    return [
        str(REPO / "run_ner.py"),
        "--model_name_or_path", str(model),
        "--train_file", str(DEMO_DATA / "train.txt"),
        "--validation_file", str(DEMO_DATA / "dev.txt"),
        "--test_file", str(DEMO_DATA / "test.txt"),
        "--output_dir", str(out),
        "--data_cache_dir", str(out.parent / "cache"),
        "--do_train", "--do_eval", "--do_predict",
        "--max_train_samples", str(N_TRAIN),
        "--max_eval_samples", str(N_EVAL),
        "--per_device_train_batch_size", str(batch),
        "--per_device_eval_batch_size", "4",
        "--learning_rate", "5e-3",
        "--max_steps", "12",
        "--eval_strategy", "steps", "--eval_steps", "6",  # evaluation inside training too
        "--save_strategy", "steps", "--save_steps", "6",
        "--logging_steps", "1",
        "--seed", "13",
        "--use_cpu",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
    ]


def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    # A session of its own, so that a timeout can kill the launcher and every rank under it.
    with log.open("w") as stream:
        return subprocess.Popen(command, env=env, cwd=log.parent, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen, log: Path, deadline: float) -> None:
    try:
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"{log.name}: no result within {TIMEOUT_S} s (a deadlock?):\n{log.read_text()[-3000:]}")
    assert process.returncode == 0, f"{log.name} failed:\n{log.read_text()[-5000:]}"


def records(folder: Path) -> dict[str, list[tuple[str, str]]]:
    return {
        path.stem: [tuple(json.loads(line)) for line in path.read_text().splitlines()]
        for path in sorted(folder.glob("rank-*.jsonl"))
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The one-process and the two-process run, side by side; returns their folders."""
    root = tmp_path_factory.mktemp("multiprocess")
    model = make_tiny_bert(root / "tiny-bert")
    config = json.loads((model / "config.json").read_text())
    # No dropout: both runs then see the same function, and differ only where the data differ.
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(config))
    recorder = root / "recorder.py"
    recorder.write_text(RECORDER)
    # accelerate reads $HF_HOME/accelerate/default_config.yaml under --multi_gpu: keep a developer's out.
    env = {**ENV, "HF_HOME": str(root / "hf-home")}
    folders = {name: root / name for name in ("one", "two")}
    for folder in folders.values():
        (folder / "records").mkdir(parents=True)
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "--num_cpu_threads_per_process", "1",
    ]
    deadline = time.monotonic() + TIMEOUT_S
    started = time.monotonic()
    processes = {
        "one": start([sys.executable, str(recorder), str(folders["one"] / "records"), *job(model, folders["one"] / "out", 8)],
                     folders["one"] / "log.txt", env),
        "two": start([*launch, str(recorder), str(folders["two"] / "records"), *job(model, folders["two"] / "out", 4)],
                     folders["two"] / "log.txt", env),
    }
    try:
        for name, process in processes.items():
            finish(process, folders[name] / "log.txt", deadline)
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    print(f"\n1 and 2 processes side by side: {time.monotonic() - started:.1f} s")
    return folders


def results(folder: Path) -> dict[str, float]:
    return json.loads((folder / "out" / "all_results.json").read_text())


def prediction_sentences(path: Path) -> list[list[list[str]]]:
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            if current:
                sentences.append(current)
            current = []
        elif not line.startswith("-DOCSTART-"):
            current.append(line.split("\t"))
    return sentences


def test_two_processes_ran_with_gloo_and_one_rank_short(runs):
    state = json.loads((runs["two"] / "out" / "trainer_state.json").read_text())
    # 41 sentences, global batch 8: 6 steps an epoch, the last one 1 sentence (rank 1 short).
    assert state["global_step"] == 12 and state["epoch"] == pytest.approx(2.0)
    assert results(runs["one"])["epoch"] == pytest.approx(2.0)
    assert sorted(p.name for p in (runs["two"] / "out" / "checkpoint-12").glob("rng_state*")) == [
        "rng_state_0.pth", "rng_state_1.pth",
    ]
    assert sorted(records(runs["two"] / "records")) == ["rank-0", "rank-1"]
    assert sorted(records(runs["one"] / "records")) == ["rank-0"]
    backends = {rank: [path for kind, path in rows if kind == "backend"] for rank, rows in records(runs["two"] / "records").items()}
    assert backends == {"rank-0": ["gloo"], "rank-1": ["gloo"]}


@pytest.mark.parametrize("name", ["one", "two"])
def test_datasets_are_parsed_once_by_the_main_process(runs, name):
    parsed = {rank: [path for kind, path in rows if kind == "parsed"] for rank, rows in records(runs[name] / "records").items()}
    expected = sorted(str(DEMO_DATA / f) for f in ("train.txt", "dev.txt", "test.txt"))
    assert sorted(parsed.pop("rank-0")) == expected
    assert parsed == ({"rank-1": []} if name == "two" else {})  # rank 1 read the Arrow cache rank 0 wrote
    assert (runs[name] / "log.txt").read_text().count("Generating train split: 200 examples") == 1


def test_outputs_are_written_once_by_rank_0(runs):
    out = runs["two"] / "out"
    written = {rank: [path for kind, path in rows if kind == "wrote"] for rank, rows in records(runs["two"] / "records").items()}
    assert not [path for path in written.get("rank-1", []) if path.startswith(str(out))]
    ours = sorted(Path(path).relative_to(out).as_posix() for path in written["rank-0"] if path.startswith(str(out)))
    for name in ("eval_predictions.txt", "predict_predictions.txt", "eval_report.md", "eval_report.json",
                 "predict_report.md", "predict_report.json", "README.md", "training_args.json"):
        assert ours.count(name) == 1, (name, ours)
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("prefix, source, n", [("eval", "dev.txt", N_EVAL), ("predict", "test.txt", None)])
def test_predictions_have_one_line_per_input_word(runs, prefix, source, n):
    expected = list(read_conll(DEMO_DATA / source))[:n]
    for name in ("one", "two"):
        sentences = prediction_sentences(runs[name] / "out" / f"{prefix}_predictions.txt")
        assert [[row[0] for row in s] for s in sentences] == [s.words for s in expected], name
        assert [[row[1] for row in s] for s in sentences] == [s.tags for s in expected], name
        report = json.loads((runs[name] / "out" / f"{prefix}_report.json").read_text())
        assert json.dumps(report)  # written whole
    # Scored on exactly the input (the ranks' padding duplicates dropped): the same gold counts.
    one, two = results(runs["one"]), results(runs["two"])
    assert two[f"{prefix}_number"] == one[f"{prefix}_number"] > 0
    assert two[f"{prefix}_samples"] == one[f"{prefix}_samples"] == len(expected)


def test_word_level_scores_match_one_process(runs):
    one, two = results(runs["one"]), results(runs["two"])
    for key in ("eval_accuracy", "eval_f1", "eval_precision", "eval_recall",
                "predict_accuracy", "predict_f1", "predict_precision", "predict_recall"):
        assert two[key] == pytest.approx(one[key], abs=0.02), key


def test_losses_match_one_process(runs):
    one, two = results(runs["one"]), results(runs["two"])
    for key in ("train_loss", "eval_loss", "predict_loss"):
        assert two[key] == pytest.approx(one[key], rel=0.05), key
