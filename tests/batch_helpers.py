"""Shared by tests/training/test_packing.py, tests/training/test_attention.py and tests/training/test_batching.py: a tiny model, its tokenizer, training features."""

from __future__ import annotations

import pytest
import torch
from transformers import BertTokenizerFast

from ner.model.modeling import load_model
from ner.data.schemes import IGNORE_INDEX

LABELS = ["O", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_bert):
    torch.manual_seed(0)
    return load_model(str(tiny_bert), LABELS), BertTokenizerFast.from_pretrained(tiny_bert)


def features(tokenizer, sentences, num_labels=len(LABELS)):
    """Training features with every sub-token labelled (a varied label per position), [CLS]/[SEP] ignored."""
    rows = []
    for number, text in enumerate(sentences):
        ids = tokenizer(text)["input_ids"]
        labels = [IGNORE_INDEX] + [(number + i) % num_labels for i in range(len(ids) - 2)] + [IGNORE_INDEX]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "token_type_ids": [0] * len(ids), "labels": labels})
    return rows


SENTENCES = ["the city", "a new president said on the market", "two", "police won the first match against the club", "it is"]


def varied_features(count: int, seed: int = 0):
    """``count`` examples of 3 to 20 sub-tokens whose label values are unique, so that each can be traced."""
    import random

    draw = random.Random(seed)
    rows, label = [], 0
    for _ in range(count):
        length = draw.randint(3, 20)
        labels = [IGNORE_INDEX] + list(range(label, label + length - 2)) + [IGNORE_INDEX]
        label += length - 2
        rows.append({"input_ids": [5] * length, "token_type_ids": [0] * length, "attention_mask": [1] * length, "labels": labels})
    return rows
