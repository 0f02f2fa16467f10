"""Shared fixtures: the real data's location, a tiny random BERT built on the fly (no downloads), and that
BERT trained once per session into a tagger that finds the entities of a small synthetic corpus."""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_DATA = REPO / "demo" / "data"

WORDS = """the a of in to and said on for at by with from was is it that as be has have will new
year years city state government company president minister group club party police bank
market first two three people world team season match win won against after before""".split()


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

    from ner.modeling import load_model

    model = load_model(str(tiny_bert), list(labels), **head)
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
