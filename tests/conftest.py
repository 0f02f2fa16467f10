"""Shared fixtures: the real data's location, a tiny random BERT built on the fly (no downloads), and the models
made from it once per session: folders with a scaled-up random classifier (cheap, messy predictions), one
run_ner.py run on the demo sample (the output folder as published), and a tagger trained until it finds the
entities of a small synthetic corpus. A test that needs other settings makes its own model."""

from __future__ import annotations

import json
import logging
import os
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One torch thread for the tiny models (see torch_threads for why) unless the developer chose otherwise, set before
# torch is imported so that it holds in the processes the tests start too; slow tests get every core (below).
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
TF_FIXTURES = TESTS / "fixtures" / "tf"  # small TensorFlow checkpoints (tests/make_tf_fixtures.py)
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_DATA = REPO / "demo" / "data"

WORDS = """the a of in to and said on for at by with from was is it that as be has have will new
year years city state government company president minister group club party police bank
market first two three people world team season match win won against after before""".split()
DEMO_LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]  # run_ner's list for demo/data
PER_LOC_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
FAKE_TOKEN = "hf_FAKEtokenFAKEtokenFAKEtoken1234"


def make_tiny_bert(
    folder: Path,
    *,
    max_positions: int = 128,
    lowercase: bool = True,
    extra_words: Sequence[str] = (),
    dropout: float = 0.1,
    seed: int | None = None,
) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece vocabulary of characters and a few words.

    ``extra_words`` (whole words or ``##`` pieces) join the vocabulary, so that a test corpus's words are
    one or a few pieces rather than a string of characters. ``seed`` makes the random weights reproducible.
    """
    import torch
    from transformers import BertConfig, BertModel

    characters = string.ascii_lowercase + string.digits + string.punctuation
    if not lowercase:
        characters += string.ascii_uppercase
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(characters) + [f"##{c}" for c in characters] + WORDS
    vocab += [word for word in dict.fromkeys(extra_words) if word not in vocab]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": lowercase, "tokenizer_class": "BertTokenizer", "model_max_length": max_positions})
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(folder)
    return folder


def make_scaled_classifier_folder(tiny_bert: Path, folder: Path, labels: Sequence[str], **head) -> Path:
    """An output folder as run_ner writes it (model + tokenizer), its classifier random and scaled up so that it
    predicts many, varied and messy tags (I- after O included): for checks that must not see all-O output."""
    import shutil

    import torch

    from ner.model.modeling import load_model

    model = load_model(str(tiny_bert), list(labels), head=head)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=generator) * 3)
    model.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(tiny_bert / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    # Seeded: every session tests the same weights, so a check on a random model cannot pass or fail by draw.
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


@pytest.fixture(scope="session")
def plain_model(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT with a scaled-up classifier over ``PER_LOC_LABELS``: varied, messy predictions, no training."""
    return make_scaled_classifier_folder(tiny_bert, tmp_path_factory.mktemp("scaled") / "plain", PER_LOC_LABELS)


@pytest.fixture(scope="session")
def context_model(tiny_bert, tmp_path_factory) -> Path:
    """``plain_model`` with document context: each sentence sees up to 16 sub-tokens of its neighbours."""
    return make_scaled_classifier_folder(tiny_bert, tmp_path_factory.mktemp("scaled") / "context", PER_LOC_LABELS,
                                         context_size=16)


@pytest.fixture(scope="session")
def demo_model(tiny_bert, tmp_path_factory) -> Path:
    """``plain_model`` over the demo sample's labels (``DEMO_LABELS``), linear head and argmax decoding."""
    return make_scaled_classifier_folder(tiny_bert, tmp_path_factory.mktemp("scaled") / "demo", DEMO_LABELS)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"The shared data folder {SHARED_DATA} is missing; clone the project beside shared/.")
    return SHARED_DATA


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block.

    A tiny model gains nothing from more threads, and on a 2-core machine shared with other jobs torch's
    threads wait on each other: a tagger training measured 95 s on 2 threads and 2 s on 1. One thread is
    also one summation order, so a run and its rerun compute the same floats.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def every_core_for_slow_tests(request) -> Iterator[None]:
    """A slow test fine-tunes a real model (MiniLM), which does gain from more threads: it gets all of them."""
    if request.node.get_closest_marker("slow") is None:
        yield
        return
    with torch_threads(os.cpu_count() or 1):
        yield


