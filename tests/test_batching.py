"""Packed training batches equal padded ones; length-sorted evaluation returns predictions in dataset order."""

from __future__ import annotations

import pytest
import torch
from transformers import BertTokenizerFast, DataCollatorForTokenClassification

from torch.nn.attention.flex_attention import BlockMask

from ner.attention import FLEX_FORM, SDPA_OR_FLEX, choose_packed_attention, document_block_mask, enable_flex_packing, with_block_mask
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


# --- The mask form fast kernels take (flex attention), and static shapes --------------------------------------------


def sentence_pieces(tokenizer, sentences):
    """The padded and the packed-for-flex-attention batch of ``sentences``, and their features."""
    batch = features(tokenizer, sentences)
    padded = DataCollatorForTokenClassification(tokenizer)([dict(f) for f in batch])
    packed = PackingCollator(tokenizer.pad_token_id, FLEX_FORM)([dict(f) for f in batch])
    return batch, padded, packed


@pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")
def test_flex_packed_rows_give_the_padded_logits_and_loss(tiny_bert):
    # Forward only: flex attention has no backward pass on the CPU (the gradients are checked on CUDA).
    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS).eval()
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    batch, padded, packed = sentence_pieces(tokenizer, SENTENCES)
    assert "attention_mask" not in packed and packed["document_ids"].shape == packed["input_ids"].shape
    with torch.no_grad():
        plain = model(**padded)
        enable_flex_packing(model)
        assert model.config._attn_implementation == SDPA_OR_FLEX
        dispatched = model(**padded)  # padded batches still go through SDPA
        inputs = with_block_mask(packed)
        assert isinstance(inputs["attention_mask"], BlockMask)
        flex = model(**inputs)
    torch.testing.assert_close(dispatched.logits, plain.logits, rtol=0, atol=0)
    torch.testing.assert_close(flex.loss, plain.loss, rtol=1e-5, atol=1e-6)
    lengths = [len(f["input_ids"]) for f in batch]
    for row, members in enumerate(pack_rows(lengths, max(lengths))):
        start = 0
        for index in members:
            torch.testing.assert_close(
                flex.logits[row, start : start + lengths[index]], plain.logits[index, : lengths[index]], rtol=1e-4, atol=1e-5
            )
            start += lengths[index]


def test_document_block_mask_is_the_4d_mask(model_and_tokenizer):
    from torch.nn.attention.flex_attention import create_mask

    _, tokenizer = model_and_tokenizer
    batch = features(tokenizer, SENTENCES)
    dense = PackingCollator(tokenizer.pad_token_id, "sdpa")([dict(f) for f in batch])["attention_mask"]
    ids = PackingCollator(tokenizer.pad_token_id, FLEX_FORM)([dict(f) for f in batch])["document_ids"]
    block_mask = document_block_mask(ids)
    rows, _, length, _ = dense.shape
    assert block_mask.shape == (rows, 1, length, length)
    assert torch.equal(create_mask(block_mask.mask_mod, rows, 1, length, length, device="cpu"), dense)


@pytest.mark.parametrize("requested, attention, device, dropout, chosen", [
    ("auto", "sdpa", "cuda", 0.0, "flex"),
    ("auto", SDPA_OR_FLEX, "cuda", 0.0, "flex"),
    ("auto", "sdpa", "cuda", 0.1, "mask"),  # flex attention has no attention dropout: not chosen by itself
    ("auto", "eager", "cuda", 0.0, "mask"),
    ("auto", "sdpa", "cpu", 0.0, "mask"),
    ("flex", "sdpa", "cuda", 0.1, "flex"),
    ("mask", "sdpa", "cuda", 0.0, "mask"),
])
def test_choose_packed_attention(requested, attention, device, dropout, chosen):
    assert choose_packed_attention(requested, attention, device, dropout) == chosen


