"""Kill and resume: a run killed with SIGKILL while writing a checkpoint, resumed with
``--resume_from_checkpoint last``, ends bitwise equal to an uninterrupted run with the same seed;
``last`` never picks a half-written checkpoint, nor one of an earlier run left in a folder reused with
``--overwrite_output_dir`` (ner/training/checkpoints.py's ``resolve_checkpoint`` and run ids).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import DEMO_DATA, REPO
from ner.training.checkpoints import (
    RUN_ID_FILE,
    RunStamp,
    checkpoint_run_id,
    read_run_id,
    resolve_checkpoint,
    start_run,
)
from ner.training.arguments import NerTrainingArguments

# Runs run_ner.py as __main__ after making the Trainer stop, at one step, in the middle of writing its
# checkpoint: the model weights are written, the optimizer, scheduler, RNG and trainer state are not yet.
# It then says so through a file and waits to be killed, so the kill lands at the worst moment every time.
PAUSE_WHILE_SAVING = """
import os, runpy, sys, time
from transformers import Trainer

signal_file, pause_step = sys.argv[1], int(sys.argv[2])
save = Trainer._save_optimizer_and_scheduler

def pause(self, output_dir):
    if self.state.global_step == pause_step:
        open(signal_file, "w").close()
        time.sleep(600)
    return save(self, output_dir)

