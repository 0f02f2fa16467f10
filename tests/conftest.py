"""Shared fixtures: the real data's location and a tiny random BERT built on the fly (no downloads)."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_DATA = REPO / "demo" / "data"

WORDS = """the a of in to and said on for at by with from was is it that as be has have will new
year years city state government company president minister group club party police bank
market first two three people world team season match win won against after before""".split()


def make_tiny_bert(folder: Path, *, max_positions: int = 128, lowercase: bool = True) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece vocabulary of characters and a few words."""
    from transformers import BertConfig, BertModel

    characters = string.ascii_lowercase + string.digits + string.punctuation
    if not lowercase:
        characters += string.ascii_uppercase
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(characters) + [f"##{c}" for c in characters] + WORDS
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
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"The shared data folder {SHARED_DATA} is missing; clone the project beside shared/.")
    return SHARED_DATA