@pytest.mark.parametrize("requested, device, message", [
    ("flex", "cpu", "needs a CUDA device.*--packed_attention mask"),
    ("fast", "cuda", "must be one of auto, flex, mask"),
])
def test_choose_packed_attention_refuses(requested, device, message):
    with pytest.raises(ValueError, match=message):
        choose_packed_attention(requested, "sdpa", device, 0.0)


def test_build_trainer_logs_the_packed_attention_path(model_and_tokenizer, tmp_path, caplog):
    import datasets

    from ner.training import NerTrainingArguments, build_trainer

    model, tokenizer = model_and_tokenizer
    args = NerTrainingArguments(output_dir=str(tmp_path), report_to="none", eval_strategy="no", save_strategy="no")
    with caplog.at_level("INFO", logger="ner.training"):
        build_trainer(model, args, tokenizer, train_dataset=datasets.Dataset.from_list(features(tokenizer, SENTENCES)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Training batches")]
    assert lines == [
        "Training batches are packed: rows as long as each batch's longest sentence; attention: a 4D block-diagonal mask (sdpa)."
    ]


@pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")
def test_flex_path_through_the_trainer(tiny_bert, tmp_path, monkeypatch, caplog):
    """As on CUDA (the choice faked): the model switched, document ids collated, the BlockMask built in _prepare_inputs."""
    import datasets

    import ner.attention
    from ner.training import NerTrainingArguments, build_trainer

    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS)
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    monkeypatch.setattr(ner.attention, "choose_packed_attention", lambda *args: "flex")
    args = NerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=5, report_to="none", eval_strategy="no", save_strategy="no"
    )
    dataset = datasets.Dataset.from_list(features(tokenizer, SENTENCES))
    with caplog.at_level("INFO", logger="ner.training"):
        trainer = build_trainer(model, args, tokenizer, train_dataset=dataset)
    assert "attention: flex attention with a document block mask (attention dropout 0.1 not applied" in caplog.text
    assert model.config._attn_implementation == SDPA_OR_FLEX
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert isinstance(inputs["attention_mask"], BlockMask) and "document_ids" not in inputs
    padded = DataCollatorForTokenClassification(tokenizer)([dict(f) for f in features(tokenizer, SENTENCES)])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).loss, model(**padded).loss, rtol=1e-5, atol=1e-6)


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


def test_static_batches_have_one_shape_and_train_every_token_once(model_and_tokenizer, tmp_path):
    import datasets

    from ner.training import NerTrainingArguments, build_trainer

    model, tokenizer = model_and_tokenizer
    rows = varied_features(60)
    dataset = datasets.Dataset.from_list(rows)
    args = NerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, report_to="none", eval_strategy="no",
        save_strategy="no", pack_to_length=24,
    )
    trainer = build_trainer(model, args, tokenizer, train_dataset=dataset)
    sampler = trainer.train_batch_sampler
    loader = trainer.get_train_dataloader()
    expected = sorted(label for row in rows for label in row["labels"] if label != IGNORE_INDEX)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == len(sampler)
        assert {tuple(b["input_ids"].shape) for b in batches} == {(sampler.num_rows, 24)}
        assert {tuple(b["attention_mask"].shape) for b in batches} == {(sampler.num_rows, 1, 24, 24)}
        trained = sorted(label for b in batches for label in b["labels"][b["labels"] != IGNORE_INDEX].tolist())
        assert trained == expected  # every labelled token once, nothing dropped or repeated
        epochs.append([b["labels"].tolist() for b in batches])
    assert epochs[0] != epochs[1]  # batches drawn anew each epoch
    assert abs(len(rows) / len(sampler) - 8) < 2.5  # about per_device_train_batch_size sentences per batch


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


@pytest.mark.integration
def test_training_with_static_shapes_runs_one_step_per_batch(tiny_bert, tmp_path):
    import datasets

    from ner.training import NerTrainingArguments, build_trainer

    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS)
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    rows = [dict(row, labels=[label if label == IGNORE_INDEX else label % len(LABELS) for label in row["labels"]])
            for row in varied_features(30)]
    args = NerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=6, num_train_epochs=2, report_to="none",
        eval_strategy="no", save_strategy="no", pack_to_length=32, logging_steps=1,
    )
    trainer = build_trainer(model, args, tokenizer, train_dataset=datasets.Dataset.from_list(rows))
    result = trainer.train()
    assert trainer.state.global_step == 2 * len(trainer.train_batch_sampler)
    assert torch.isfinite(torch.tensor(result.training_loss))


