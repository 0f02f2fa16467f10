"""Training arguments: device-dependent defaults (fused AdamW, no per-step host sync on CUDA), explicit choices kept."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import TrainingArguments

from ner.training import NerTrainingArguments, fill_device_defaults


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
