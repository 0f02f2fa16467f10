"""TF checkpoints to Hugging Face folders: parity with TensorFlow's own outputs, the name table, casing, errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer, BertConfig, BertForPreTraining, BertForTokenClassification

from convert_tf_to_pytorch import ConversionArguments, main, resolve_files
from make_tf_fixtures import CONFIG, NUM_NER_LABELS, reference_weights
from ner.errors import DataFileError
from ner.sources.staging import prepare_model_source
from ner.sources.tf_checkpoint import TFCheckpoint
from ner.sources.tf_conversion import RULES, convert_for_loading, convert_tf_checkpoint
from test_tf_checkpoint import flip_byte, load_bench

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"
EXPECTED = np.load(FIXTURES / "expected_outputs.npz", allow_pickle=False)
ADAM = "adam_m/adam_v (Google BERT's AdamWeightDecayOptimizer slots)"
RELEASES = {  # folder -> (checkpoint name, skipped optimizer state)
    "uncased_L-2_H-8_A-2": ("bert_model.ckpt", {ADAM: 92, "global_step": 1}),
    "biobert_v1.0_pubmed_pmc": ("biobert_model.ckpt", {"BERTAdam(_1) slots (BioBERT v1.0)": 92, "global_step": 1}),
    "tf2_bert": ("ckpt-1", {
        "the TF2 object graph": 1, "optimizer slots (TF2)": 92, "optimizer state (TF2)": 2, "save_counter (TF2)": 1,
    }),
}


def release(name: str, tmp_path: Path) -> Path:
    """A copy of a fixture release folder (so a test may damage it)."""
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def release_files(folder: Path) -> tuple[str, str, str]:
    """(prefix, config, vocab) as the converter's command line finds them in a release folder."""
    return resolve_files(ConversionArguments(), str(folder))[:3]


def convert(folder: Path, out: Path, **options):
    prefix, config, vocab = release_files(folder)
    return convert_tf_checkpoint(prefix, config, vocab, out, **options)


