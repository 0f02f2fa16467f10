from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForTokenClassification

from ner.model.configuration import NerBertConfig
from ner.model.modeling import BertForNer, load_model
from ner.data.schemes import IGNORE_INDEX

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
    [
        ({"head_layers": 0}, "head_layers must be 1 or more, got 0"),
        ({"head_activation": "swish"}, "head_activation 'swish' is not one of gelu, relu, tanh"),
        ({"decoding": "beam"}, "decoding 'beam' is not one of argmax, constrained"),
    ],
)
def test_bad_head_settings(head, message):
    with pytest.raises(ValueError, match=message):
        BertForNer(tiny_config(**head))


def test_load_model_puts_labels_in_config_and_keeps_encoder_weights(tiny_bert):
    from safetensors.torch import load_file

    model = load_model(str(tiny_bert), LABELS, head={"head_layers": 2})
    assert model.config.id2label == {0: "O", 1: "B-PER", 2: "I-PER"}
    encoder = load_file(tiny_bert / "model.safetensors")
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, encoder["embeddings.word_embeddings.weight"])


def test_load_model_refuses_a_setting_that_is_not_a_head_setting(tiny_bert):
    with pytest.raises(ValueError, match="Not head settings: head_layer. The head settings are classifier_dropout, head_layers"):
        load_model(str(tiny_bert), LABELS, head={"head_layer": 2})


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


def crf_config(**extra) -> NerBertConfig:
    config = tiny_config(use_crf=True, **extra)
    config.id2label = dict(enumerate(LABELS))
    config.label2id = {label: i for i, label in enumerate(LABELS)}
    return config


def test_crf_model_trains_on_its_likelihood_and_round_trips(tmp_path):
    model = BertForNer(crf_config()).eval()
    ids = torch.randint(0, 40, (2, 6))
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, IGNORE_INDEX, 0, IGNORE_INDEX], [IGNORE_INDEX, 0, 1, 2, 0, IGNORE_INDEX]])
    output = model(ids, labels=labels)
    # Each row's words (its labelled positions) read as one sentence: the CRF's likelihood summed over the sentences.
    nll = sum(
        model.crf.neg_log_likelihood(row[None, label != IGNORE_INDEX], label[None, label != IGNORE_INDEX],
                                     torch.ones(1, int((label != IGNORE_INDEX).sum()), dtype=torch.bool), reduction="sum")
        for row, label in zip(output.emissions, labels)
    )
    cross_entropy = torch.nn.functional.cross_entropy(output.emissions.view(-1, 3), labels.view(-1), reduction="sum")
    assert model.config.crf_token_loss == 0.25  # the default
    torch.testing.assert_close(output.loss, (nll + 0.25 * cross_entropy) / 2)
    model.config.crf_token_loss = 1.0
    torch.testing.assert_close(model(ids, labels=labels).loss, (nll + cross_entropy) / 2)
    model.config.crf_token_loss = 0.0
    torch.testing.assert_close(model(ids, labels=labels).loss, nll / 2)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "bert" and saved["auto_map"]["AutoModelForTokenClassification"] == "modeling.BertForNer"
    loaded = BertForNer.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.crf.transitions, model.crf.transitions)
    mask = labels != IGNORE_INDEX
    assert torch.equal(loaded.decode(output.emissions, mask), model.decode(output.emissions, mask))
    assert torch.equal(loaded(ids, labels=labels).predictions, output.predictions)


def test_crf_forbids_invalid_transitions_in_iob2():
    model = BertForNer(crf_config()).eval()
    logits = torch.zeros(1, 3, 3)
    logits[0, :, 2] = 5.0  # I-PER everywhere would win an argmax
    decoded = model.decode(logits, torch.ones(1, 3, dtype=torch.bool))[0].tolist()
    assert decoded[0] != 2  # no I-PER at the start


@pytest.mark.parametrize("use_crf", [False, True])
def test_constrained_or_crf_decoding_never_opens_with_i(use_crf):
    config = crf_config() if use_crf else tiny_config(decoding="constrained")
    config.id2label, config.label2id = dict(enumerate(LABELS)), {label: i for i, label in enumerate(LABELS)}
    config.use_crf = use_crf
    model = BertForNer(config).eval()
    logits = torch.randn(16, 12, 3) * 4
    decoded = model.decode(logits, torch.ones(16, 12, dtype=torch.bool))
    for row in decoded.tolist():
        tags = [LABELS[i] for i in row]
        assert all(not (t == "I-PER" and (i == 0 or tags[i - 1] == "O")) for i, t in enumerate(tags))
    if not use_crf:
        assert not torch.equal(decoded, logits.argmax(-1))  # random logits do break the scheme somewhere