Trainer._save_optimizer_and_scheduler = pause
sys.argv = sys.argv[3:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""

TIMEOUT_S = 300  # per run_ner.py process; a hang fails the test instead of holding up CI
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_args(model: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    # 40 sentences, batch 8: 5 steps an epoch, so steps 4 and 8 are mid-epoch and 12 steps cross two
    # epoch boundaries; the resumed run skips batches and restores the RNG states, as a real resume does.
    return [
        str(REPO / "run_ner.py"),
        "--model_name_or_path", str(model),
        "--train_file", str(DEMO_DATA / "train.txt"),
        "--validation_file", str(DEMO_DATA / "dev.txt"),
        "--output_dir", str(out),
        "--data_cache_dir", str(cache),
        "--do_train", "--do_eval",
        "--max_train_samples", "40",
        "--per_device_train_batch_size", "8",
        "--learning_rate", "5e-3",
        "--max_steps", "12",
        "--save_strategy", "steps", "--save_steps", "4",
        "--eval_strategy", "no",
        "--logging_steps", "1",
        "--seed", "13",
        "--use_cpu",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        *extra,
    ]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def scores(out: Path) -> dict[str, float]:
    results = json.loads((out / "eval_results.json").read_text())
    return {key: value for key, value in results.items() if not key.endswith(("runtime", "per_second"))}


@pytest.mark.slow
def test_killed_while_checkpointing_then_resumed_equals_uninterrupted_run(tiny_bert, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    signal_file = tmp_path / "paused"
    driver = tmp_path / "pause_while_saving.py"
    driver.write_text(PAUSE_WHILE_SAVING)
    started = time.monotonic()
    # The uninterrupted run and the run to kill go side by side (one core each); logs go to files.
    logs = {name: tmp_path / f"{name}.log" for name in ("uninterrupted", "victim")}
    with logs["uninterrupted"].open("w") as a, logs["victim"].open("w") as b:
        uninterrupted = subprocess.Popen(
            [sys.executable, *run_args(tiny_bert, reference, tmp_path / "cache-a")],
            env=ENV, cwd=tmp_path, stdout=a, stderr=subprocess.STDOUT,
        )
        victim = subprocess.Popen(
            [sys.executable, str(driver), str(signal_file), "8", *run_args(tiny_bert, killed, tmp_path / "cache-b")],
            env=ENV, cwd=tmp_path, stdout=b, stderr=subprocess.STDOUT,
        )
    try:
        while not signal_file.exists():
            if victim.poll() is not None:
                log = logs["victim"].read_text()[-3000:]
                pytest.fail(f"run_ner.py ended (rc {victim.returncode}) before checkpoint-8:\n{log}")
            if time.monotonic() - started > TIMEOUT_S:
                pytest.fail("no checkpoint-8 within the time limit")
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        uninterrupted.wait(timeout=max(TIMEOUT_S - (time.monotonic() - started), 1))
    finally:
        for process in (victim, uninterrupted):
            if process.poll() is None:
                process.kill()
    assert victim.returncode == -signal.SIGKILL
    assert uninterrupted.returncode == 0, logs["uninterrupted"].read_text()[-3000:]

    # What the kill left: checkpoint-4 complete; checkpoint-8 with weights but nothing else, newer.
    assert (killed / "checkpoint-4" / "trainer_state.json").is_file()
    half = sorted(p.name for p in (killed / "checkpoint-8").iterdir())
    assert "model.safetensors" in half and "optimizer.pt" not in half and "trainer_state.json" not in half
    assert not (killed / "model.safetensors").exists()

    resumed = subprocess.run(
        [sys.executable, *run_args(tiny_bert, killed, tmp_path / "cache-b", "--resume_from_checkpoint", "last")],
        env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Skipping checkpoint-8: incomplete, no trainer_state.json" in resumed.stderr
    assert "Resuming from checkpoint-4" in resumed.stderr

    # Bitwise on the CPU: the same weights (final and every later checkpoint), losses and dev scores.
    for name in ("model.safetensors", "checkpoint-8/model.safetensors", "checkpoint-12/model.safetensors"):
        expected, found = tensors(reference / name), tensors(killed / name)
        assert expected.keys() == found.keys()
        unequal = [key for key in expected if not torch.equal(expected[key], found[key])]
        assert not unequal, f"{name}: {len(unequal)} of {len(expected)} tensors differ, e.g. {unequal[:3]}"
    for name in ("optimizer.pt", "scheduler.pt"):
        assert (killed / "checkpoint-8" / name).is_file()  # the half-written folder was completed
    expected_losses = losses(reference)
    assert sorted(expected_losses) == list(range(1, 13))
    assert {step: loss for step, loss in losses(killed).items() if step > 4} == {
        step: loss for step, loss in expected_losses.items() if step > 4
    }
    assert scores(killed) == scores(reference)
    assert json.loads((killed / "trainer_state.json").read_text())["global_step"] == 12
    print(f"\nkill and resume: {time.monotonic() - started:.1f} s, eval_loss {scores(reference)['eval_loss']}")


# --- which checkpoint `last` picks ---------------------------------------------------------------


def make_checkpoint(out: Path, step: int, *, files: tuple[str, ...] = ("weights", "optimizer", "state")) -> Path:
    """A checkpoint-N folder with some of the files the Trainer writes, in the order it writes them."""
    from safetensors.torch import save_file

    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if "weights" in files:
        save_file({"w": torch.zeros(4, 4)}, str(folder / "model.safetensors"))
    if "cut weights" in files:
        save_file({"w": torch.zeros(64, 64)}, str(folder / "model.safetensors"))
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    if "optimizer" in files:
        torch.save({"state": {}}, folder / "optimizer.pt")
    if "state" in files:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    if "cut state" in files:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []})[:20])
    return folder


def arguments(out: Path, resume: str | None) -> NerTrainingArguments:
    return NerTrainingArguments(output_dir=str(out), do_train=True, resume_from_checkpoint=resume, report_to="none")


@pytest.mark.parametrize(
    "newer_files, reason",
    [
        (("weights",), "no trainer_state.json"),
        (("weights", "optimizer"), "no trainer_state.json"),
        (("weights", "optimizer", "cut state"), "trainer_state.json is unreadable or cut off"),
        (("optimizer", "state"), "no model weights"),
        (("cut weights", "optimizer", "state"), "model.safetensors is cut off"),
        ((), "no trainer_state.json"),
    ],
    ids=["weights only", "no state", "state cut off", "no weights", "weights cut off", "empty folder"],
)
def test_last_never_picks_a_half_written_checkpoint(tmp_path, caplog, newer_files, reason):
    out = tmp_path / "out"
    complete = make_checkpoint(out, 4)
    make_checkpoint(out, 8, files=newer_files)
    make_checkpoint(out, 12, files=newer_files)
    with caplog.at_level("WARNING", logger="ner.training.checkpoints"):
        assert resolve_checkpoint(arguments(out, "last")) == str(complete)
    assert f"Skipping checkpoint-12: incomplete, {reason}" in caplog.text
    assert f"Skipping checkpoint-8: incomplete, {reason}" in caplog.text
    assert "Resuming from checkpoint-4" in caplog.text
    # Named explicitly, a half-written checkpoint is refused rather than restarted from step 0.
    with pytest.raises(ValueError, match=f"checkpoint-8: not a complete checkpoint, {reason}"):
        resolve_checkpoint(arguments(out, str(out / "checkpoint-8")))


def test_last_picks_the_highest_step_not_the_newest_file(tmp_path):
    out = tmp_path / "out"
    make_checkpoint(out, 10)
    make_checkpoint(out, 9)
    assert resolve_checkpoint(arguments(out, "last")) == str(out / "checkpoint-10")


def test_state_of_another_step_is_not_complete(tmp_path):
    out = tmp_path / "out"
    make_checkpoint(out, 4)
    folder = make_checkpoint(out, 8)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 4}))  # e.g. copied from another folder
    assert resolve_checkpoint(arguments(out, "last")) == str(out / "checkpoint-4")


