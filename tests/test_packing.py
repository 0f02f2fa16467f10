"""Packing (ner/packing.py): rows filled first-fit-decreasing, best-fit and next-fit; packed and static batches equal padded ones."""

from __future__ import annotations

import pytest
import torch
from transformers import DataCollatorForTokenClassification

import batch_helpers
from batch_helpers import LABELS, SENTENCES, features, varied_features
from ner.packing import (
    PackingCollator,
    StaticPackingSampler,
    best_fit_rows,
    example_lengths,
    next_fit_rows,
    pack_rows,
    packing_unsupported,
)
from ner.modeling import load_model
from ner.schemes import IGNORE_INDEX

model_and_tokenizer = batch_helpers.model_and_tokenizer  # the module-scoped fixture: one model per test file


@pytest.mark.parametrize("capacity, lengths, rows", [
    (5, [5, 1, 4, 2, 3], [[0], [2, 1], [4, 3]]),
    (8, [3, 3, 3], [[0, 1], [2]]),
    (4, [4], [[0]]),
])
def test_pack_rows_first_fit_decreasing(capacity, lengths, rows):
    assert pack_rows(lengths, capacity) == rows


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_gives_the_padded_loss_and_gradients(model_and_tokenizer, attention):
    model, tokenizer = model_and_tokenizer
    model.config._attn_implementation = attention
    model.eval()  # no dropout: the two layouts must then agree
    batch = features(tokenizer, SENTENCES)
    padded = DataCollatorForTokenClassification(tokenizer)([dict(f) for f in batch])
    packed = PackingCollator(tokenizer.pad_token_id, attention)([dict(f) for f in batch])
    assert packed["input_ids"].shape[0] < len(SENTENCES)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()

    results = []
    for inputs in (padded, packed):
        model.zero_grad()
        output = model(**inputs)
        output.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((output.loss.detach(), output.logits.detach(), grads))
    model.config._attn_implementation = "sdpa"
    (loss_a, logits_a, grads_a), (loss_b, logits_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    # Every sentence's logits, position by position: padded row i against its block in the packed rows.
    lengths = [len(f["input_ids"]) for f in batch]
    for row, members in enumerate(pack_rows(lengths, max(lengths))):
        start = 0
        for index in members:
            torch.testing.assert_close(
                logits_b[row, start : start + lengths[index]], logits_a[index, : lengths[index]], rtol=1e-4, atol=1e-5
            )
            start += lengths[index]
    for grad_a, grad_b in zip(grads_a, grads_b):
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-6)


def test_packed_rows_keep_positions_and_mask_blocks(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    batch = PackingCollator(tokenizer.pad_token_id)(features(tokenizer, ["the city", "two", "it is"]))
    # Longest is 4 sub-tokens: [the city] alone, then [it is] + ... : every row starts at position 0.
    assert batch["position_ids"][:, 0].tolist() == [0] * batch["position_ids"].shape[0]
    mask = batch["attention_mask"]
    assert mask.shape == (batch["input_ids"].shape[0], 1, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    assert mask.diagonal(dim1=-2, dim2=-1).all()  # no empty attention row (padding attends to itself)
    assert (batch["labels"][batch["input_ids"] == tokenizer.pad_token_id] == IGNORE_INDEX).all()


def test_packing_is_refused_with_a_crf(tiny_bert):
    model = load_model(str(tiny_bert), LABELS, head={"use_crf": True})
    assert "CRF" in packing_unsupported(model, None)


def test_example_lengths_follow_selected_rows():
    import datasets

    dataset = datasets.Dataset.from_dict({"input_ids": [[1] * n for n in range(1, 6)]}).select([4, 0, 2])
    assert example_lengths(dataset) == [5, 1, 3]


def test_best_fit_rows_count_depends_only_on_lengths():
    import random

    lengths = [random.Random(i).randint(2, 30) for i in range(200)]
    counts = set()
    for seed in range(5):
        order = sorted(range(200), key=lambda i: (-lengths[i], random.Random(seed * 1000 + i).random()))
        rows = best_fit_rows(order, lengths, 32)
        assert sorted(i for row in rows for i in row) == list(range(200))
        assert all(sum(lengths[i] for i in row) <= 32 for row in rows)
        counts.add(len(rows))
    assert len(counts) == 1
    assert counts.pop() <= -(-sum(lengths) // 32) + 3  # nearly full rows


@pytest.mark.parametrize("lengths, capacity, rows", [
    ([3, 2, 4, 1], 5, [[0, 1], [2, 3]]),
    ([5, 5], 5, [[0], [1]]),
    ([1, 1, 1], 8, [[0, 1, 2]]),
])
def test_next_fit_rows(lengths, capacity, rows):
    assert next_fit_rows(lengths, capacity) == rows


def test_static_epoch_batches_follow_the_seed_and_epoch():
    lengths = [len(row["input_ids"]) for row in varied_features(40)]
    resumed = StaticPackingSampler(lengths, 24, 8, seed=3)
    resumed.set_epoch(1)  # a run resumed in its second epoch
    uninterrupted = StaticPackingSampler(lengths, 24, 8, seed=3)
    first_epoch = list(uninterrupted)
    assert list(resumed) == list(uninterrupted) != first_epoch
    other_seed = StaticPackingSampler(lengths, 24, 8, seed=4)
    assert list(other_seed) != first_epoch


def test_static_batch_gives_the_padded_loss_and_gradients(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    model.eval()
    batch = features(tokenizer, SENTENCES)
    padded = DataCollatorForTokenClassification(tokenizer)([dict(f) for f in batch])
    static = PackingCollator(tokenizer.pad_token_id, "sdpa", row_length=16, num_rows=4)([dict(f) for f in batch])
    assert static["input_ids"].shape == (4, 16)
    results = []
    for inputs in (padded, static):
        model.zero_grad()
        output = model(**inputs)
        output.loss.backward()
        results.append((output.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for grad_a, grad_b in zip(grads_a, grads_b):
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-6)


def test_pack_to_length_shorter_than_an_example_is_refused():
    with pytest.raises(ValueError, match="longest training example has 20 sub-tokens, more than --pack_to_length 16"):
        StaticPackingSampler([5, 20, 7], 16, 4)
    with pytest.raises(ValueError, match="does not fit a row of 4 .*--pack_to_length"):
        PackingCollator(0, row_length=4, num_rows=2)(varied_features(2))


def test_pack_to_length_needs_packing(tmp_path):
    from ner.training import NerTrainingArguments

    with pytest.raises(ValueError, match="leave out --pack_sequences false"):
        NerTrainingArguments(output_dir=str(tmp_path), report_to="none", pack_sequences=False, pack_to_length=64)