@pytest.mark.integration
def test_resuming_mid_epoch_with_static_shapes_trains_the_batches_left(tiny_bert, tmp_path):
    """The checkpoint's epoch and step select the same batches as the uninterrupted run: none lost, none twice."""
    import datasets

    from ner.training import NerTrainingArguments, build_trainer

    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    rows = [dict(row, labels=[label if label == IGNORE_INDEX else label % len(LABELS) for label in row["labels"]])
            for row in varied_features(30)]
    # Token ids trace the examples (labels are folded into the label set): example i is all id 5 + i.
    for number, row in enumerate(rows):
        row["input_ids"] = [5 + number] * len(row["input_ids"])

    def run(output_dir, **options):
        torch.manual_seed(0)
        args = NerTrainingArguments(
            output_dir=str(output_dir), per_device_train_batch_size=6, num_train_epochs=2, report_to="none",
            eval_strategy="no", pack_to_length=32, **options,
        )
        trainer = build_trainer(load_model(str(tiny_bert), LABELS), args, tokenizer, train_dataset=datasets.Dataset.from_list(rows))
        seen, step = [], trainer.training_step

        def recording_step(model, inputs, *rest):
            seen.append(sorted(set(inputs["input_ids"].flatten().tolist()) - {tokenizer.pad_token_id}))
            return step(model, inputs, *rest)

        trainer.training_step = recording_step
        return trainer, seen

    trainer, everything = run(tmp_path / "whole", save_strategy="no")
    trainer.train()
    per_epoch = len(trainer.train_batch_sampler)
    assert per_epoch >= 3 and len(everything) == 2 * per_epoch
    stop = per_epoch + 1  # inside the second epoch
    trainer, _ = run(tmp_path / "cut", save_strategy="steps", save_steps=stop, max_steps=stop)
    trainer.train()
    trainer, rest = run(tmp_path / "cut", save_strategy="no")
    trainer.train(resume_from_checkpoint=str(tmp_path / "cut" / f"checkpoint-{stop}"))
    assert rest == everything[stop:]


def test_head_learning_rate_puts_the_head_in_groups_of_its_own(tiny_bert, tmp_path):
    from ner.batching import BatchingTrainer
    from ner.modeling import load_model
    from ner.training import NerTrainingArguments

    model = load_model(str(tiny_bert), ["O", "B-PER", "I-PER"], head={"use_crf": True, "head_layers": 2})
    args = NerTrainingArguments(output_dir=str(tmp_path), learning_rate=5e-5, head_learning_rate=1e-3, use_cpu=True,
                                max_steps=10, warmup_steps=2, report_to="none", eval_strategy="no", save_strategy="no")
    trainer = BatchingTrainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    head = {id(p) for p in model.head_parameters()}
    assert len(head) == len(list(model.head.parameters())) + 2 + 3  # MLP layer, classifier weight/bias, CRF's 3
    rates = {}
    for group in trainer.optimizer.param_groups:
        kinds = {id(p) in head for p in group["params"]}
        assert len(kinds) == 1  # no group mixes head and encoder
        rates.setdefault(kinds.pop(), set()).add(group["initial_lr"])
    assert rates == {True: {1e-3}, False: {5e-5}}
    every = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert every == {id(p) for p in model.parameters() if p.requires_grad}  # nothing lost or doubled
    for _ in range(3):
        trainer.optimizer.step()  # no gradients: moves nothing, keeps the scheduler's order of calls
        trainer.lr_scheduler.step()
    ratios = {round(g["lr"] / g["initial_lr"], 9) for g in trainer.optimizer.param_groups}
    assert len(ratios) == 1  # one schedule scales every group alike
