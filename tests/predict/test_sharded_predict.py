"""Prediction spread over processes and resumable (ner/predict/sharded.py): the chunks each process tags, the merge in
chunk order, resuming after a crash or ``kill -9``, refusing other settings, and 2 processes over gloo.

The reference everywhere is ``predict_file`` writing to a string in one process: the stream the command
wrote before this module existed. Every other run must give the same bytes. Models are the tiny BERT with a
scaled-up random classifier (conftest's plain_model and context_model), so the output holds many entities and
their scores; a chunk tagged twice, dropped or put out of order would change it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO, WORDS, torch_threads
from ner.predict.cli import main, predict_file
from ner.predict.io import read_records
from ner.predict.predictor import NerPredictor
from ner.predict.sharded import MANIFEST, MERGED, PROGRESS, Merger, deal, estimate_inputs, input_chunks, part_name, work_folder

CHUNK = 8
TIMEOUT_S = 120  # a deadlocked rank fails the test instead of hanging CI
LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch",
    "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
    "--dynamo_backend", "no", "--main_process_port", "0", "--num_cpu_threads_per_process", "1",
]
# The command under test, slowed down per chunk when NER_TEST_CHUNK_DELAY is set (so a kill lands mid-run).
SLOW = """
import os, runpy, sys, time
delay = float(os.environ.get("NER_TEST_CHUNK_DELAY", "0"))
if delay:
    import ner.predict.predictor
    tag = ner.predict.predictor.NerPredictor.tag
    def slow(self, *args, **kwargs):
        time.sleep(delay)
        return tag(self, *args, **kwargs)
    ner.predict.predictor.NerPredictor.tag = slow
sys.argv = ["ner", *sys.argv[1:]]
runpy.run_module("ner", run_name="__main__")
"""
TALLY = re.compile(r"Process (\d+) of (\d+) tagged (\d+) chunks \((\d+) inputs\); (\d+) chunks were done by an earlier run")


def write_corpus(path: Path, documents: int, seed: int = 0) -> Path:
    """CoNLL with -DOCSTART- documents of 1-6 sentences of 2-12 words, untagged (gold column O)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(documents):
        lines += ["-DOCSTART- O", ""]
        for _ in range(rng.randint(1, 6)):
            lines += [f"{rng.choice(WORDS)} O" for _ in range(rng.randint(2, 12))] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(plain_model, context_model) -> dict[str, Path]:
    return {"plain": plain_model, "context": context_model}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "news.conll", documents=60)


def reference(model: Path, source: Path, output_format: str = "jsonl") -> bytes:
    """One process, ``predict_file`` into a string: the bytes every run must write."""
    out = io.StringIO()
    with torch_threads(1):
        predictor = NerPredictor(str(model), device="cpu", batch_size=16)
        predict_file(predictor, str(source), out, output_format=output_format, chunk_size=CHUNK, progress=False)
    return out.getvalue().encode("utf-8")


def command(model: Path, source: Path, output: Path, *extra: str) -> list[str]:
    return ["predict", "--model", str(model), "--input", str(source), "--output", str(output), "--device", "cpu",
            "--batch_size", "16", "--chunk_size", str(CHUNK), "--output_format", "jsonl", *extra]


def tallies(text: str) -> dict[int, tuple[int, int, int, int]]:
    """Per process: (world size, chunks tagged, inputs tagged, chunks done by an earlier run)."""
    return {int(m[1]): (int(m[2]), int(m[3]), int(m[4]), int(m[5])) for m in TALLY.finditer(text)}


# --- which process tags which chunk ---------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("done", [set(), {0, 1, 2}, {1, 4, 5, 9}])
def test_each_chunk_is_tagged_by_exactly_one_process_evenly(world_size, done):
    chunks = [[i] for i in range(10)]
    owners: dict[int, list[int]] = {}
    for rank in range(world_size):
        rows = list(deal(chunks, rank=rank, world_size=world_size, done=done.__contains__))
        assert [(i, c) for i, c, _ in rows] == list(enumerate(chunks))  # every process passes every chunk, in order
        assert [i for i, _, owner in rows if owner is None] == sorted(done)
        owners[rank] = [i for i, _, owner in rows if owner == rank]
        # Every process computes the same owner for every chunk.
        if rank:
            assert [o for _, _, o in rows] == [o for _, _, o in deal(chunks, rank=0, world_size=world_size, done=done.__contains__)]
    mine = sorted(i for indices in owners.values() for i in indices)
    assert mine == [i for i in range(10) if i not in done]  # each chunk still to do: exactly one process
    assert max(map(len, owners.values())) - min(map(len, owners.values())) <= 1  # dealt evenly


