"""The Trainer (ner/training/batching.py): length-sorted evaluation returns predictions in dataset order; training batches as chosen."""

from __future__ import annotations

import pytest
import torch
from transformers import BertTokenizerFast, DataCollatorForTokenClassification

import batch_helpers
from batch_helpers import LABELS, SENTENCES, features, varied_features
from ner.training.packing import PackingCollator
from ner.model.modeling import load_model
from ner.data.schemes import IGNORE_INDEX

model_and_tokenizer = batch_helpers.model_and_tokenizer  # the module-scoped fixture: one model per test file


@pytest.mark.parametrize("strategy", ["random", "group_by_length"])
def test_sorted_evaluation_returns_predictions_in_dataset_order(model_and_tokenizer, tmp_path, strategy):
    import datasets
    import numpy as np

    from ner.training.batching import BatchingTrainer
    from ner.training.trainer import NerTrainingArguments, keep_predictions

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

    from ner.training.trainer import NerTrainingArguments, build_trainer

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


def test_static_batches_have_one_shape_and_train_every_token_once(model_and_tokenizer, tmp_path):
    import datasets

    from ner.training.trainer import NerTrainingArguments, build_trainer

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


@pytest.mark.integration
def test_training_with_static_shapes_runs_one_step_per_batch(tiny_bert, tmp_path):
    import datasets

    from ner.training.trainer import NerTrainingArguments, build_trainer

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

    from ner.training.trainer import NerTrainingArguments, build_trainer

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
    from ner.training.batching import BatchingTrainer
    from ner.model.modeling import load_model
    from ner.training.arguments import NerTrainingArguments

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


def test_the_private_trainer_hooks_we_rely_on_are_still_there():
    """Where transformers offers no public hook, ner.training.batching overrides or calls a private one; a transformers
    upgrade that renames one or changes its parameters fails here, not quietly in a run."""
    import inspect

    from transformers import Trainer

    from ner.training.batching import PRIVATE_TRAINER_HOOKS

    for name, parameters in PRIVATE_TRAINER_HOOKS.items():
        assert hasattr(Trainer, name), f"transformers' Trainer has no {name} any more"
        assert tuple(inspect.signature(getattr(Trainer, name)).parameters) == parameters, name
