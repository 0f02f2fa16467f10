"""Every layout a BERT is released in is staged as a loadable folder; bad folders; staging's lock."""

from __future__ import annotations

import json
import logging
import re
import shutil
import stat
import tarfile
import threading
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForPreTraining

from conftest import DEMO_DATA
from ner.sources import staging
from ner.sources.staging import prepare_model_source
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


@pytest.mark.integration
def test_original_release_folder_trains(tiny_bert, tmp_path):
    release = original_release(tiny_bert, tmp_path / "release", old_names=True)
    source = prepare_model_source(str(release), cache_dir=tmp_path / "model-cache")
    assert source.staged and (Path(source.model) / "config.json").is_file()
    assert json.loads((Path(source.model) / "config.json").read_text())["model_type"] == "bert"
    results = train_briefly(release, tmp_path)
    assert results["train_loss"] > 0
    assert (tmp_path / "out" / "tokenizer.json").is_file()


@pytest.mark.integration
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


def old_pretraining_checkpoint(tiny_bert: Path, path: Path) -> tuple[BertForPreTraining, dict]:
    """A BertForPreTraining state dict as pytorch-pretrained-bert saved it: gamma/beta names, no decoder bias,
    the MLM decoder's weight the word-embedding tensor itself, in torch's pre-1.6 (non-zip) format."""
    model = BertForPreTraining(BertConfig.from_pretrained(tiny_bert)).eval()
    state = {key: value for key, value in model.state_dict().items() if key != "cls.predictions.decoder.bias"}
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    state = {key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): value
             for key, value in state.items()}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return model, state


def scibert_release(tiny_bert: Path, tmp_path: Path) -> tuple[Path, BertForPreTraining]:
    """scibert_scivocab_cased/ as AllenAI ships it: vocab.txt and weights.tar.gz, which holds bert_config.json
    and an old pytorch_model.bin at its top."""
    parts = original_release(tiny_bert, tmp_path / "parts")
    model, _ = old_pretraining_checkpoint(tiny_bert, parts / "pytorch_model.bin")
    folder = tmp_path / "unpacked" / "scibert_scivocab_cased"
    folder.mkdir(parents=True)
    shutil.copy(parts / "vocab.txt", folder / "vocab.txt")
    with tarfile.open(folder / "weights.tar.gz", "w:gz") as tar:
        for name in ("bert_config.json", "pytorch_model.bin"):
            tar.add(parts / name, arcname=name)
    return folder, model


def test_old_pretraining_checkpoint_with_a_tied_decoder_is_staged(tiny_bert, tmp_path, caplog):
    release, original = scibert_release(tiny_bert, tmp_path)
    saved = torch.load(tmp_path / "parts" / "pytorch_model.bin", weights_only=True)
    shared = saved["cls.predictions.decoder.weight"].untyped_storage().data_ptr()
    assert shared == saved["bert.embeddings.word_embeddings.weight"].untyped_storage().data_ptr()  # built as of old
    with caplog.at_level(logging.INFO, logger="ner"):
        source = prepare_model_source(str(release), cache_dir=tmp_path / "model-cache")
    assert re.search(r"dropped cls\.predictions\.decoder\.weight, which is bert\.embeddings\.word_embeddings\.weight "
                     r"itself", caplog.text)
    staged = Path(source.model)
    from safetensors.torch import load_file

    weights = load_file(staged / "model.safetensors")
    assert "cls.predictions.decoder.weight" not in weights and "cls.predictions.bias" in weights
    reloaded = BertForPreTraining.from_pretrained(staged).eval()
    inputs = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        ours, theirs = reloaded(inputs), original(inputs)
    assert torch.allclose(ours.prediction_logits, theirs.prediction_logits, atol=1e-6)  # the decoder tied again
    assert torch.equal(reloaded.cls.predictions.decoder.weight, original.bert.embeddings.word_embeddings.weight)


@pytest.mark.integration
def test_scibert_release_tar_is_accepted_as_given(tiny_bert, tmp_path):
    folder, _ = scibert_release(tiny_bert, tmp_path)
    (tmp_path / "vocab.txt").write_text("[UNK]\nnot\nthis\none\n")  # beside the .tar: the one inside wins
    release = tmp_path / "scibert_scivocab_cased.tar"
    with tarfile.open(release, "w") as tar:
        tar.add(folder, arcname=folder.name)
    staged = Path(prepare_model_source(str(release), cache_dir=tmp_path / "model-cache").model)
    assert sorted(p.name for p in staged.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert (staged / "vocab.txt").read_bytes() == (folder / "vocab.txt").read_bytes()
    from_folder = Path(prepare_model_source(str(folder), cache_dir=tmp_path / "model-cache").model)
    assert from_folder != staged and torch.equal(encoder_weight(from_folder), encoder_weight(staged))
    assert train_briefly(release, tmp_path)["train_loss"] > 0


def test_staged_folder_has_ordinary_permissions(tiny_bert, tmp_path):
    release = original_release(tiny_bert, tmp_path / "release")
    staged = Path(prepare_model_source(str(release), cache_dir=tmp_path / "model-cache").model)
    (staged.parent / "made-by-mkdir").mkdir()
    assert stat.S_IMODE(staged.stat().st_mode) == stat.S_IMODE((staged.parent / "made-by-mkdir").stat().st_mode)


def test_two_stagings_of_one_model_at_once_stage_it_once(tiny_bert, tmp_path, monkeypatch):
    release = original_release(tiny_bert, tmp_path / "release")
    read, calls, both_inside = staging.load_state_dict, [], threading.Event()

    def slow_read(path):
        calls.append(path)
        if len(calls) == 2:
            both_inside.set()
        both_inside.wait(timeout=1.0)  # holds the first staging open long enough for the second to arrive
        return read(path)

    monkeypatch.setattr(staging, "load_state_dict", slow_read)
    sources, errors = [], []

    def stage() -> None:
        try:
            sources.append(prepare_model_source(str(release), cache_dir=tmp_path / "model-cache"))
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=stage) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(sources) == 2 and sources[0].model == sources[1].model
    assert len(calls) == 1  # the second waited for the first and used its folder
    staged = Path(sources[0].model)
    assert sorted(p.name for p in staged.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert [p.name for p in staged.parent.iterdir() if p.name.startswith(".")] == []  # no work folder left