def test_chunks_depend_on_the_input_alone_and_keep_documents_whole(corpus):
    def cut(with_context: bool) -> list[list[int]]:
        return [[r.id for r in chunk] for chunk in input_chunks(read_records(str(corpus), "conll"), CHUNK, with_context=with_context)]

    assert cut(True) == cut(True) and cut(False) == cut(False)
    plain = cut(False)
    assert len(plain) > 5 and all(len(c) == CHUNK for c in plain[:-1]) and 0 < len(plain[-1]) <= CHUNK
    chunks = list(input_chunks(read_records(str(corpus), "conll"), CHUNK, with_context=True))
    assert len(chunks) > 5 and all(chunk[0].doc_start for chunk in chunks)  # cut only where a document starts
    with pytest.raises(ValueError, match="--chunk_size must be at least 1"):
        next(input_chunks(iter([]), 0, with_context=False))


# --- the merge -------------------------------------------------------------------------------------


def test_merger_appends_parts_in_chunk_order_and_survives_a_kill_mid_append(tmp_path):
    folder = tmp_path / "out.jsonl.parts"
    folder.mkdir()
    merger = Merger(folder)
    for index in (2, 1):
        (folder / part_name(index)).write_text(f"chunk {index}\n")
    assert merger.advance() == []  # chunk 0 missing: nothing may be appended yet
    (folder / part_name(0)).write_text("chunk 0\n")
    assert merger.advance() == [0, 1, 2]
    assert (folder / MERGED).read_text() == "chunk 0\nchunk 1\nchunk 2\n"
    assert json.loads((folder / PROGRESS).read_text()) == {"chunks": 3, "bytes": 24}
    assert not list(folder.glob("chunk-*"))  # merged parts are deleted
    merger.stream.close()
    # Killed while appending chunk 3: its bytes are half in `merged`, its part still there; and a stale part 1
    # left by a kill between recording the progress and deleting the parts.
    with (folder / MERGED).open("ab") as stream:
        stream.write(b"chunk")
    (folder / part_name(3)).write_text("chunk 3\n")
    (folder / part_name(1)).write_text("chunk 1\n")
    merger = Merger(folder)
    assert (merger.chunks, (folder / MERGED).read_text()) == (3, "chunk 0\nchunk 1\nchunk 2\n")
    assert not (folder / part_name(1)).exists()
    merger.finish(tmp_path / "out.jsonl", total=4)
    assert (tmp_path / "out.jsonl").read_text() == "chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
    assert not folder.exists()


def test_merger_refuses_to_finish_with_a_chunk_missing(tmp_path):
    folder = tmp_path / "o.parts"
    folder.mkdir()
    merger = Merger(folder)
    (folder / part_name(1)).write_text("x\n")
    with pytest.raises(RuntimeError, match="chunk 0 of 2 was never written"):
        merger.finish(tmp_path / "o", total=2)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("text", "input_format", "expected"), [
    ("a b\n\nc\r\n\r\nd\n", "text", 3),
    ('{"words": ["a"]}\n{"words": ["b"]}', "jsonl", 2),
    ("-DOCSTART- O\n\nA O\nB O\n\nC O\n\n-DOCSTART- O\n\nD O\n", "conll", 3),
])
def test_estimate_of_the_input_count_for_the_progress_bar(tmp_path, text, input_format, expected):
    path = tmp_path / "in"
    path.write_bytes(text.encode())
    assert estimate_inputs(str(path), input_format, text_per_file=False) == expected


# --- one process: the same bytes, resumable ------------------------------------------------------


def test_file_output_equals_the_stream_and_leaves_no_work_folder(models, corpus, tmp_path, one_torch_thread, capsys):
    output = tmp_path / "out.jsonl"
    assert main(command(models["context"], corpus, output)) == 0
    assert output.read_bytes() == reference(models["context"], corpus)
    assert not work_folder(output).exists() and os.listdir(tmp_path) == ["out.jsonl"]
    count = sum(1 for _ in read_records(str(corpus), "conll"))
    err = capsys.readouterr().err
    assert "inputs/s" in err and f"{count}/{count}" in err  # the bar: rate, and a total (the estimate, then exact)


