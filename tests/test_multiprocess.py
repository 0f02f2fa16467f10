"""Two processes (DDP over gloo, on the CPU) against one, end to end through ``accelerate launch``.

``accelerate launch --multi_gpu --num_processes 2 ... run_ner.py --use_cpu`` trains the session's
``tagger`` (a tiny BERT that finds nearly every entity of its corpus) a little further: 12 steps at a
small learning rate on 41 sentences (global batch 8, so one rank gets fewer in each epoch's last batch),
with evaluation and checkpoints inside training, then scores dev (41 sentences) and test (61): odd
numbers, so the ranks' shares differ and one is padded with a duplicate. The launch goes through a
small recorder that notes, per rank, every file renamed into place (all of the project's outputs are
written atomically, with ``os.replace``) and every CoNLL file parsed; it then runs ``run_ner.py``
unchanged as ``__main__``.

What is compared with one process: the model the 2-process run saved predicts dev and test again in
one process (``run_ner.main``, prediction only, length-sorted batches). The predictions files must be
the same line for line (word, gold, predicted tag), and so the scores. Since the model tags nearly
every entity, predictions put back in the wrong order, dropped or duplicated by the ranks' padding
would change the predicted column. The training itself is not compared with a 1-process training:
each rank averages the loss over its own tokens and gloo sums the gradients in another order, so the
weights differ a little; the test only asks that the 2-process run's model still tags.

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

from conftest import REPO, TAGGER_MIN_F1, Tagger, torch_threads
from ner.data.conll import read_conll
from run_ner import main
from tagger_data import SPLIT_SIZES

pytestmark = pytest.mark.slow  # about 12 s on 2 cores, after the session tagger; still runs in CI

TIMEOUT_S = 300  # a deadlocked rank fails the test instead of hanging CI
N_TRAIN = 41  # odd: global batch 8, rank 1 gets one sentence fewer in each epoch's last batch
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
import ner.data.conll
read_conll = ner.data.conll.read_conll
def recorded_read_conll(path, **kwargs):
    note("parsed", os.path.abspath(path))
    return read_conll(path, **kwargs)
ner.data.conll.read_conll = recorded_read_conll
try:
    runpy.run_path(sys.argv[0], run_name="__main__")  # ends with sys.exit(status)
finally:
    import torch.distributed as dist
    note("backend", dist.get_backend() if dist.is_initialized() else "none")
"""


