"""Operators one training step dispatches, by head: what a GPU step bound by the host pays for.

    python bench/op_count.py [--out bench/op_count.json] [--label NAME]

A tiny random BERT (2 layers, 64 wide by default; WordPiece vocabulary of the sentences' words) takes one training step on
the first 32 CoNLL-2003 training sentences, through this checkout's ``build_trainer`` (so with the batches it
makes: packed or padded, with or without a word index): ``Trainer.training_step`` (forward, loss, backward),
gradient clipping, the AdamW step, zero_grad. A warm-up step runs first; the next one runs under
torch.profiler. Printed and saved per head: every ``aten::`` operator recorded (nested calls included), the
top-level ones (called from Python or autograd, not from another operator), and the step's milliseconds.
``--label`` names the checkout (run it from an older one to compare). The CRF runs its parallel scan, as on an
accelerator, and again with the word-by-word loop a CPU runs by default (``CRF.algorithm``); an older checkout
has one CRF. CPU only; counts do not depend on the machine, times do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path.cwd()  # the checkout measured: run from its root
sys.path.insert(0, str(REPO))

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertModel, BertTokenizerFast  # noqa: E402

from ner.data.alignment import encode_sentences  # noqa: E402
from ner.data.conll import read_conll  # noqa: E402
from ner.model.modeling import load_model  # noqa: E402
from ner.data.schemes import build_label_list, to_iob2  # noqa: E402
from ner.training.trainer import NerTrainingArguments, build_trainer  # noqa: E402

DATA = Path(os.environ.get("NER_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "conll2003" / "train.txt"
HEADS = {"linear": {"use_crf": False}, "crf": {"use_crf": True}, "crf (word loop, the CPU's)": {"use_crf": True}}


def tiny_bert(folder: Path, words: list[list[str]], layers: int, hidden: int) -> Path:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w.lower() for sentence in words for w in sentence})
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast.from_pretrained(folder, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(2, hidden // 64),
        intermediate_size=4 * hidden,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def count(profiler: torch.profiler.profile) -> tuple[int, int]:
    """(every aten:: operator, the top-level ones) among the profiled events."""
    events = [event for event in profiler.events() if event.name.startswith("aten::")]
    top = 0
    for event in events:
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        top += parent is None
    return len(events), top


def step_ops(folder: Path, name: str, head: dict, sentences, tags, labels: list[str], scratch: Path) -> dict | None:
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    model = load_model(str(folder), labels, head=head)
    if model.crf is not None and not hasattr(model.crf, "algorithm"):  # an older checkout: one CRF
        if "loop" in name:
            return None
    elif model.crf is not None:  # the algorithm an accelerator runs (auto picks the word loop on a CPU), unless named
        model.crf.algorithm = "loop" if "loop" in name else "scan"
    label2id = {label: i for i, label in enumerate(labels)}
    encoded = encode_sentences(sentences, tokenizer=tokenizer, max_seq_length=128, tags=tags, label2id=label2id)
    dataset = datasets.Dataset.from_dict(encoded)
    args = NerTrainingArguments(
        output_dir=str(scratch / "out"), report_to="none", per_device_train_batch_size=len(sentences), use_cpu=True,
        learning_rate=1e-4, disable_tqdm=True, seed=0, eval_strategy="no", save_strategy="no",
    )
    trainer = build_trainer(model, args, tokenizer, train_dataset=dataset)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.create_optimizer()
    optimizer = trainer.optimizer
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this skips
    model.train()

    def step() -> None:
        trainer.training_step(model, batch)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up: lazy initialisation, optimizer state
    started = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step()
    elapsed = time.perf_counter() - started
    total, top = count(profiler)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        step()
        timings.append(time.perf_counter() - started)
    return {
        "aten_ops": total, "top_level_ops": top, "step_ms": round(1000 * sorted(timings)[2], 2),
        "profiled_step_ms": round(1000 * elapsed, 2), "batch_keys": sorted(batch), "input_shape": list(batch["input_ids"].shape),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="JSON file the figures are added to (one entry per --label)")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2, help="encoder layers (MiniLM's shape: --layers 6 --hidden 384)")
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    read = [s for _, s in zip(range(args.sentences), read_conll(DATA))]
    sentences = [list(s.words) for s in read]
    tags = [to_iob2(list(s.tags)) for s in read]
    labels = build_label_list(tags, "IOB2")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = tiny_bert(Path(scratch) / "tiny", sentences, args.layers, args.hidden)
        for name, head in HEADS.items():
            measured = step_ops(folder, name, head, sentences, tags, labels, Path(scratch) / f"run{len(results)}")
            if measured is not None:
                results[name] = measured
                print(json.dumps({"label": args.label, "head": name, **measured}), flush=True)
    ratio = results["crf"]["aten_ops"] / results["linear"]["aten_ops"]
    print(json.dumps({"label": args.label, "crf_over_linear_ops": round(ratio, 3),
                      "crf_over_linear_top_level": round(results["crf"]["top_level_ops"] / results["linear"]["top_level_ops"], 3)}))
    if args.out:
        saved = json.loads(args.out.read_text()) if args.out.exists() else {}
        saved[f"{args.label}, {args.layers} layers x {args.hidden}"] = {
            "heads": results, "crf_over_linear_ops": round(ratio, 3), "torch": torch.__version__,
        }
        args.out.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