class Tagger(NamedTuple):
    """The session's trained tagger: its ``run_ner`` output folder, its data and its results."""

    out: Path  # model, tokenizer, eval/predict_predictions.txt, all_results.json
    data: Path  # train.txt, dev.txt, test.txt from tests/tagger_data.py
    results: dict[str, float]  # what run_ner.main returned


TAGGER_MIN_F1 = 0.9  # measured: dev 0.98-1.00, test 0.94-1.00 over 7 training seeds and 4 corpus seeds


@pytest.fixture(scope="session")
def tagger(tmp_path_factory) -> Tagger:
    """A tiny BERT trained once per session (about 6 s) until it finds nearly all entities of its corpus.

    Tests that compare predictions need a model that predicts entities: with ``O`` everywhere,
    misordered, dropped or differently decoded predictions give the same files and an F1 of 0 either way.
    """
    from run_ner import main
    from tagger_data import VOCABULARY, training_args, write_corpus

    root = tmp_path_factory.mktemp("tagger")
    write_corpus(root / "data")
    # No dropout: training depends on the batches alone, not on random masks (each rank draws its own).
    base = make_tiny_bert(root / "tiny-bert", extra_words=VOCABULARY, dropout=0.0, seed=0)
    with torch_threads(1):
        results = main(training_args(base, root / "data", root / "out"))
    for key in ("eval_f1", "predict_f1"):
        assert results[key] >= TAGGER_MIN_F1, f"the session tagger did not learn its corpus: {key} {results[key]:.4f}"
    return Tagger(root / "out", root / "data", results)


def run_and_push(argv: list[str]) -> tuple[dict, dict, list[logging.LogRecord]]:
    """``run_ner.main(argv)`` with the Hub client replaced at its boundary: results, what was uploaded, log records."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    from run_ner import main

    calls: dict = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, folder_path, repo_id, ignore_patterns, **kwargs):
        paths = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        calls["uploaded"] = sorted(filter_repo_objects(paths, ignore_patterns=ignore_patterns))
        calls["upload_repo"] = repo_id
        calls["contents"] = {p: (Path(folder_path) / p).read_bytes() for p in calls["uploaded"]}

    patch = pytest.MonkeyPatch()
    patch.setattr(HfApi, "create_repo", create_repo)
    patch.setattr(HfApi, "upload_folder", upload_folder)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        results = main(argv)
    finally:
        logging.getLogger().removeHandler(handler)
        patch.undo()
    return results, calls, records


class DemoRun(NamedTuple):
    """The session's ``run_ner.py`` run on the demo sample, pushed to a stand-in Hub."""

    out: Path  # the output folder: model, checkpoint-13 and -26, predictions, reports, plots, card, TensorBoard runs/
    results: dict[str, float]  # what run_ner.main returned
    calls: dict  # what the Hub client got: create_repo, upload_repo, uploaded (paths), contents (path -> bytes)
    records: list[logging.LogRecord]  # every log record of the run


@pytest.fixture(scope="session")
def demo_run(tiny_bert, tmp_path_factory) -> DemoRun:
    """The tiny BERT trained, evaluated and published once per session as a user would: train, dev and test of
    demo/data, 2 epochs of 13 steps with a checkpoint and dev scores after each, the loss logged every 5 steps
    to TensorBoard, then ``--push_to_hub`` (with a token, without ``--push_eval_text``).

    For tests of what a run leaves (files, card, reports, plots, logs, upload), with the linear head that plain
    transformers loads; the model tags little.
    """
    root = tmp_path_factory.mktemp("demo-run")
    results, calls, records = run_and_push([
        "--model_name_or_path", str(tiny_bert), "--train_file", str(DEMO_DATA / "train.txt"),
        "--validation_file", str(DEMO_DATA / "dev.txt"), "--test_file", str(DEMO_DATA / "test.txt"),
        "--output_dir", str(root / "out"), "--data_cache_dir", str(root / "cache"),
        "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2", "--learning_rate", "1e-3",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32",
        "--logging_steps", "5", "--report_to", "tensorboard",
        "--push_to_hub", "--hub_model_id", "someone/tiny-ner", "--hub_token", FAKE_TOKEN,
        "--use_crf", "false",  # the stock-compatible linear head (a new head is a CRF by default)
    ])
    return DemoRun(root / "out", results, calls, records)