def job(tagger: Tagger, out: Path) -> list[str]:
    return [
        str(REPO / "run_ner.py"),
        "--model_name_or_path", str(tagger.out),
        "--train_file", str(tagger.data / "train.txt"),
        "--validation_file", str(tagger.data / "dev.txt"),
        "--test_file", str(tagger.data / "test.txt"),
        "--output_dir", str(out),
        "--data_cache_dir", str(out.parent / "cache"),
        "--do_train", "--do_eval", "--do_predict",
        "--max_train_samples", str(N_TRAIN),
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4",
        "--learning_rate", "1e-3",
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
def runs(tagger, tmp_path_factory) -> dict[str, Path]:
    """The 2-process run, then its model predicting in one process; returns their output folders."""
    root = tmp_path_factory.mktemp("multiprocess")
    recorder = root / "recorder.py"
    recorder.write_text(RECORDER)
    # accelerate reads $HF_HOME/accelerate/default_config.yaml under --multi_gpu: keep a developer's out.
    env = {**ENV, "HF_HOME": str(root / "hf-home")}
    (root / "records").mkdir()
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "--num_cpu_threads_per_process", "1",
    ]
    started = time.monotonic()
    process = start([*launch, str(recorder), str(root / "records"), *job(tagger, root / "two")], root / "log.txt", env)
    try:
        finish(process, root / "log.txt", started + TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    print(f"\n2-process run: {time.monotonic() - started:.1f} s")
    with torch_threads(1):
        main([
            "--model_name_or_path", str(root / "two"),
            "--validation_file", str(tagger.data / "dev.txt"), "--test_file", str(tagger.data / "test.txt"),
            "--output_dir", str(root / "one"), "--data_cache_dir", str(root / "cache-one"),
            "--do_eval", "--do_predict", "--per_device_eval_batch_size", "16", "--report_to", "none",
        ])
    return {"root": root, "two": root / "two", "one": root / "one"}


def results(folder: Path) -> dict[str, float]:
    return json.loads((folder / "all_results.json").read_text())


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
    state = json.loads((runs["two"] / "trainer_state.json").read_text())
    # 41 sentences, global batch 8: 6 steps an epoch, the last one 1 sentence (rank 1 short).
    assert state["global_step"] == 12 and state["epoch"] == pytest.approx(2.0)
    assert [entry["step"] for entry in state["log_history"] if "eval_f1" in entry] == [6, 12]
    assert sorted(p.name for p in (runs["two"] / "checkpoint-12").glob("rng_state*")) == [
        "rng_state_0.pth", "rng_state_1.pth",
    ]
    rows = records(runs["root"] / "records")
    assert sorted(rows) == ["rank-0", "rank-1"]
    backends = {rank: [path for kind, path in notes if kind == "backend"] for rank, notes in rows.items()}
    assert backends == {"rank-0": ["gloo"], "rank-1": ["gloo"]}


def test_datasets_are_parsed_once_by_the_main_process(runs, tagger):
    parsed = {rank: [path for kind, path in rows if kind == "parsed"] for rank, rows in records(runs["root"] / "records").items()}
    expected = sorted(str(tagger.data / f) for f in ("train.txt", "dev.txt", "test.txt"))
    assert sorted(parsed.pop("rank-0")) == expected
    assert parsed == {"rank-1": []}  # rank 1 read the Arrow cache rank 0 wrote
    assert (runs["root"] / "log.txt").read_text().count(f"Generating train split: {SPLIT_SIZES['train']} examples") == 1


def test_outputs_are_written_once_by_rank_0(runs):
    out = runs["two"]
    written = {rank: [path for kind, path in rows if kind == "wrote"] for rank, rows in records(runs["root"] / "records").items()}
    assert not [path for path in written.get("rank-1", []) if path.startswith(str(out))]
    ours = sorted(Path(path).relative_to(out).as_posix() for path in written["rank-0"] if path.startswith(str(out)))
    for name in ("eval_predictions.txt", "predict_predictions.txt", "eval_report.md", "eval_report.json",
                 "predict_report.md", "predict_report.json", "README.md", "training_args.json"):
        assert ours.count(name) == 1, (name, ours)
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("prefix, source", [("eval", "dev.txt"), ("predict", "test.txt")])
def test_predictions_have_one_line_per_input_word(runs, tagger, prefix, source):
    expected = list(read_conll(tagger.data / source))
    assert len(expected) % 2 == 1  # the ranks' shares differ: one is padded with a duplicate
    sentences = prediction_sentences(runs["two"] / f"{prefix}_predictions.txt")
    assert [[row[0] for row in s] for s in sentences] == [s.words for s in expected]
    assert [[row[1] for row in s] for s in sentences] == [s.tags for s in expected]
    assert json.loads((runs["two"] / f"{prefix}_report.json").read_text())  # written whole
    assert results(runs["two"])[f"{prefix}_samples"] == len(expected)


@pytest.mark.parametrize("prefix", ["eval", "predict"])
def test_two_process_predictions_equal_one_process_line_for_line(runs, prefix):
    two = (runs["two"] / f"{prefix}_predictions.txt").read_text(encoding="utf-8").splitlines()
    one = (runs["one"] / f"{prefix}_predictions.txt").read_text(encoding="utf-8").splitlines()
    assert two == one  # word, gold and predicted tag on every line
    rows = [line.split("\t") for line in two if line and not line.startswith("-DOCSTART-")]
    gold = sum(row[1] != "O" for row in rows)
    predicted = sum(row[2] != "O" for row in rows)
    right = sum(row[2] == row[1] != "O" for row in rows)
    # A model that tags: misplaced predictions could not go unnoticed.
    assert predicted >= 0.9 * gold and right >= 0.9 * gold > 100
    # Scores are computed from these predictions: the same in both runs, to the last digit.
    for key in ("f1", "precision", "recall", "accuracy", "number"):
        assert results(runs["two"])[f"{prefix}_{key}"] == results(runs["one"])[f"{prefix}_{key}"], key


def test_two_process_model_still_tags(runs):
    """12 small steps from the session tagger: the 2-process run's own model still finds the entities."""
    two = results(runs["two"])
    assert two["train_loss"] > 0
    for key in ("eval_f1", "predict_f1"):
        assert two[key] >= TAGGER_MIN_F1, (key, two[key])