def crash_after(calls: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make NerPredictor.tag fail on its call number ``calls + 1``: a run stopped after ``calls`` chunks."""
    tag = NerPredictor.tag
    seen = []

    def failing(self, *args, **kwargs):
        seen.append(1)
        if len(seen) > calls:
            raise RuntimeError("stopped")
        return tag(self, *args, **kwargs)

    monkeypatch.setattr(NerPredictor, "tag", failing)


def test_a_stopped_run_resumes_without_tagging_finished_chunks_again(models, corpus, tmp_path, one_torch_thread, caplog, monkeypatch):
    output = tmp_path / "out.jsonl"
    with monkeypatch.context() as patch:
        crash_after(5, patch)
        with pytest.raises(RuntimeError, match="stopped"):
            main(command(models["plain"], corpus, output))
    assert not output.exists()
    folder = work_folder(output)
    assert json.loads((folder / PROGRESS).read_text())["chunks"] == 5 and (folder / MANIFEST).exists()
    caplog.set_level(logging.INFO, logger="ner.predict.sharded")
    main(command(models["plain"], corpus, output))
    total = -(-sum(1 for _ in read_records(str(corpus), "conll")) // CHUNK)
    assert tallies(caplog.text) == {0: (1, total - 5, tallies(caplog.text)[0][2], 5)}
    assert output.read_bytes() == reference(models["plain"], corpus)
    assert not folder.exists()


def test_other_settings_are_refused_naming_what_differs(models, corpus, tmp_path, one_torch_thread, monkeypatch):
    output = tmp_path / "out.jsonl"
    with monkeypatch.context() as patch:
        crash_after(3, patch)
        with pytest.raises(RuntimeError, match="stopped"):
            main(command(models["plain"], corpus, output))
    with pytest.raises(ValueError, match=r"out\.jsonl\.parts holds an unfinished run with other settings \(chunk_size 8 "
                       r"there, 5 now; batch_size 16 there, 4 now\): rerun with the settings of that run to resume it, or "
                       r"delete .*out\.jsonl\.parts to start over"):
        main([*command(models["plain"], corpus, output), "--chunk_size", "5", "--batch_size", "4"])
    with pytest.raises(ValueError, match=r"model '.*plain' there, '.*context' now"):
        main(command(models["context"], corpus, output))
    os.utime(corpus, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(ValueError, match=r"input_mtime_ns \d+ there, \d+ now"):
        main(command(models["plain"], corpus, output))
    assert not output.exists() and work_folder(output).exists()  # refused: nothing written, nothing lost


def test_settings_may_change_while_nothing_is_tagged_yet(models, tmp_path, one_torch_thread):
    """A run stopped by a bad line before its first chunk: after the fix (a new mtime) it starts afresh."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"words": ["a"]}\n{"words": "a b"}\n')
    output = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match="must be a list of strings"):
        main(command(models["plain"], source, output, "--chunk_size", "100"))
    source.write_text('{"words": ["a"]}\n{"words": ["a", "b"]}\n')
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    main(command(models["plain"], source, output, "--chunk_size", "100"))
    assert [json.loads(line)["words"] for line in output.read_text().splitlines()] == [["a"], ["a", "b"]]


def test_one_process_leaves_accelerate_alone_and_several_refuse_stdout_and_one_gpu(monkeypatch):
    import torch

    import ner.predict.sharded
    from ner.predict.sharded import OneProcess, process_state

    class TwoProcesses:
        num_processes, process_index, is_main_process, device = 2, 0, True, "cuda:0"

        def __init__(self, cpu: bool = False) -> None:
            self.cpu = cpu

    monkeypatch.setattr(ner.predict.sharded, "PartialState", TwoProcesses)
    # Not launched: no accelerate state (a process-wide singleton a later Trainer would inherit), device as given.
    assert process_state("cpu", "-") == (OneProcess(), "cpu")
    monkeypatch.setattr(torch.distributed, "is_torchelastic_launched", lambda: True)
    with pytest.raises(ValueError, match=r"--output - \(standard output\) works with one process, not 2: give --output FILE"):
        process_state("cpu", "-")
    with pytest.raises(ValueError, match="--device cuda:1 would put all 2 processes on one device"):
        process_state("cuda:1", "out.jsonl")
    state, device = process_state("cpu", "out.jsonl")
    assert isinstance(state, TwoProcesses) and state.cpu and device == "cpu"  # cpu=True: gloo, not one world each


# --- two processes over gloo, through accelerate launch ------------------------------------------


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf-home"), **extra,
    }


