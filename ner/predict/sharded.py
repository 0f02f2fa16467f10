"""Tagging a file in chunks, spread over processes (``accelerate launch -m ner predict``) and resumable.

Every process reads the input stream itself (cheap next to the model on a CPU; on fast GPUs it is what
bounds the scaling, see README) and cuts it into the same chunks (``--chunk_size`` inputs, with document
context cut only where a document starts), so the chunks are numbered alike everywhere without sending
inputs between processes. The chunks not finished by an earlier run are dealt round-robin: process ``r``
of ``n`` tags the ``j``-th of them when ``j % n == r``.

A tagged chunk is written to a work folder beside the output, ``<output>.parts/chunk-00000012``, as a
whole (temporary file, fsync, rename). The main process appends the finished chunks, in chunk order,
to ``<output>.parts/merged``, then records how far it got (``merged.json``: chunks and bytes, written
after those bytes are on disk), then deletes the parts it appended; once every chunk is in, ``merged``
is renamed over the output and the work folder removed. Killed at any point (``kill -9`` included) and
started again with the same command, a run cuts ``merged`` back to the recorded size, skips the chunks
already merged or written, and tags the rest, so the output is byte for byte an uninterrupted run's.
``manifest.json`` holds what decides the output (input file, its size and mtime, model files, options);
a run with other values is refused instead of mixing outputs. The number of processes is not in it:
a run may be resumed with more or fewer.

The processes meet only at barriers (start and end) of accelerate's ``PartialState``; nothing but the
part files passes between them, and each holds one chunk at a time, whatever the size of the corpus.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from accelerate import PartialState
import torch
from tqdm.auto import tqdm

from ner.files import atomic_writer
from ner.predict.io import read_records, write_records
from ner.predict.predictor import chunks

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MERGED = "merged"
PROGRESS = "merged.json"
LOCK = "lock"
PART = re.compile(r"chunk-(\d{8,})")
# What decides the model's tags: config, tokenizer files, weights.
MODEL_FILES = re.compile(r"model\.onnx|decoding\.safetensors|calibration\.json|config\.json|tokenizer(_config)?\.json|special_tokens_map\.json|vocab\.txt|.*\.model"
                         r"|(pytorch_)?model.*\.(safetensors|bin|json)")


def part_name(index: int) -> str:
    return f"chunk-{index:08d}"


def work_folder(output: str | os.PathLike) -> Path:
    """``<output>.parts``, beside the output (so the final rename stays on one file system)."""
    output = Path(output)
    return output.parent / f"{output.name}.parts"


# --- chunks: the same in every process ------------------------------------------------------------


def input_chunks(records: Iterable[Any], chunk_size: int, *, with_context: bool) -> Iterator[list[Any]]:
    """The records in chunks of about ``chunk_size``; with document context, cut only before a document's first
    record, so every document is tagged with its whole context. Depends on the input alone."""
    if chunk_size < 1:
        raise ValueError(f"--chunk_size must be at least 1, not {chunk_size}")
    boundary = (lambda record: record.doc_start or record.document is None) if with_context else (lambda record: True)
    return chunks(records, chunk_size, boundary=boundary)


def tag_chunk(predictor: Any, chunk: list[Any], out: TextIO, output_format: str) -> None:
    """Tag one chunk of records and write it: the one place both the 1-process stream and the parts do it."""
    documents = None
    if predictor.config.context_size > 0:
        # A record outside any document gets an id of its own (negative, unlike the documents').
        documents = [r.document if r.document is not None else -1 - i for i, r in enumerate(chunk)]
    tagged = predictor.tag([r.words for r in chunk], documents=documents)
    write_records(out, chunk, tagged, predictor, output_format)


def deal(
    chunks: Iterable[list[Any]], *, rank: int, world_size: int, done: Callable[[int], bool]
) -> Iterator[tuple[int, list[Any], int | None]]:
    """``(index, chunk, owner)`` for each chunk: ``owner`` is None for a chunk ``done`` already, else the process
    that tags it. Chunks still to do are dealt round-robin, so a resumed run shares the rest evenly."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), not {rank}")
    todo = 0
    for index, chunk in enumerate(chunks):
        if done(index):
            yield index, chunk, None
        else:
            yield index, chunk, todo % world_size
            todo += 1