def test_no_complete_checkpoint_says_why_and_the_fix(tmp_path):
    out = tmp_path / "out"
    make_checkpoint(out, 4, files=("weights",))
    message = r"no complete checkpoint in .*\(checkpoint-4: no trainer_state.json.*--overwrite_output_dir"
    with pytest.raises(ValueError, match=message):
        resolve_checkpoint(arguments(out, "last"))
    # Without the flag, even incomplete checkpoints mean "this folder holds a run": refused as before.
    with pytest.raises(ValueError, match="already holds checkpoints"):
        resolve_checkpoint(arguments(out, None))


def test_deepspeed_and_fsdp_checkpoints_count_as_complete(tmp_path):
    out = tmp_path / "out"
    for step, shard in ((4, "global_step4"), (8, "pytorch_model_fsdp_0")):
        folder = make_checkpoint(out, step, files=("state",))
        (folder / shard).mkdir()
    assert resolve_checkpoint(arguments(out, "last")) == str(out / "checkpoint-8")


# --- run ids: `last` continues the folder's current run only ------------------------------------


def stamp(folder: Path, run_id: str | None) -> Path:
    """Write ``run_id`` into a checkpoint's trainer state as the Trainer does for ``RunStamp`` (None: no stamp)."""
    state = json.loads((folder / "trainer_state.json").read_text())
    if run_id is not None:
        state["stateful_callbacks"] = {"RunStamp": RunStamp(run_id).state()}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    return folder


def test_last_skips_checkpoints_of_another_run_and_names_them(tmp_path, caplog):
    out = tmp_path / "out"
    for step in (4, 8):
        stamp(make_checkpoint(out, step), "run-a")
    current = stamp(make_checkpoint(out, 2), "run-b")
    (out / RUN_ID_FILE).write_text("run-b\n")
    with caplog.at_level("WARNING", logger="ner.training.checkpoints"):
        assert resolve_checkpoint(arguments(out, "last")) == str(current)
    for name in ("checkpoint-8", "checkpoint-4"):
        assert f"Skipping {name}: written by another run (run-a), not by run run-b of run_id.txt" in caplog.text
    assert "Resuming from checkpoint-2" in caplog.text
    # Named explicitly, a checkpoint of another run is the user's choice.
    assert resolve_checkpoint(arguments(out, str(out / "checkpoint-8"))) == str(out / "checkpoint-8")


def test_unstamped_checkpoints_count_only_in_a_folder_without_run_id(tmp_path, caplog):
    out = tmp_path / "out"
    make_checkpoint(out, 8)  # an older version's checkpoint: no stamp
    with caplog.at_level("WARNING", logger="ner.training.checkpoints"):
        assert resolve_checkpoint(arguments(out, "last")) == str(out / "checkpoint-8")
    assert "has no run_id.txt (an older version wrote it)" in caplog.text
    # A run of this version started in the folder since: the unstamped checkpoint is of an earlier run.
    (out / RUN_ID_FILE).write_text("run-b\n")
    message = r"no complete checkpoint in .*\(checkpoint-8: written by an earlier run \(no run id.*--overwrite"
    with pytest.raises(ValueError, match=message):
        resolve_checkpoint(arguments(out, "last"))


