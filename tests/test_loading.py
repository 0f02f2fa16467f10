"""Every layout a BERT is released in loads without hand work; the casing guard; bad folders."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from conftest import DEMO_DATA, make_tiny_bert
from ner.loading import load_tokenizer, prepare_model_source
from run_ner import main


def original_release(tiny_bert: Path, folder: Path, *, old_names: bool = False) -> Path:
    """bert_config.json + vocab.txt + pytorch_model.bin, as Google-era PyTorch releases ship."""
    from safetensors.torch import load_file

    folder.mkdir(parents=True)
    config = json.loads((tiny_bert / "config.json").read_text())
    for key in ("model_type", "architectures", "transformers_version", "dtype"):
        config.pop(key, None)
    (folder / "bert_config.json").write_text(json.dumps(config))
    shutil.copy(tiny_bert / "vocab.txt", folder / "vocab.txt")
    state = {f"bert.{key}": value for key, value in load_file(tiny_bert / "model.safetensors").items()}
    if old_names:  # pytorch-pretrained-bert's LayerNorm names
        state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                 for k, v in state.items()}
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def train_briefly(model: Path | str, tmp_path: Path, *extra: str) -> dict:
    return main(["--model_name_or_path", str(model), "--train_file", str(DEMO_DATA / "dev.txt"),
                 "--validation_file", str(DEMO_DATA / "dev.txt"), "--output_dir", str(tmp_path / "out"),
                 "--data_cache_dir", str(tmp_path / "data-cache"), "--cache_dir", str(tmp_path / "model-cache"),
                 "--do_train", "--do_eval", "--max_steps", "2", "--save_strategy", "no", *extra])


def encoder_weight(folder: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")["bert.embeddings.word_embeddings.weight"]


def test_original_release_folder_trains(tiny_bert, tmp_path):
    release = original_release(tiny_bert, tmp_path / "release", old_names=True)
    source = prepare_model_source(str(release), cache_dir=tmp_path / "model-cache")
    assert source.staged and (Path(source.model) / "config.json").is_file()
    assert json.loads((Path(source.model) / "config.json").read_text())["model_type"] == "bert"
    results = train_briefly(release, tmp_path)
    assert results["train_loss"] > 0
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_scibert_weights_tar_gz_trains(tiny_bert, tmp_path):
    unpacked = original_release(tiny_bert, tmp_path / "unpacked")
    release = tmp_path / "scibert"
    release.mkdir()
    shutil.copy(unpacked / "vocab.txt", release / "vocab.txt")
    with tarfile.open(release / "weights.tar.gz", "w:gz") as tar:
        tar.add(unpacked / "bert_config.json", arcname="weights/bert_config.json")
        tar.add(unpacked / "pytorch_model.bin", arcname="weights/pytorch_model.bin")
    results = train_briefly(release, tmp_path)
    assert results["train_loss"] > 0
    original = torch.load(unpacked / "pytorch_model.bin", weights_only=True)["bert.embeddings.word_embeddings.weight"]
    staged = Path(prepare_model_source(str(release), cache_dir=tmp_path / "model-cache").model)
    assert torch.equal(encoder_weight(staged), original)


def test_self_pretrained_bert_with_sentencepiece(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    from transformers import BertConfig, BertModel

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(line.split("\t")[0] for line in block.splitlines() if "\t" in line)
                                for block in (DEMO_DATA / "train.txt").read_text().split("\n\n")))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=300,
                                   user_defined_symbols=["[MASK]"], minloglevel=2)
    config = BertConfig(vocab_size=310, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    config_file = tmp_path / "bert_config.json"
    config_file.write_text(json.dumps({k: v for k, v in config.to_dict().items() if k != "model_type"}))
    from safetensors.torch import save_file

    save_file(BertModel(config).state_dict(), tmp_path / "checkpoint.safetensors")
    tokenizer = load_tokenizer(str(tmp_path / "tokenizer.model"))
    for token in ("[CLS]", "[SEP]", "[MASK]", "[PAD]"):
        assert token in tokenizer.get_vocab()
    encoded = tokenizer([["Maria", "visited", "Porto"]], is_split_into_words=True)
    assert encoded.input_ids[0][0] == tokenizer.cls_token_id and encoded.input_ids[0][-1] == tokenizer.sep_token_id
    assert sorted(set(w for w in encoded.word_ids(0) if w is not None)) == [0, 1, 2]
    results = train_briefly(tmp_path / "checkpoint.safetensors", tmp_path, "--config_name", str(config_file),
                            "--tokenizer_name", str(tmp_path / "tokenizer.model"))
    assert results["train_loss"] > 0


def test_casing_guard_turns_lowercasing_off_for_a_cased_vocabulary(tmp_path, caplog):
    folder = make_tiny_bert(tmp_path / "cased", lowercase=False)
    (folder / "tokenizer_config.json").unlink()  # as several cased Hub models ship: BertTokenizer then lowercases
    with caplog.at_level(logging.WARNING, logger="ner"):
        tokenizer = load_tokenizer(str(folder))
    assert "lowercasing turned off" in caplog.text
    assert tokenizer.tokenize("Maria")[0] == "M"
    assert load_tokenizer(str(folder), do_lower_case=True).tokenize("Maria")[0] == "m"
    results = train_briefly(folder, tmp_path)
    saved = load_tokenizer(str(tmp_path / "out"), do_lower_case=None)
    assert saved.tokenize("Porto")[0] == "P" and results["train_loss"] > 0


def test_uncased_vocabulary_keeps_lowercasing(tiny_bert, caplog):
    with caplog.at_level(logging.WARNING, logger="ner"):
        assert load_tokenizer(str(tiny_bert)).tokenize("Maria")[0] == "m"
    assert "lowercasing" not in caplog.text


@pytest.mark.parametrize("case", ["no weights", "shape mismatch", "vocab too large", "not a state dict", "missing path"])
def test_bad_model_folders(tiny_bert, tmp_path, case):
    release = original_release(tiny_bert, tmp_path / "release")
    if case == "no weights":
        (release / "pytorch_model.bin").unlink()
        message = r"release: no model weights found \(found: bert_config.json, vocab.txt\)"
    elif case == "shape mismatch":
        config = json.loads((release / "bert_config.json").read_text())
        (release / "bert_config.json").write_text(json.dumps(dict(config, hidden_size=64, intermediate_size=128)))
        message = r"pytorch_model.bin: embeddings\.word_embeddings\.weight has shape \(\d+, 32\), but .*bert_config.json implies"
    elif case == "vocab too large":
        with open(release / "vocab.txt", "a") as vocab:
            vocab.write("\n".join(f"extra{i}" for i in range(50)) + "\n")
        message = r"has \d+ tokens but the model's embedding matrix has \d+ rows"
    elif case == "not a state dict":
        torch.save([1, 2, 3], release / "pytorch_model.bin")
        message = r"pytorch_model.bin: expected a state dict"
    else:
        release = tmp_path / "nowhere" / "model"
        message = r"no such file or folder"
    with pytest.raises(ValueError, match=message):
        train_briefly(release, tmp_path)
    assert not list((tmp_path / "model-cache").glob(".*")) if (tmp_path / "model-cache").exists() else True


def test_pickle_with_code_is_refused(tiny_bert, tmp_path):
    release = original_release(tiny_bert, tmp_path / "release")

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, release / "pytorch_model.bin")
    with pytest.raises(ValueError, match="not a readable PyTorch weights file"):
        prepare_model_source(str(release), cache_dir=tmp_path / "cache")