# --- the work folder: manifest, parts, merged output ----------------------------------------------


def manifest(
    predictor: Any, model_dir: str, input_path: str, *, input_format: str, output_format: str, chunk_size: int,
    text_per_file: bool,
) -> dict[str, Any]:
    """What decides the output bytes: a resumed run must have the same, or its chunks would not fit together."""
    stat = os.stat(input_path)
    model = Path(model_dir)
    files = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(model.iterdir()) if MODEL_FILES.fullmatch(p.name)}
    return {
        "input": os.path.abspath(input_path), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
        "model": str(model.resolve()), "model_files": files,
        "input_format": input_format, "output_format": output_format, "text_per_file": text_per_file,
        "chunk_size": chunk_size, "batch_size": predictor.batch_size, "max_seq_length": predictor.max_seq_length,
        "stride": predictor.stride, "precision": str(predictor.autocast or "float32"), "device_type": predictor.device.type,
        "min_confidence": predictor.min_confidence,
    }


def manifest_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [
        f"{key} {saved.get(key)!r} there, {current.get(key)!r} now"
        for key in dict.fromkeys([*saved, *current]) if saved.get(key) != current.get(key)
    ]


def _write_json(path: Path, value: dict[str, Any]) -> None:
    with atomic_writer(path) as out:
        json.dump(value, out, indent=1)


def _parts(folder: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := PART.fullmatch(p.name)))


class Merger:
    """The main process's side: ``merged`` grows by the finished chunks in order, ``merged.json`` says how far."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MERGED
        progress = json.loads((folder / PROGRESS).read_text()) if (folder / PROGRESS).exists() else {}
        self.chunks, self.bytes = progress.get("chunks", 0), progress.get("bytes", 0)
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < self.bytes:
            # Only after the final rename (killed before the folder was removed): the chunks are gone; start over.
            logger.warning("%s is shorter than %s records; tagging everything again", self.path, PROGRESS)
            for index in _parts(folder):
                (folder / part_name(index)).unlink()
            self.chunks = self.bytes = 0
        if self.path.exists():
            os.truncate(self.path, self.bytes)  # bytes appended after the last record: killed mid-append
        else:
            self.path.touch()
        for index in _parts(folder):
            if index < self.chunks:
                (folder / part_name(index)).unlink()  # merged already; killed before deleting it
        _write_json(folder / PROGRESS, {"chunks": self.chunks, "bytes": self.bytes})
        self.stream = self.path.open("ab")

    def advance(self) -> list[int]:
        """Append the parts that continue ``merged`` without a gap; returns their chunk indices."""
        added: list[int] = []
        while (part := self.folder / part_name(self.chunks + len(added))).exists():
            with part.open("rb") as source:
                shutil.copyfileobj(source, self.stream, 1 << 20)
            added.append(self.chunks + len(added))
        if added:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.chunks, self.bytes = self.chunks + len(added), self.stream.tell()
            _write_json(self.folder / PROGRESS, {"chunks": self.chunks, "bytes": self.bytes})
            for index in added:
                (self.folder / part_name(index)).unlink()
        return added

    def finish(self, output: str | os.PathLike, total: int) -> None:
        """Rename ``merged`` over ``output`` once it holds all ``total`` chunks, then remove the work folder."""
        self.advance()
        self.stream.close()
        if self.chunks != total:
            raise RuntimeError(f"{self.folder}: chunk {self.chunks} of {total} was never written; run the command again")
        os.replace(self.path, output)
        for name in (PROGRESS, MANIFEST, LOCK):
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
        self.folder.rmdir()


def _lock(folder: Path) -> Any:
    """Hold ``folder/lock`` for the run (released by the kernel when the process dies, kill -9 included)."""
    import fcntl  # Unix only: imported where the lock is taken, so that the module imports everywhere

    handle = (folder / LOCK).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ValueError(f"{folder} is in use by another run writing the same output; wait for it to end or stop it") from None
    return handle


def _prepare(folder: Path, expected: dict[str, Any]) -> None:
    """Main process, under the lock: a new folder gets the manifest; a resumed one is left for the check after."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):
        stale.unlink()  # a part or record being written when a run was killed
    merged = folder / MERGED
    nothing_done = not _parts(folder) and (not merged.exists() or merged.stat().st_size == 0)
    if (folder / MANIFEST).exists() and nothing_done:
        saved = json.loads((folder / MANIFEST).read_text())
        if manifest_differences(saved, expected):
            # Nothing tagged yet (e.g. stopped by a bad line, since fixed): nothing to protect.
            for name in (MANIFEST, MERGED, PROGRESS):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
    if not (folder / MANIFEST).exists():
        if not nothing_done:
            raise ValueError(f"{folder} holds chunks but no {MANIFEST}, so they cannot be checked against this run; "
                             "delete the folder to start over")
        _write_json(folder / MANIFEST, expected)


