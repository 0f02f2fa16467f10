"""The head settings' one declaration, on ``NerBertConfig``: defaults, command-line options, model card."""

from __future__ import annotations

import dataclasses

import pytest
from transformers import HfArgumentParser

from ner.model.configuration import HEAD_SETTINGS, NerBertConfig, given_head_settings, head_hyperparameters
from run_ner import DataArguments, ModelArguments

HEAD = ["classifier_dropout", "head_layers", "head_hidden_size", "head_activation", "use_crf", "crf_token_loss", "decoding", "context_size"]


def test_each_head_setting_is_a_config_field_with_its_default():
    config = NerBertConfig()
    assert list(HEAD_SETTINGS) == HEAD
    assert {name: getattr(config, name) for name in HEAD} == {name: setting.default for name, setting in HEAD_SETTINGS.items()}


def test_the_command_line_offers_each_head_setting_once_with_its_declared_help():
    options = [option for group in (ModelArguments, DataArguments) for option in dataclasses.fields(group)]
    offered = {option.name: option.metadata["help"] for option in options if option.name in HEAD_SETTINGS}
    assert sorted(offered) == sorted(HEAD)
    assert offered == {name: setting.metadata["help"] for name, setting in HEAD_SETTINGS.items()}


@pytest.mark.parametrize(
    "options, given",
    [
        ([], {}),
        (["--use_crf", "--head_layers", "2", "--context_size", "8"], {"head_layers": 2, "use_crf": True, "context_size": 8}),
        # --use_crf false is given too: a new head is then linear (without it run_ner's new heads are CRFs)
        (["--use_crf", "false", "--decoding", "constrained", "--classifier_dropout", "0.2"],
         {"use_crf": False, "classifier_dropout": 0.2, "decoding": "constrained"}),
        (["--decoding", "argmax"], {"decoding": "argmax"}),
    ],
)
def test_only_the_head_options_given_reach_load_model(options, given):
    parser = HfArgumentParser((ModelArguments, DataArguments))
    model_args, data_args = parser.parse_args_into_dataclasses(args=["--model_name_or_path", "bert", *options])
    assert given_head_settings(model_args, data_args) == given


def test_the_card_lists_the_head_settings_declared_for_it_in_order():
    config = NerBertConfig(head_layers=2, head_hidden_size=64, use_crf=True, context_size=8)
    hyperparameters = head_hyperparameters(config)
    # With a CRF the card leaves out decoding (the CRF decodes); without one, the CRF's token-loss weight.
    assert list(hyperparameters.items()) == [("head_layers", 2), ("use_crf", True), ("crf_token_loss", 0.25), ("context_size", 8)]
    linear = head_hyperparameters(NerBertConfig(decoding="constrained"))
    assert list(linear.items()) == [("head_layers", 1), ("use_crf", False), ("decoding", "constrained"), ("context_size", 0)]
