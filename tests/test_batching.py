"""Packed training batches equal padded ones; length-sorted evaluation returns predictions in dataset order."""

from __future__ import annotations

import pytest
import torch
from transformers import BertTokenizerFast, DataCollatorForTokenClassification

from ner.batching import PackingCollator, example_lengths, pack_rows, packing_unsupported
from ner.modeling import load_model
from ner.schemes import IGNORE_INDEX

LABELS = ["O", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_bert):
    torch.manual_seed(0)
    return load_model(str(tiny_bert), LABELS), BertTokenizerFast.from_pretrained(tiny_bert)


def features(tokenizer, sentences):
    rows = []
    for number, text in enumerate(sentences):
        ids = tokenizer(text)["input_ids"]
        labels = [IGNORE_INDEX] + [(number + i) % len(LABELS) for i in range(len(ids) - 2)] + [IGNORE_INDEX]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "token_type_ids": [0] * len(ids), "labels": labels})
    return rows


SENTENCES = ["the city", "a new president said on the market", "two", "police won the first match against the club", "it is"]


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


@pytest.mark.parametrize("strategy", ["random", "group_by_length"])
def test_sorted_evaluation_returns_predictions_in_dataset_order(model_and_tokenizer, tmp_path, strategy):
    import datasets
    import numpy as np

    from ner.batching import BatchingTrainer
    from ner.training import NerTrainingArguments, keep_predictions

    model, tokenizer = model_and_tokenizer
    dataset = datasets.Dataset.from_list(features(tokenizer, SENTENCES * 3))
    args = NerTrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to="none", eval_strategy="no",
        save_strategy="no", train_sampling_strategy=strategy
    )
    seen = []

    def metrics(prediction):
        seen.append(prediction.label_ids)
        return {}

    outputs = []
    for sort in (False, True):
        trainer = BatchingTrainer(
            model=model, args=args, processing_class=tokenizer, sort_eval_by_length=sort,
            data_collator=DataCollatorForTokenClassification(tokenizer), compute_metrics=metrics,
            preprocess_logits_for_metrics=keep_predictions,
        )
        outputs.append(trainer.predict(dataset))
    unsorted, sorted_ = outputs
    width = unsorted.predictions.shape[1]
    for row, ids in enumerate(dataset["input_ids"]):  # beyond a row's length the predictions are padding
        assert sorted_.predictions[row, : len(ids)].tolist() == unsorted.predictions[row, : len(ids)].tolist()
    np.testing.assert_array_equal(sorted_.label_ids[:, :width], unsorted.label_ids)
    np.testing.assert_array_equal(seen[1][:, :width], seen[0])  # compute_metrics sees dataset order too
    for row, labels in enumerate(dataset["labels"]):
        assert unsorted.label_ids[row, : len(labels)].tolist() == labels


@pytest.mark.parametrize("pack", [True, False])
def test_pack_sequences_flag_picks_the_training_collator(model_and_tokenizer, tmp_path, pack):
    import datasets

    from ner.training import NerTrainingArguments, build_trainer

    model, tokenizer = model_and_tokenizer
    dataset = datasets.Dataset.from_list(features(tokenizer, SENTENCES))
    args = NerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=5, report_to="none", eval_strategy="no",
        save_strategy="no", pack_sequences=pack,
    )
    trainer = build_trainer(model, args, tokenizer, train_dataset=dataset)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["attention_mask"].dim() == 4) is pack
    assert isinstance(trainer.train_collator, PackingCollator) is pack