def launch(arguments: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("w") as stream:
        return subprocess.Popen([*LAUNCH, *arguments], env=env, cwd=log.parent, stdout=stream, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_tree(process: subprocess.Popen) -> None:
    """kill -9 the launcher and every process under it (torchrun starts each rank in a session of its own)."""
    try:
        family = [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    process.wait()
    psutil.wait_procs(family, timeout=10)


def finish(process: subprocess.Popen, log: Path) -> str:
    try:
        process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        pytest.fail(f"no result within {TIMEOUT_S} s (a deadlock?):\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert process.returncode == 0, text[-5000:]
    return text


@pytest.mark.slow  # two processes start torch: about 10 s on 2 cores
def test_two_processes_write_the_one_process_bytes(models, corpus, tmp_path):
    output = tmp_path / "out" / "news.jsonl"
    log = tmp_path / "log.txt"
    text = finish(launch(["-m", "ner", *command(models["context"], corpus, output)], log, environment(tmp_path)), log)
    assert output.read_bytes() == reference(models["context"], corpus)
    found = tallies(text)
    total = len(list(input_chunks(read_records(str(corpus), "conll"), CHUNK, with_context=True)))
    assert sorted(found) == [0, 1] and all(row[0] == 2 and row[3] == 0 for row in found.values())
    assert [found[0][1], found[1][1]] == [-(-total // 2), total // 2]  # chunks dealt alternately, each tagged once
    assert found[0][2] + found[1][2] == sum(1 for _ in read_records(str(corpus), "conll"))
    assert os.listdir(output.parent) == ["news.jsonl"]  # work folder and temporary files gone


@pytest.mark.slow  # the command runs twice in two processes: about 20 s on 2 cores
def test_kill_9_mid_run_then_the_same_command_gives_the_uninterrupted_bytes(models, corpus, tmp_path):
    script = tmp_path / "slow_ner.py"
    script.write_text(SLOW)
    output = tmp_path / "news.jsonl"
    arguments = [str(script), *command(models["plain"], corpus, output)]
    folder = work_folder(output)
    process = launch(arguments, tmp_path / "killed.txt", environment(tmp_path, NER_TEST_CHUNK_DELAY="0.4"))
    deadline = time.monotonic() + TIMEOUT_S

    def finished() -> int:
        """Chunks in `merged` plus parts not merged yet (a merged part lives on until its progress is recorded)."""
        with contextlib.suppress(FileNotFoundError):
            merged = json.loads((folder / PROGRESS).read_text())["chunks"]
            return merged + sum(int(p.name.split("-")[1]) >= merged for p in folder.glob("chunk-*"))
        return 0

    while finished() < 4 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    kill_tree(process)
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.txt").read_text()[-3000:]
    done = finished()
    total = len(list(input_chunks(read_records(str(corpus), "conll"), CHUNK, with_context=False)))
    assert 4 <= done < total and not output.exists()

    log = tmp_path / "resumed.txt"
    text = finish(launch(arguments, log, environment(tmp_path)), log)
    assert output.read_bytes() == reference(models["plain"], corpus)
    found = tallies(text)
    assert sorted(found) == [0, 1] and {row[3] for row in found.values()} == {done}  # both saw the same finished chunks
    assert found[0][1] + found[1][1] == total - done  # the rest, each tagged once, none again
    assert abs(found[0][1] - found[1][1]) <= 1  # shared evenly
    assert not folder.exists()


@pytest.mark.slow  # two processes start torch: about 10 s on 2 cores
def test_two_processes_tag_an_onnx_export_as_one_process_tags_the_pytorch_folder(models, corpus, tmp_path):
    """An exported folder (ner/predict/onnx.py) under accelerate launch, document context on: the bytes one process
    writes with the PyTorch folder, but for the entities' scores (probabilities, to float32 rounding)."""
    from ner.predict.export import export_folder

    exported = tmp_path / "onnx"
    export_folder(str(models["context"]), str(exported), check_file=str(corpus))
    output = tmp_path / "out" / "news.jsonl"
    log = tmp_path / "log.txt"
    finish(launch(["-m", "ner", *command(exported, corpus, output)], log, environment(tmp_path)), log)
    rows = [[json.loads(line) for line in text.splitlines()] for text in (output.read_bytes(), reference(models["context"], corpus))]
    assert len(rows[0]) == len(rows[1]) > 0
    for onnx, pytorch in zip(*rows):
        scores = [e.pop("score") for e in onnx["entities"]], [e.pop("score") for e in pytorch["entities"]]
        assert onnx == pytorch and scores[0] == pytest.approx(scores[1], abs=1e-3)
    assert sum(len(row["entities"]) for row in rows[1]) > 0
