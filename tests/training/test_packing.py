"""Packing (ner/training/packing.py): rows filled first-fit-decreasing, best-fit and next-fit; packed and static batches equal padded ones."""

from __future__ import annotations

import pytest
import torch
from transformers import DataCollatorForTokenClassification

import batch_helpers
from batch_helpers import LABELS, SENTENCES, features, varied_features
from ner.training.packing import (
    PackingCollator,
    StaticPackingSampler,
    best_fit_rows,
    example_lengths,
    next_fit_rows,
    pack_rows,
    packing_unsupported,
)
from ner.model.modeling import load_model
from ner.data.schemes import IGNORE_INDEX

model_and_tokenizer = batch_helpers.model_and_tokenizer  # the module-scoped fixture: one model per test file


def loss_and_gradients(model, inputs):
    """The loss of one batch and every gradient it gives (after zeroing the previous ones)."""
    model.zero_grad()
    output = model(**inputs)
    output.loss.backward()
    return output.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


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


@pytest.fixture(scope="module")
def crf_model(tiny_bert):
    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS, head={"use_crf": True})
    with torch.no_grad():  # transitions far from uniform, so that a chained or misread sentence changes the loss
        for parameter in model.crf.parameters():
            parameter.normal_(0.0, 2.0)
    return model


def crf_features(tokenizer, sentences):
    """Training features labelled at every other sub-token (words of one and two pieces) with valid IOB2 paths; the
    sentence edges vary, as for windows of long sentences."""
    rows = features(tokenizer, sentences)
    for number, row in enumerate(rows):
        positions = list(range(1, len(row["input_ids"]) - 1, 2))
        row["labels"] = [IGNORE_INDEX] * len(row["input_ids"])
        for word, position in enumerate(positions):
            row["labels"][position] = (0, 1, 2, 2)[(number + word) % 4] if word or number % 2 else 1
        row["opens_sentence"], row["closes_sentence"] = number != 3, number != 1
    return rows


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("static", [False, True])
def test_packed_crf_batch_gives_the_padded_loss_and_gradients(crf_model, model_and_tokenizer, attention, static):
    model, (_, tokenizer) = crf_model, model_and_tokenizer
    model.config._attn_implementation = attention
    model.eval()  # no dropout: the two layouts must then agree
    batch = crf_features(tokenizer, SENTENCES)
    padded = DataCollatorForTokenClassification(tokenizer)([dict(f) for f in batch])
    shape = {"row_length": 16, "num_rows": 4} if static else {}
    packed = PackingCollator(tokenizer.pad_token_id, attention, sentences=True, **shape)([dict(f) for f in batch])
    assert packed["input_ids"].shape[0] < len(SENTENCES)
    # One word_index row per sentence, its labelled positions in the packed batch, in order.
    assert packed["word_index"].shape == (len(SENTENCES), max(len(range(1, len(f["input_ids"]) - 1, 2)) for f in batch))
    flat_labels = packed["labels"].flatten()
    index = packed["word_index"]
    assert sorted(flat_labels[index[index >= 0]].tolist()) == sorted(l for f in batch for l in f["labels"] if l != IGNORE_INDEX)
    assert sorted(packed["opens_sentence"].tolist()) == sorted(f["opens_sentence"] for f in batch)

    (loss_a, grads_a), (loss_b, grads_b) = (loss_and_gradients(model, inputs) for inputs in (padded, packed))
    model.config._attn_implementation = "sdpa"
    assert loss_a > 1.0  # a real CRF loss, not a degenerate one
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-5)
    assert len(grads_a) == len(grads_b) and model.crf.transitions.grad is not None
    for grad_a, grad_b in zip(grads_a, grads_b):
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-5)


def test_packed_crf_batch_reads_each_sentence_apart(crf_model, model_and_tokenizer):
    """Moving a sentence's edge flag changes the packed loss exactly as the padded one: the flags follow their sentence."""
    model, (_, tokenizer) = crf_model, model_and_tokenizer
    model.eval()
    batch = crf_features(tokenizer, SENTENCES)
    losses = []
    for flags in ((True,) * 5, (False, True, False, True, False)):
        for row, flag in zip(batch, flags):
            row["opens_sentence"] = flag
        packed = PackingCollator(tokenizer.pad_token_id, sentences=True)([dict(f) for f in batch])
        padded = DataCollatorForTokenClassification(tokenizer)([dict(f) for f in batch])
        with torch.no_grad():
            losses.append((model(**packed).loss, model(**padded).loss))
    (packed_a, padded_a), (packed_b, padded_b) = losses
    torch.testing.assert_close(packed_a, padded_a)
    torch.testing.assert_close(packed_b, padded_b)
    assert not torch.isclose(packed_a, packed_b)


def test_packing_a_crf_is_refused_only_under_data_parallel(crf_model):
    from types import SimpleNamespace

    crf_model.config._attn_implementation = "sdpa"
    assert packing_unsupported(crf_model, SimpleNamespace(n_gpu=1)) is None
    assert "DataParallel" in packing_unsupported(crf_model, SimpleNamespace(n_gpu=2))


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
    (loss_a, grads_a), (loss_b, grads_b) = (loss_and_gradients(model, inputs) for inputs in (padded, static))
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for grad_a, grad_b in zip(grads_a, grads_b):
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-6)


def test_pack_to_length_shorter_than_an_example_is_refused():
    with pytest.raises(ValueError, match="longest training example has 20 sub-tokens, more than --pack_to_length 16"):
        StaticPackingSampler([5, 20, 7], 16, 4)
    with pytest.raises(ValueError, match="does not fit a row of 4 .*--pack_to_length"):
        PackingCollator(0, row_length=4, num_rows=2)(varied_features(2))


def test_pack_to_length_needs_packing(tmp_path):
    from ner.training.arguments import NerTrainingArguments

    with pytest.raises(ValueError, match="leave out --pack_sequences false"):
        NerTrainingArguments(output_dir=str(tmp_path), report_to="none", pack_sequences=False, pack_to_length=64)