def _check(folder: Path, expected: dict[str, Any]) -> None:
    saved = json.loads((folder / MANIFEST).read_text())
    differences = manifest_differences(saved, expected)
    if differences:
        raise ValueError(
            f"{folder} holds an unfinished run with other settings ({'; '.join(differences)}): rerun with the "
            f"settings of that run to resume it, or delete {folder} to start over"
        )


# --- progress -------------------------------------------------------------------------------------


def estimate_inputs(path: str, input_format: str, text_per_file: bool) -> int:
    """About how many inputs ``path`` holds, from a byte scan (no parsing), for the progress bar's total and ETA:
    non-blank lines (text, JSON lines) or blank-line-separated groups less ``-DOCSTART-`` lines (CoNLL)."""
    if text_per_file:
        return 1
    lines = blank = docstarts = 0
    end = b"\n"  # the bytes before a block, as if a newline preceded the file
    with open(path, "rb") as stream:
        while block := stream.read(1 << 22):
            joined = end[-1:] + block  # a blank line may start at the block boundary
            lines += block.count(b"\n")
            blank += joined.count(b"\n\n") + joined.count(b"\n\r\n")
            docstarts += joined.count(b"-DOCSTART-")
            end = (end + block)[-4:]
    if not end.endswith(b"\n"):
        lines += 1
    if input_format == "conll":
        return max(blank - docstarts, 0) + (not end.endswith((b"\n\n", b"\n\r\n")))
    return max(lines - blank, 0)


class Progress:
    """The main process's bar: inputs merged this run, sentences/s and ETA; chunks reused from a killed run are
    taken off the estimated total instead of counted, so the rate stays this run's."""

    def __init__(self, path: str, input_format: str, text_per_file: bool, enabled: bool) -> None:

        self.bar = tqdm(desc=f"Tagging {Path(path).name}", unit=" inputs", disable=not enabled, dynamic_ncols=True)
        self.estimate: int | None = None
        self.reused = 0
        if enabled:
            def scan() -> None:
                self.estimate = estimate_inputs(path, input_format, text_per_file)

            threading.Thread(target=scan, name="count-inputs", daemon=True).start()

    def update(self, tagged: int = 0, reused: int = 0) -> None:
        self.reused += reused
        if self.estimate is not None:
            self.bar.total = max(self.estimate - self.reused, self.bar.n + tagged)
        if tagged:
            self.bar.update(tagged)
        elif reused:
            self.bar.set_postfix(reused=self.reused, refresh=False)

    def close(self) -> None:
        self.bar.total = self.bar.n
        self.bar.close()


# --- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneProcess:
    """The state of a run not started by a launcher: no process group, and accelerate's state left untouched (its
    ``PartialState`` is a process-wide singleton that would keep ``cpu=True`` for a Trainer run later in-process)."""

    num_processes: int = 1
    process_index: int = 0
    is_main_process: bool = True

    def wait_for_everyone(self) -> None:
        pass


def process_state(device: str | None, output: str) -> tuple[Any, str | None]:
    """This process's place in the run and the device it tags on: under ``accelerate launch`` (torchrun), accelerate's
    ``PartialState``: each process takes its own GPU (``cuda:LOCAL_RANK``) or, on CPUs, joins a gloo group."""

    if not torch.distributed.is_torchelastic_launched():
        return OneProcess(), device

    cpu = torch.device(device).type == "cpu" if device else not torch.cuda.is_available()
    # cpu=True: without it accelerate leaves each process on a CPU-only machine alone (world size 1).
    state = PartialState(cpu=cpu)
    if state.num_processes > 1:
        if output == "-":
            raise ValueError(f"--output - (standard output) works with one process, not {state.num_processes}: give "
                             "--output FILE (the processes write chunks that are merged in order, and a killed run resumes)")
        if device is not None and not cpu:
            raise ValueError(f"--device {device} would put all {state.num_processes} processes on one device; leave "
                             "--device out (each process takes its own GPU) or choose GPUs with CUDA_VISIBLE_DEVICES")
        device = "cpu" if cpu else str(state.device)
    return state, device