def test_saved_head_settings_are_kept_when_only_predicting(tiny_bert, tmp_path):
    trained = load_model(str(tiny_bert), LABELS, head={"head_layers": 2, "use_crf": True})
    trained.save_pretrained(tmp_path)
    again = load_model(str(tmp_path), LABELS)
    assert again.config.head_layers == 2 and again.config.use_crf
    assert torch.equal(again.crf.transitions, trained.crf.transitions)
    # A CRF decodes with Viterbi: a --decoding given for it is refused, not listed silently beside it (issue 28).
    for head in ({"decoding": "constrained"}, {"decoding": "argmax"}):
        with pytest.raises(ValueError, match="--decoding .* does not go with a CRF.*--use_crf false"):
            load_model(str(tmp_path), LABELS, head=head)
    with pytest.raises(ValueError, match="--decoding constrained does not go with a CRF"):
        load_model(str(tiny_bert), LABELS, head={"use_crf": True, "decoding": "constrained"})


def test_crf_masks_survive_from_pretrained(tiny_bert):
    from ner.model.crf import allowed_transitions

    for options, rules in (({"use_crf": True}, lambda m: m.crf.rules), ({"decoding": "constrained"}, lambda m: m.rules)):
        model = load_model(str(tiny_bert), LABELS, head=options)
        model.save_pretrained(tiny_bert.parent / "with-rules")
        for loaded in (model, load_model(str(tiny_bert.parent / "with-rules"), LABELS)):
            tables = rules(loaded).tables()
            assert [t.tolist() for t in tables] == [t.tolist() for t in allowed_transitions(LABELS, "IOB2")]
            assert all(t.dtype == torch.bool for t in tables)
        # buffers, not parameters, and not saved
        assert not any("rules" in key for key in model.state_dict())


def test_mlp_hidden_layers_keep_the_encoders_scale_and_reload_unchanged(tiny_bert, tmp_path):
    """BERT's std 0.02 init shrinks a hidden layer's output about 5x (MiniLM: rms 0.36 -> 0.07), which left the
    2-layer head at 0.30 dev F1 where the linear head reached 0.73 (bench/heads.json); 1/sqrt(fan_in) keeps it."""
    model = load_model(str(tiny_bert), LABELS, head={"head_layers": 3, "head_hidden_size": 64})
    hidden = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [m.in_features for m in hidden] == [32, 64]
    for layer in hidden:
        assert layer.weight.std().item() == pytest.approx(layer.in_features**-0.5, rel=0.15)
        assert not layer.bias.any()
    assert model.classifier.weight.std().item() < 0.05  # the output layer keeps BERT's init
    model.save_pretrained(tmp_path)
    again = load_model(str(tmp_path), LABELS)
    for before, after in zip(model.head.parameters(), again.head.parameters()):
        assert torch.equal(before, after)  # loaded, not initialised anew


REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    return subprocess.run([sys.executable, "-c", code, *args], env=environment, capture_output=True, text=True, timeout=300)


def test_import_ner_leaves_torch_and_transformers_unimported():
    result = run_python("import sys, ner, ner.data.schemes; print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


AUTO_CLASSES_CHECK = """
import sys
import ner.model
from transformers import BertModel  # imports AutoConfig midway through the model code: the hardest order
from transformers import AutoConfig, AutoModelForTokenClassification

print(type(AutoConfig.for_model("ner_bert")).__name__, type(AutoModelForTokenClassification.from_pretrained(sys.argv[1])).__name__)
"""


@pytest.mark.integration  # starts torch in a fresh process: about 6 s on 2 cores
def test_import_ner_model_registers_the_auto_classes(tiny_bert, tmp_path):
    load_model(str(tiny_bert), LABELS, head={"head_layers": 2}).save_pretrained(tmp_path)
    result = run_python(AUTO_CLASSES_CHECK, str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NerBertConfig", "BertForNer"]
