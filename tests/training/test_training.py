"""Training arguments: device-dependent defaults (fused AdamW, no per-step host sync on CUDA), explicit choices kept."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import TrainingArguments

from ner.training.arguments import NerTrainingArguments, fill_device_defaults


def unset() -> SimpleNamespace:
    return SimpleNamespace(optim=None, logging_nan_inf_filter=None, accelerator_config=None)


@pytest.mark.parametrize("cuda, optim, nan_filter, accelerator_config", [
    (True, "adamw_torch_fused", False, {"non_blocking": True}),
    (False, TrainingArguments.default_optim, True, None),
])
def test_device_defaults(cuda, optim, nan_filter, accelerator_config):
    args = unset()
    fill_device_defaults(args, cuda)
    assert (args.optim, args.logging_nan_inf_filter, args.accelerator_config) == (optim, nan_filter, accelerator_config)


def test_explicit_choices_are_kept_on_cuda():
    args = SimpleNamespace(optim="adamw_torch", logging_nan_inf_filter=True, accelerator_config={"even_batches": False})
    fill_device_defaults(args, cuda=True)
    assert (args.optim, args.logging_nan_inf_filter, args.accelerator_config) == ("adamw_torch", True, {"even_batches": False})


def test_cpu_arguments_keep_transformers_defaults(tmp_path):
    ours = NerTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    stock = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    assert ours.optim == stock.optim
    assert ours.logging_nan_inf_filter is stock.logging_nan_inf_filter is True
    assert ours.accelerator_config.non_blocking is stock.accelerator_config.non_blocking is False


def test_explicit_optimizer_reaches_the_trainer_arguments(tmp_path):
    args = NerTrainingArguments(output_dir=str(tmp_path), report_to="none", optim="adamw_torch", use_cpu=True)
    assert args.optim == "adamw_torch"


@pytest.mark.parametrize("given, warmup_ratio, warmup_steps", [
    ({}, 0.1, 0.1),  # the measured recipe's 10%
    ({"warmup_steps": 10}, None, 10),
    ({"warmup_ratio": 0.0}, 0.0, 0.0),  # no warmup, asked for
    ({"warmup_ratio": 0.2}, 0.2, 0.2),
])
def test_ner_recipe_defaults_batch_32_and_warmup_unless_given(tmp_path, given, warmup_ratio, warmup_steps):
    args = NerTrainingArguments(output_dir=str(tmp_path), report_to="none", **given)
    assert (args.warmup_ratio, args.warmup_steps) == (warmup_ratio, warmup_steps)
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (32, 64)
    assert args.learning_rate == TrainingArguments.learning_rate and not args.learning_rate_given
    assert NerTrainingArguments(output_dir=str(tmp_path), report_to="none", learning_rate=2e-5).learning_rate_given
