"""Which checkpoint a run resumes from: only a complete one, and only one of the run it continues.

``--overwrite_output_dir`` trains from scratch in a folder whose old ``checkpoint-*`` folders stay there,
so "the newest checkpoint" may belong to an earlier run. Each training run therefore has a run id: a
fresh run draws a new one, a resumed run keeps its checkpoint's. The id is written to ``run_id.txt``
in the output folder when the run starts, and ``RunStamp`` stamps it in every checkpoint's
``trainer_state.json`` (the Trainer's own ``stateful_callbacks`` entry). That file is the last one
a checkpoint gets, so a checkpoint is stamped exactly when it is complete: no window where it is whole
but unstamped. ``--resume_from_checkpoint last`` takes the newest complete checkpoint whose stamp is
the folder's run id and names every checkpoint it passes over, and why.

A checkpoint without a stamp was written by an older version of this project. In a folder with no
``run_id.txt`` (the whole folder predates run ids) there is nothing to tell runs apart by, so ``last``
behaves as before, with a warning; continuing such a checkpoint leaves the folder without
``run_id.txt`` (its new checkpoints are stamped), so ``last`` keeps working for that run until a fresh
start writes one. In a folder that has one, the current run started after the unstamped checkpoint
was written, so that checkpoint belongs to an earlier run and is passed over.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import uuid
import zipfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import get_last_checkpoint

from ner.files import atomic_writer

logger = logging.getLogger(__name__)

RUN_ID_FILE = "run_id.txt"
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
WEIGHTS = re.compile(r"(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)")


class RunStamp(TrainerCallback, ExportableState):
    """Stamps the run id into every checkpoint's ``trainer_state.json`` (``stateful_callbacks["RunStamp"]``).

    An ``ExportableState`` callback: the Trainer writes ``state()`` into each checkpoint's trainer state
    by itself. Register it with ``trainer.add_callback(start_run(args, checkpoint))`` before ``train()``.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def state(self) -> dict[str, Any]:
        return {"args": {"run_id": self.run_id}, "attributes": {}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A resumed checkpoint from an older version has no entry for this callback, and the Trainer's
        # checkpoint save looks the entry up by name (a KeyError without this).
        state.stateful_callbacks[type(self).__name__] = self.state()


def read_run_id(output_dir: str | os.PathLike) -> str | None:
    """The run id recorded in ``output_dir/run_id.txt``, or None when there is none (a folder of an older version)."""
    try:
        text = (Path(output_dir) / RUN_ID_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def checkpoint_run_id(folder: str | os.PathLike) -> str | None:
    """The run id stamped in ``folder/trainer_state.json``, or None (no stamp, or no readable state)."""
    try:
        with open(Path(folder) / "trainer_state.json", encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    stamp = state.get("stateful_callbacks", {}).get(RunStamp.__name__) if isinstance(state, dict) else None
    run_id = stamp.get("args", {}).get("run_id") if isinstance(stamp, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def start_run(args: Any, checkpoint: str | None) -> RunStamp:
    """This training run's id, recorded in the output folder; returns the callback that stamps it in checkpoints.

    Resuming keeps the checkpoint's run id (a new one when the checkpoint has none); a fresh start draws
    a new id, which makes every checkpoint already in the folder belong to an earlier run. Only a
    process that saves (``args.should_save``) writes ``run_id.txt``, and only when ``args.do_train``;
    not when it continues an unstamped checkpoint in a folder without one (see the module docstring).
    """
    stamped = checkpoint_run_id(checkpoint) if checkpoint else None
    run_id = stamped or uuid.uuid4().hex
    older_version = checkpoint is not None and stamped is None and read_run_id(args.output_dir) is None
    if args.do_train and args.should_save and not older_version:
        with atomic_writer(Path(args.output_dir) / RUN_ID_FILE) as out:
            out.write(run_id + "\n")
        logger.info("Run id %s%s", run_id, f" (continued from {os.path.basename(checkpoint)})" if checkpoint else "")
    return RunStamp(run_id)


def incomplete(folder: str | os.PathLike, step: int | None) -> str | None:
    """Why ``folder`` cannot be resumed from, or None when it is a complete checkpoint (of ``step``, if given).

    The Trainer writes ``trainer_state.json`` last (after the weights, optimizer, scheduler and RNG
    states), not atomically, so a folder without a readable one for step N, or without whole model
    weights, was cut off by a kill.
    """
    folder = str(folder)
    try:
        with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        return "no trainer_state.json (it is written last: the run stopped while saving)"
    except (OSError, ValueError) as e:
        return f"trainer_state.json is unreadable or cut off ({e.__class__.__name__})"
    found = state.get("global_step") if isinstance(state, dict) else None
    if step is not None and found != step:
        return f"trainer_state.json is for step {found}, not {step}"
    names = os.listdir(folder)
    # DeepSpeed (global_step*/) and FSDP (pytorch_model_fsdp*) keep sharded weights in their own files.
    if any(name.startswith(("global_step", "pytorch_model_fsdp")) for name in names):
        return None
    weights = [name for name in names if WEIGHTS.fullmatch(name)]
    if not weights:
        return "no model weights (model.safetensors or pytorch_model.bin)"
    for name in weights:
        if not _whole(os.path.join(folder, name)):
            return f"{name} is cut off"
    return None


def _whole(path: str) -> bool:
    """True when a weights file is complete: a zip with its directory, or safetensors with all its data."""
    if path.endswith(".bin"):
        return zipfile.is_zipfile(path)  # torch.save's zip ends with its directory
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return os.path.getsize(path) >= 8 + length + end
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError):
        return False


def _foreign(folder: str, run_id: str) -> str | None:
    """Why a complete checkpoint is not of the run ``run_id``, or None when it is."""
    stamp = checkpoint_run_id(folder)
    if stamp == run_id:
        return None
    if stamp is None:
        return f"written by an earlier run (no run id: an older version wrote it), not by run {run_id} of {RUN_ID_FILE}"
    return f"written by another run ({stamp}), not by run {run_id} of {RUN_ID_FILE}"


def _resume_last(output_dir: str) -> str:
    """``--resume_from_checkpoint last``: the newest complete checkpoint of the folder's current run."""
    run_id = read_run_id(output_dir)
    steps = sorted(
        (int(match.group(1)), name)
        for name in os.listdir(output_dir)
        if (match := CHECKPOINT.fullmatch(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    skipped: list[tuple[str, str, str]] = []  # (name, why, kind)
    for step, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        reason = incomplete(folder, step)
        if reason is not None:
            skipped.append((name, reason, "incomplete"))
            continue
        other_run = _foreign(folder, run_id) if run_id is not None else None
        if other_run is not None:
            skipped.append((name, other_run, "foreign"))
            continue
        for other, why, kind in skipped:
            if kind == "incomplete":
                logger.warning("Skipping %s: incomplete, %s. Resuming from %s; delete %s.", other, why, name, other)
            else:
                logger.warning(
                    "Skipping %s: %s (--overwrite_output_dir leaves old checkpoints in place). Resuming from %s.",
                    other, why, name,
                )
        if run_id is None:
            logger.warning(
                "%s has no %s (an older version wrote it), so its checkpoints cannot be told apart by run; "
                "resuming from the newest complete one, %s.", output_dir, RUN_ID_FILE, name,
            )
        return folder
    raise ValueError(
        f"--resume_from_checkpoint last: no complete checkpoint in {output_dir} ("
        + "; ".join(f"{name}: {why}" for name, why, _ in skipped)
        + "). Pass --overwrite_output_dir to start again there, name a checkpoint with "
        "--resume_from_checkpoint PATH, or choose another --output_dir."
    )


def resolve_checkpoint(args: Any) -> str | None:
    """The checkpoint to resume from: ``--resume_from_checkpoint PATH|last``; refuse to mix runs silently.

    ``last`` is the newest *complete* ``checkpoint-N`` of the run recorded in ``run_id.txt``; half-written
    checkpoints and those of earlier runs are passed over, each named in a warning. An explicit
    incomplete PATH is refused (the Trainer would restart at step 0); an explicit complete PATH is
    taken whatever run wrote it. Without the flag, a folder that already holds checkpoints is refused
    unless ``--overwrite_output_dir`` is given.
    """
    requested = args.resume_from_checkpoint
    last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    if requested == "last":
        if last is None:
            raise ValueError(
                f"--resume_from_checkpoint last: no checkpoint-* folder in {args.output_dir}. "
                "Leave the flag out to start a new run."
            )
        return _resume_last(args.output_dir)
    if requested:
        if not os.path.isdir(requested):
            raise ValueError(f"--resume_from_checkpoint {requested}: no such folder.")
        match = CHECKPOINT.fullmatch(os.path.basename(os.path.normpath(requested)))
        reason = incomplete(requested, int(match.group(1)) if match else None)
        if reason is not None:
            raise ValueError(
                f"--resume_from_checkpoint {requested}: not a complete checkpoint, {reason}. Pick an older "
                "checkpoint-* folder or pass --resume_from_checkpoint last (to start from a model folder's "
                "weights instead, pass it as --model_name_or_path)."
            )
        return requested
    if last is not None and args.do_train and not args.overwrite_output_dir:
        raise ValueError(
            f"{args.output_dir} already holds checkpoints ({os.path.basename(last)} is the newest). "
            "Pass --resume_from_checkpoint last to continue that run, --overwrite_output_dir to start again "
            "there, or choose another --output_dir."
        )
    return None