def outputs(model):
    """The model's outputs on the inputs TensorFlow's expected outputs were computed from."""
    inputs = {key: torch.tensor(EXPECTED[key]) for key in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        return model.eval()(**inputs, output_hidden_states=True)


def hf_state_from_reference(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The test's own name mapping, written without RULES, for the minGPT-style second loading path."""
    state = {}
    for name, value in weights.items():
        tensor = torch.from_numpy(value)
        key = re.sub(r"layer_(\d+)", r"layer.\1", name).replace("/", ".")
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.endswith(".kernel"):
            key, tensor = key.removesuffix(".kernel") + ".weight", tensor.T
        elif key.endswith("_embeddings"):
            key += ".weight"
        key = key.replace("predictions.output_bias", "predictions.bias").replace("relationship.output_", "relationship.")
        state[key.replace("relationship.weights", "relationship.weight")] = tensor.contiguous()
    return state


@pytest.mark.parametrize("name", list(RELEASES))
def test_converted_model_reproduces_tensorflows_outputs(name, tmp_path):
    checkpoint_name, skipped = RELEASES[name]
    summary = convert(FIXTURES / name, tmp_path / "out")
    assert summary.source.name == checkpoint_name and dict(summary.skipped) == skipped and summary.missing == []
    assert summary.tensors == 46 and summary.object_based == (name == "tf2_bert")
    model = BertForPreTraining.from_pretrained(tmp_path / "out")
    result = outputs(model)
    assert torch.allclose(torch.stack(result.hidden_states), torch.from_numpy(EXPECTED["hidden_states"]), atol=1e-5)
    assert torch.allclose(result.prediction_logits, torch.from_numpy(EXPECTED["mlm_logits"]), atol=1e-5)
    assert torch.allclose(result.seq_relationship_logits, torch.from_numpy(EXPECTED["nsp_logits"]), atol=1e-5)


def test_converted_model_equals_one_built_from_the_reference_weights(tmp_path):
    convert(FIXTURES / "uncased_L-2_H-8_A-2", tmp_path / "out")
    converted = BertForPreTraining.from_pretrained(tmp_path / "out")
    reference = BertForPreTraining(BertConfig(**CONFIG))
    state = hf_state_from_reference({k: v for k, v in reference_weights().items() if not k.startswith("output_")})
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert set(missing) == {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"} and not unexpected  # tied
    for key, value in reference.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    ours, theirs = outputs(converted), outputs(reference)
    assert torch.allclose(ours.prediction_logits, theirs.prediction_logits)
    assert all(torch.allclose(a, b) for a, b in zip(ours.hidden_states, theirs.hidden_states))


def test_rule_table_names_exactly_what_bert_for_pretraining_saves(tmp_path):
    BertForPreTraining(BertConfig(**CONFIG)).save_pretrained(tmp_path / "stock")
    convert(FIXTURES / "uncased_L-2_H-8_A-2", tmp_path / "ours")
    shapes = {}
    for folder in ("stock", "ours"):
        with safe_open(tmp_path / folder / "model.safetensors", "np") as weights:
            shapes[folder] = {key: weights.get_slice(key).get_shape() for key in weights.keys()}
    assert shapes["ours"] == shapes["stock"]
    assert len({rule.tf_name for rule in RULES}) == len(RULES) == len({rule.hf_name for rule in RULES})


GENE_LABELS = ["B-Gene", "I-Gene", "O", "B-Species", "I-Species"]  # one per output of finetuned_ner's classifier


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def checkpoint_tensors(prefix: Path) -> dict[str, np.ndarray]:
    with TFCheckpoint(prefix) as checkpoint:
        return {name: np.array(checkpoint.read(name)) for name in checkpoint.entries}  # writable copies


def test_finetuned_checkpoint_converts_without_flags_into_a_token_classifier(tmp_path, capsys):
    folder = release("finetuned_ner", tmp_path)
    labels = write_lines(tmp_path / "labels.txt", GENE_LABELS)
    assert main([str(folder), "--label_list", str(labels)]) == 0  # no --allow_missing
    assert "a token classifier over B-Gene I-Gene O B-Species I-Species" in capsys.readouterr().out
    out = tmp_path / "finetuned_ner-pytorch"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert config["id2label"] == {str(i): label for i, label in enumerate(GENE_LABELS)}
    assert config["label2id"] == {label: i for i, label in enumerate(GENE_LABELS)}
    readme = (out / "README.md").read_text()
    assert "A token classifier (5 labels: B-Gene I-Gene O B-Species I-Species)" in readme
    assert "not in the checkpoint (a fine-tuned model does not use them): cls.predictions.transform" in readme

    model = BertForTokenClassification.from_pretrained(out)
    assert model.config.num_labels == NUM_NER_LABELS and model.config.id2label[3] == "B-Species"
    tf = checkpoint_tensors(folder / "model.ckpt-1200")
    weight, bias = torch.from_numpy(tf["output_weights"]), torch.from_numpy(tf["output_bias"])
    assert torch.equal(model.classifier.weight, weight) and torch.equal(model.classifier.bias, bias)  # [labels, hidden]
    result = outputs(model)
    assert torch.allclose(result.logits, result.hidden_states[-1] @ weight.T + bias, atol=1e-6)
    assert torch.allclose(result.logits, torch.from_numpy(EXPECTED["ner_logits"]), atol=1e-5)  # TensorFlow's own


def test_finetuned_checkpoint_without_label_list_gets_numbered_labels(tmp_path):
    summary = convert(FIXTURES / "finetuned_ner", tmp_path / "out")
    assert summary.labels == [f"LABEL_{i}" for i in range(NUM_NER_LABELS)] and len(summary.missing) == 7
    assert dict(summary.skipped) == {"LAMB(_1) slots (NVIDIA)": 82, "beta1_power/beta2_power": 2, "global_step": 1}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and len(config["id2label"]) == NUM_NER_LABELS
    result = outputs(BertForTokenClassification.from_pretrained(tmp_path / "out"))
    assert torch.allclose(result.logits, torch.from_numpy(EXPECTED["ner_logits"]), atol=1e-5)


@pytest.mark.parametrize(
    "folder, labels, error, message",
    [
        ("finetuned_ner", ["O", "B-Gene", "I-Gene"], DataFileError,
         r"labels.txt: 3 labels, but the checkpoint's classifier \(output_weights\) has 5 outputs; list one label per "
         r"output"),
        ("finetuned_ner", ["O", "B-Gene", "O"], DataFileError, r"labels.txt:3: label 'O' repeats line 1"),
        ("uncased_L-2_H-8_A-2", ["O"], ValueError,
         r"bert_model.ckpt has no fine-tuned classifier .* leave out --label_list"),
    ],
    ids=["wrong-count", "repeated", "no-classifier"],
)
def test_label_list_that_does_not_fit_is_refused(tmp_path, folder, labels, error, message):
    labels_file = write_lines(tmp_path / "labels.txt", labels)
    with pytest.raises(error, match=message):
        convert(FIXTURES / folder, tmp_path / "out", label_list=labels_file)
    assert not (tmp_path / "out").exists()


def test_encoder_only_checkpoint_still_needs_allow_missing(tmp_path):
    """No cls/ heads and no classifier: the gaps may be a mistake, so they are listed unless allowed."""
    tensors = checkpoint_tensors(FIXTURES / "finetuned_ner" / "model.ckpt-1200")
    folder = release("finetuned_ner", tmp_path)
    encoder_only = sorted((name, value) for name, value in tensors.items() if not name.startswith("output_"))
    load_bench().write_checkpoint(folder / "model.ckpt-1200", encoder_only)
    message = r"(?s)7 weights of BertForPreTraining are not in the checkpoint:\n  cls/predictions/transform/dense/kernel"
    with pytest.raises(ValueError, match=message + r".*no fine-tuned classifier .*--allow_missing") as caught:
        convert(folder, tmp_path / "out")
    assert "Nothing was written" in str(caught.value) and not (tmp_path / "out").exists()
    assert convert(folder, tmp_path / "out", allow_missing=True).labels is None
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertModel"]


def write_disease_checkpoint(folder: Path) -> Path:
    """finetuned_ner with a 3-output classifier (B-Disease, I-Disease, O), written with the numpy writer."""
    tensors = checkpoint_tensors(FIXTURES / "finetuned_ner" / "model.ckpt-1200")
    tensors["output_weights"] = tensors["output_weights"][:3] * 4  # sharper logits: predictions differ by word
    tensors["output_bias"] = tensors["output_bias"][:3]
    folder.mkdir()
    for name in ("bert_config.json", "vocab.txt"):
        shutil.copy(FIXTURES / "finetuned_ner" / name, folder / name)
    load_bench().write_checkpoint(folder / "model.ckpt-1200", sorted(tensors.items()))
    return folder


@pytest.mark.integration
def test_run_ner_predicts_with_a_converted_classifier(tmp_path):
    from run_ner import main as run_ner

    converted = tmp_path / "disease-hf"
    labels = write_lines(tmp_path / "labels.txt", ["B-Disease", "I-Disease", "O"])
    assert main([str(write_disease_checkpoint(tmp_path / "disease")), "--label_list", str(labels),
                 "--output_dir", str(converted)]) == 0
    sentences = [["The", "BRCA", "gene", "of", "X", "Y"], ["BRCA", "A", "The", "gene", "Q"], ["of", "Z", "The", "gene"]]
    gold = [["O", "B-Disease", "I-Disease", "O", "O", "O"], ["B-Disease", "O", "O", "O", "O"], ["O"] * 4]
    test_file = write_lines(tmp_path / "test.txt", [
        line for words, tags in zip(sentences, gold) for line in [*(f"{w}\t{t}" for w, t in zip(words, tags)), ""]
    ])
    run_ner(["--model_name_or_path", str(converted), "--test_file", str(test_file), "--do_predict",
             "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "model-cache"),
             "--data_cache_dir", str(tmp_path / "data-cache")])

    # The same prediction by hand: the converted classifier over each word's first sub-token.
    model = BertForTokenClassification.from_pretrained(converted).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    expected = []
    for words in sentences:
        encoded = tokenizer(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            best = model(**encoded).logits[0].argmax(-1).tolist()
        first = {word: position for position, word in reversed(list(enumerate(encoded.word_ids()))) if word is not None}
        expected.append([model.config.id2label[best[first[i]]] for i in range(len(words))])
    assert len({tag for tags in expected for tag in tags}) > 1  # a check that could tell a new random head apart
    blocks = (tmp_path / "out" / "predict_predictions.txt").read_text().strip().split("\n\n")
    predicted = [[line.split("\t")[2] for line in block.splitlines()] for block in blocks]
    assert predicted == expected


@pytest.mark.parametrize(
    "folder, do_lower_case, lower, tokens",
    [
        ("uncased_L-2_H-8_A-2", None, True, ["the", "b", "##r", "##c", "##a", "gene"]),
        ("biobert_v1.0_pubmed_pmc", None, False, ["The", "BRCA", "gene"]),
        ("biobert_v1.0_pubmed_pmc", True, True, ["[UNK]", "[UNK]", "gene"]),  # a cased vocabulary, lowercased: lost
    ],
)
def test_tokenizer_casing_follows_the_vocabulary_unless_told(folder, do_lower_case, lower, tokens, tmp_path):
    summary = convert(FIXTURES / folder, tmp_path / "out", do_lower_case=do_lower_case)
    assert summary.do_lower_case is lower
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["do_lower_case"] is lower
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.tokenize("The BRCA gene") == tokens
    assert len(tokenizer) == CONFIG["vocab_size"]


def test_folder_name_saying_cased_keeps_case(tmp_path):
    folder = Path(shutil.copytree(FIXTURES / "uncased_L-2_H-8_A-2", tmp_path / "scibert_scivocab_cased"))
    assert convert(folder, tmp_path / "out").do_lower_case is False


def test_cli_folder_argument_and_list(tmp_path, capsys):
    folder = release("biobert_v1.0_pubmed_pmc", tmp_path)
    assert main([str(folder), "--list"]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"\nbert/embeddings/word_embeddings +\[64, 8\] +float32\n", listed)
    assert re.search(r"\nglobal_step +\[\] +int64\n139 variables, 0.0 MB in 1 shard\(s\): .*/biobert_model.ckpt\n$", listed)
    assert main([str(folder)]) == 0
    assert (tmp_path / "biobert_v1.0_pubmed_pmc-pytorch" / "model.safetensors").is_file()
    assert main([str(FIXTURES / "tf2_bert"), "--list"]) == 0
    listed = capsys.readouterr().out
    row = r"\nmodel/encoder/0/.ATTRIBUTES/VARIABLE_VALUE +\[64, 8\] +float32  \(bert/embeddings/word_embeddings\)\n"
    assert re.search(row, listed)


def test_cli_explicit_files(tmp_path):
    folder = FIXTURES / "uncased_L-2_H-8_A-2"
    assert main(["--tf_checkpoint", str(folder / "bert_model.ckpt"), "--bert_config", str(folder / "bert_config.json"),
                 "--vocab", str(folder / "vocab.txt"), "--output_dir", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"
    ]
    (tmp_path / "plain").mkdir()
    assert (tmp_path / "out").stat().st_mode == (tmp_path / "plain").stat().st_mode  # the umask's, as mkdir makes
    with pytest.raises(ValueError, match="Missing --bert_config, --vocab"):
        main(["--tf_checkpoint", str(folder / "bert_model.ckpt"), "--output_dir", str(tmp_path / "other")])


CKPT = "bert_model.ckpt"


def damage_index_end(folder: Path) -> None:
    index = folder / "bert_model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-20])


def damage_magic(folder: Path) -> None:
    index = folder / "bert_model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-8] + b"\x00" * 8)


def damage_word_embeddings(folder: Path) -> None:
    with TFCheckpoint(folder / "bert_model.ckpt") as checkpoint:
        offset = checkpoint.entries["bert/embeddings/word_embeddings"].offset
    flip_byte(folder / "bert_model.ckpt.data-00000-of-00001", offset + 5)


@pytest.mark.parametrize(
    "damage, checkpoint, error, message",
    [
        (damage_index_end, CKPT, DataFileError, r"bert_model.ckpt.index: not a complete .* truncated"),
        (damage_magic, CKPT, DataFileError, r"should end with the table magic number .*found 0x0000000000000000"),
        (damage_word_embeddings, CKPT, DataFileError, r"CRC32C checksum mismatch for bert/embeddings/word_embeddings"),
        (None, f"{CKPT}.data-00000-of-00001", ValueError, r"give the checkpoint's prefix instead.*: .*/bert_model.ckpt$"),
        (lambda f: (f / "bert_config.json").unlink(), CKPT, ValueError, r"bert_config.json: no such file.* --bert_config"),
    ],
    ids=["truncated-index", "wrong-magic", "flipped-data-byte", "data-file-as-prefix", "missing-bert-config"],
)
def test_bad_input_is_one_clear_error_and_leaves_nothing(tmp_path, damage, checkpoint, error, message):
    folder = release("uncased_L-2_H-8_A-2", tmp_path / "in")
    if damage is not None:
        damage(folder)
    with pytest.raises(error, match=message):
        convert_tf_checkpoint(folder / checkpoint, folder / "bert_config.json", folder / "vocab.txt", tmp_path / "out" / "x")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_folder_without_bert_config_is_named(tmp_path):
    folder = release("uncased_L-2_H-8_A-2", tmp_path)
    (folder / "bert_config.json").unlink()
    with pytest.raises(ValueError, match=r"no bert_config.json in it \(found: bert_model.ckpt.data-00000-of-00001, "
                       r"bert_model.ckpt.index, vocab.txt\); pass it with --bert_config"):
        release_files(folder)


def test_folder_with_several_checkpoints(tmp_path):
    folder = release("finetuned_ner", tmp_path)
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(folder / f"model.ckpt-1200{suffix}", folder / f"model.ckpt-900{suffix}")
    with pytest.raises(ValueError, match=r"holds several TensorFlow checkpoints \(model.ckpt-1200.index, "
                       r"model.ckpt-900.index\); pass the one you mean as --tf_checkpoint FOLDER/PREFIX"):
        release_files(folder)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-900"\n')  # TF's pointer to the newest
    assert release_files(folder)[0] == str(folder / "model.ckpt-900")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no TensorFlow checkpoint .* found: nothing"):
        release_files(tmp_path / "empty")


def test_unknown_variable_is_listed_and_nothing_is_written(tmp_path):
    with TFCheckpoint(FIXTURES / "uncased_L-2_H-8_A-2" / "bert_model.ckpt") as checkpoint:
        tensors = {name: checkpoint.read(name) for name in checkpoint.entries}
    tensors["bert/encoder/layer_0/adapter/dense/kernel"] = np.zeros((8, 2), np.float32)
    folder = release("uncased_L-2_H-8_A-2", tmp_path)
    load_bench().write_checkpoint(folder / "bert_model.ckpt", sorted(tensors.items()))
    message = r"(?s)1 variables are neither Google BERT weights .*\n  bert/encoder/layer_0/adapter/dense/kernel \[8, 2\]"
    with pytest.raises(ValueError, match=message + r" float32\n.*--list"):
        convert(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_half_precision_weights_stay_half_precision(tmp_path):
    with TFCheckpoint(FIXTURES / "uncased_L-2_H-8_A-2" / "bert_model.ckpt") as checkpoint:
        tensors = [(name, checkpoint.read(name)) for name in checkpoint.entries if "adam" not in name]
    folder = release("uncased_L-2_H-8_A-2", tmp_path)
    half = [(name, value.astype(np.float16) if value.dtype == np.float32 else value) for name, value in tensors]
    load_bench().write_checkpoint(folder / "bert_model.ckpt", half)
    convert(folder, tmp_path / "out")
    with safe_open(tmp_path / "out" / "model.safetensors", "np") as weights:
        kernel = weights.get_tensor("bert.encoder.layer.0.attention.self.query.weight")
    assert kernel.dtype == np.float16
    assert np.array_equal(kernel, dict(half)["bert/encoder/layer_0/attention/self/query/kernel"].T)


def test_tf2_checkpoint_without_bert_names_is_explained(tmp_path):
    with pytest.raises(ValueError, match=r"is an object-based \(TF2\) checkpoint and 2 of its variables do not carry "
                       r"Google BERT names:\n  encoder/layers/0/.ATTRIBUTES/VARIABLE_VALUE \(word_embeddings/embeddings\)"):
        convert(FIXTURES / "tf2_keras", tmp_path / "out")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_size": 16}, r"(?s)bert_config.json does not describe .*\n  bert/embeddings/word_embeddings: "
                              r"\[64, 8\] in the checkpoint, \[64, 16\] by the config"),
        ({"num_hidden_layers": 1}, r"16 variables are neither Google BERT weights \(for the num_hidden_layers"),
        ({"vocab_size": 60}, r"vocab.txt has 64 tokens but .*bert_config.json says vocab_size 60"),
        ({"vocab_size": None}, r"bert_config.json: missing or non-integer vocab_size"),
    ],
)
def test_config_that_does_not_fit_the_checkpoint(tmp_path, change, message):
    folder = release("uncased_L-2_H-8_A-2", tmp_path)
    config = {**CONFIG, **change}
    (folder / "bert_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        convert(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_folder_is_kept_unless_overwriting(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty; .*--overwrite_output_dir"):
        convert(FIXTURES / "uncased_L-2_H-8_A-2", out)
    assert (out / "keep.txt").read_text() == "mine"
    convert(FIXTURES / "uncased_L-2_H-8_A-2", out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_convert_for_loading_keeps_the_classifier_of_a_finetuned_checkpoint(tmp_path):
    folder = FIXTURES / "finetuned_ner"
    convert_for_loading(folder / "model.ckpt-1200", folder / "bert_config.json", folder / "vocab.txt", tmp_path)
    with safe_open(tmp_path / "model.safetensors", "np") as weights:
        names = set(weights.keys())
        classifier = weights.get_tensor("classifier.weight")
    assert "bert.encoder.layer.1.output.dense.weight" in names and not any(name.startswith("cls.") for name in names)
    assert np.array_equal(classifier, checkpoint_tensors(folder / "model.ckpt-1200")["output_weights"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and len(config["id2label"]) == NUM_NER_LABELS
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["do_lower_case"] is False
    with pytest.raises(ValueError, match="No bert_config.json beside .*--config_name"):
        convert_for_loading(folder / "model.ckpt-1200", None, None, tmp_path / "other")


def test_run_ner_loading_stages_a_tf_release(tmp_path):
    folder = release("biobert_v1.0_pubmed_pmc", tmp_path)
    source = prepare_model_source(str(folder), cache_dir=tmp_path / "cache")
    model = BertForPreTraining.from_pretrained(source.model)
    hidden_states = torch.stack(outputs(model).hidden_states)
    assert torch.allclose(hidden_states, torch.from_numpy(EXPECTED["hidden_states"]), atol=1e-5)


def test_run_ner_loading_stages_a_finetuned_tf_checkpoint_with_its_classifier(tmp_path):
    source = prepare_model_source(str(release("finetuned_ner", tmp_path)), cache_dir=tmp_path / "cache")
    model = BertForTokenClassification.from_pretrained(source.model)
    assert model.config.architectures == ["BertForTokenClassification"]
    assert torch.allclose(outputs(model).logits, torch.from_numpy(EXPECTED["ner_logits"]), atol=1e-5)


@pytest.mark.integration
def test_run_ner_trains_other_labels_from_a_finetuned_tf_checkpoint(tmp_path):
    """The staged classifier has 5 unnamed outputs (LABEL_i); data with 9 labels needs --new_classifier."""
    from conftest import DEMO_DATA
    from run_ner import main as run_ner

    args = [
        "--model_name_or_path", str(release("finetuned_ner", tmp_path)), "--train_file", str(DEMO_DATA / "dev.txt"),
        "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "model-cache"),
        "--data_cache_dir", str(tmp_path / "data-cache"), "--do_train", "--max_steps", "1", "--save_strategy", "no",
        "--max_seq_length", "16",
    ]
    with pytest.raises(ValueError, match="5 unnamed outputs .* the data has 9 labels.*--new_classifier"):
        run_ner(args)
    results = run_ner(args + ["--new_classifier"])
    assert results["train_loss"] > 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "B-PER" in config["label2id"] and len(config["id2label"]) == 9


def test_staging_and_the_converter_find_the_same_files_in_a_release_folder(tmp_path):
    """One discovery for both: bert_config.json before a config.json beside it, TF's checkpoint file for the newest."""
    folder = release("finetuned_ner", tmp_path)
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(folder / f"model.ckpt-1200{suffix}", folder / f"model.ckpt-900{suffix}")
    (folder / "config.json").write_text(json.dumps({**CONFIG, "hidden_size": 16}))  # not this checkpoint's
    with pytest.raises(ValueError, match=r"several TensorFlow checkpoints .* as --model_name_or_path FOLDER/PREFIX"):
        prepare_model_source(str(folder), cache_dir=tmp_path / "cache")
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-900"\n')
    (folder / "model.ckpt-1200.data-00000-of-00001").unlink()  # only the checkpoint named newest can be read
    assert release_files(folder)[:2] == (str(folder / "model.ckpt-900"), str(folder / "bert_config.json"))
    source = prepare_model_source(str(folder), cache_dir=tmp_path / "cache")
    model = BertForTokenClassification.from_pretrained(source.model)
    assert torch.allclose(outputs(model).logits, torch.from_numpy(EXPECTED["ner_logits"]), atol=1e-5)