def test_start_run_records_a_new_id_or_keeps_the_resumed_one(tmp_path):
    out = tmp_path / "out"
    fresh = start_run(arguments(out, None), None)
    assert read_run_id(out) == fresh.run_id and len(fresh.run_id) == 32
    assert start_run(arguments(out, None), None).run_id != fresh.run_id  # each fresh start is a new run
    checkpoint = stamp(make_checkpoint(out, 4), "run-a")
    assert start_run(arguments(out, "last"), str(checkpoint)).run_id == "run-a"
    assert read_run_id(out) == "run-a"
    predict_only = NerTrainingArguments(output_dir=str(out), do_train=False, report_to="none")
    start_run(predict_only, None)
    assert read_run_id(out) == "run-a"  # only training runs write it
    older = make_checkpoint(tmp_path / "old", 4)  # an older version's folder: no stamp, no run_id.txt
    assert len(start_run(arguments(tmp_path / "old", "last"), str(older)).run_id) == 32
    assert read_run_id(tmp_path / "old") is None


def main_args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model), "--train_file", str(DEMO_DATA / "train.txt"), "--output_dir", str(out),
        "--data_cache_dir", str(out.parent / "cache"), "--do_train", "--max_train_samples", "16",
        "--per_device_train_batch_size", "4", "--save_strategy", "steps", "--eval_strategy", "no",
        "--logging_steps", "1", "--report_to", "none", "--dataloader_num_workers", "0", *extra,
    ]


@pytest.mark.integration
def test_last_resumes_the_run_that_overwrote_the_folder_not_the_earlier_one(tiny_bert, tmp_path, caplog):
    from run_ner import main

    out = tmp_path / "out"
    main(main_args(tiny_bert, out, "--max_steps", "8", "--save_steps", "4"))  # run A: checkpoint-4, checkpoint-8
    run_a = read_run_id(out)
    main(main_args(tiny_bert, out, "--max_steps", "2", "--save_steps", "2", "--overwrite_output_dir"))  # run B
    run_b = read_run_id(out)
    assert run_b != run_a
    assert {name: checkpoint_run_id(out / name) for name in ("checkpoint-2", "checkpoint-4", "checkpoint-8")} == {
        "checkpoint-2": run_b, "checkpoint-4": run_a, "checkpoint-8": run_a,
    }
    with caplog.at_level(logging.INFO):
        main(main_args(tiny_bert, out, "--max_steps", "4", "--save_steps", "2", "--resume_from_checkpoint", "last"))
    assert f"Skipping checkpoint-8: written by another run ({run_a})" in caplog.text
    assert f"Skipping checkpoint-4: written by another run ({run_a})" in caplog.text
    assert "Resuming from checkpoint-2" in caplog.text
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # from A's checkpoint-8 it would stay at step 8
    assert sorted(entry["step"] for entry in state["log_history"] if "loss" in entry) == [1, 2, 3, 4]
    assert read_run_id(out) == run_b and checkpoint_run_id(out / "checkpoint-4") == run_b  # rewritten by run B


@pytest.mark.integration
def test_a_checkpoint_of_an_older_version_resumes_and_gets_stamped(tiny_bert, tmp_path):
    from run_ner import main

    out = tmp_path / "out"
    main(main_args(tiny_bert, out, "--max_steps", "2", "--save_steps", "2"))
    state_file = out / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["RunStamp"]  # as an older version wrote it
    state_file.write_text(json.dumps(state))
    (out / RUN_ID_FILE).unlink()
    main(main_args(tiny_bert, out, "--max_steps", "4", "--save_steps", "2", "--resume_from_checkpoint", "last"))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    assert checkpoint_run_id(out / "checkpoint-4") is not None  # stamped from now on
    # Still a folder of the older version (no run_id.txt), so `last` continues this run, as before.
    assert read_run_id(out) is None
    assert resolve_checkpoint(arguments(out, "last")) == str(out / "checkpoint-4")
