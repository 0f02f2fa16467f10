from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import AutoModelForTokenClassification

from ner.modeling import IGNORE_INDEX, BertForNer, NerBertConfig, load_model

LABELS = ["O", "B-PER", "I-PER"]


def tiny_config(**head) -> NerBertConfig:
    return NerBertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_labels=3, **head,
    )


def test_linear_head_saves_as_stock_bert_token_classifier(tmp_path):
    model = BertForNer(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert config["architectures"] == ["BertForTokenClassification"]
    stock = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    assert type(stock).__name__ == "BertForTokenClassification"
    ids = torch.randint(0, 40, (2, 9))
    assert torch.allclose(model(ids).logits, stock(ids).logits)


def test_mlp_head_round_trips_through_the_auto_classes(tmp_path):
    model = BertForNer(tiny_config(head_layers=3, head_hidden_size=8, head_activation="relu")).eval()
    assert [type(m) for m in model.head] == [nn.Linear, nn.ReLU, nn.Dropout] * 2
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "ner_bert"
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BertForNer) and loaded.config.head_layers == 3
    ids = torch.randint(0, 40, (2, 9))
    assert torch.allclose(model(ids).logits, loaded(ids).logits)


def test_loss_covers_labelled_positions_only():
    model = BertForNer(tiny_config()).eval()
    ids = torch.randint(0, 40, (1, 6))
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, 0, 2, IGNORE_INDEX]])
    output = model(ids, labels=labels)
    keep = labels[0] != IGNORE_INDEX
    expected = nn.functional.cross_entropy(output.logits[0][keep], labels[0][keep])
    assert torch.allclose(output.loss, expected)


@pytest.mark.parametrize(
    "head, message",
    [({"head_layers": 0}, "head_layers must be 1"), ({"head_activation": "swish"}, "head_activation 'swish'")],
)
def test_bad_head_settings(head, message):
    with pytest.raises(ValueError, match=message):
        BertForNer(tiny_config(**head))


def test_load_model_puts_labels_in_config_and_keeps_encoder_weights(tiny_bert):
    from safetensors.torch import load_file

    model = load_model(str(tiny_bert), LABELS, head_layers=2)
    assert model.config.id2label == {0: "O", 1: "B-PER", 2: "I-PER"}
    encoder = load_file(tiny_bert / "model.safetensors")
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, encoder["embeddings.word_embeddings.weight"])


def test_load_model_keeps_a_trained_label_order(tiny_bert, tmp_path):
    trained = load_model(str(tiny_bert), ["O", "B-PER", "I-PER"])
    trained.config.id2label = {0: "O", 1: "I-PER", 2: "B-PER"}
    trained.config.label2id = {"O": 0, "I-PER": 1, "B-PER": 2}
    trained.save_pretrained(tmp_path)
    again = load_model(str(tmp_path), ["O", "B-PER", "I-PER"])
    assert again.config.id2label == {0: "O", 1: "I-PER", 2: "B-PER"}
    assert torch.equal(again.classifier.weight, trained.classifier.weight)


def test_non_bert_models_are_refused(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is a 'gpt2' model; this toolkit fine-tunes BERT-family"):
        load_model(str(tmp_path), LABELS)