def predict_to_file(
    predictor: Any,
    input_path: str,
    output: str,
    *,
    state: Any,
    model_dir: str,
    input_format: str,
    output_format: str | None = None,
    chunk_size: int = 2048,
    text_per_file: bool = False,
    progress: bool = True,
) -> int:
    """Tag ``input_path`` into ``output`` with this process's share of the chunks (``state``: accelerate's
    ``PartialState``); resumes an unfinished run of the same command. Returns the number of inputs."""
    output_format = output_format or ("conll" if input_format == "conll" else "jsonl")
    folder = work_folder(output)
    expected = manifest(predictor, model_dir, input_path, input_format=input_format, output_format=output_format,
                        chunk_size=chunk_size, text_per_file=text_per_file)
    main = state.is_main_process
    lock = merger = None
    try:
        if main:
            folder.mkdir(parents=True, exist_ok=True)
            lock = _lock(folder)
            _prepare(folder, expected)
        state.wait_for_everyone()
        _check(folder, expected)
        if main:
            merger = Merger(folder)
        state.wait_for_everyone()  # every process sees the same finished chunks before any writes
        merged = json.loads((folder / PROGRESS).read_text())["chunks"]
        written = set(_parts(folder))
        state.wait_for_everyone()
        count = _run(predictor, input_path, folder, state, merger, output_format=output_format,
                     records=read_records(input_path, input_format, text_per_file=text_per_file),
                     chunk_size=chunk_size, done=lambda i: i < merged or i in written,
                     progress=Progress(input_path, input_format, text_per_file, enabled=progress and main))
        if merger is not None:
            merger.finish(output, count[0])
        return count[1]
    finally:
        if merger is not None and not merger.stream.closed:
            merger.stream.close()
        if lock is not None:
            lock.close()


def _run(
    predictor: Any, input_path: str, folder: Path, state: Any, merger: Merger | None, *, output_format: str,
    records: Iterable[Any], chunk_size: int, done: Callable[[int], bool], progress: Progress,
) -> tuple[int, int]:
    """Tag this process's chunks into part files; the main process merges as it goes. Returns (chunks, inputs)."""
    passed: deque[tuple[int, int, bool]] = deque()  # main: chunks passed, not merged yet: (index, inputs, tagged now)
    tagged = tagged_inputs = reused = chunks = inputs = 0
    try:
        stream = input_chunks(records, chunk_size, with_context=predictor.config.context_size > 0)
        for index, chunk, owner in deal(stream, rank=state.process_index, world_size=state.num_processes, done=done):
            chunks, inputs = index + 1, inputs + len(chunk)
            if owner is None:
                reused += 1
            elif owner == state.process_index:
                with atomic_writer(folder / part_name(index)) as out:
                    tag_chunk(predictor, chunk, out, output_format)
                tagged, tagged_inputs = tagged + 1, tagged_inputs + len(chunk)
            if merger is not None:
                passed.append((index, len(chunk), owner is not None))
                _merge(merger, passed, progress)
        state.wait_for_everyone()  # every part is written
        if merger is not None:
            _merge(merger, passed, progress)
    finally:
        progress.close()
    logger.info("Process %d of %d tagged %d chunks (%d inputs); %d chunks were done by an earlier run",
                state.process_index, state.num_processes, tagged, tagged_inputs, reused)
    return chunks, inputs


def _merge(merger: Merger, passed: deque[tuple[int, int, bool]], progress: Progress) -> None:
    """Merge what is finished; count the passed chunks now merged (a later one may be merged before main passes it)."""
    merger.advance()
    while passed and passed[0][0] < merger.chunks:
        _, inputs, fresh = passed.popleft()
        if fresh:
            progress.update(tagged=inputs)
        else:
            progress.update(reused=inputs)
