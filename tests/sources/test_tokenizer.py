"""The tokenizer: SentencePiece models, the casing guard and its rule (shared with the TF converter)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import DEMO_DATA, make_tiny_bert
from ner.sources.staging import prepare_model_source
from ner.sources.tf_conversion import guess_lower_case
from ner.sources.tokenizer import load_tokenizer, name_says_case, vocabulary_casing
from test_staging import original_release, train_briefly


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
def test_casing_guard_judges_the_name_the_user_gave_not_the_staged_folder(tiny_bert, tmp_path, caplog):
    release = original_release(tiny_bert, tmp_path / "models" / "my_bert_cased")
    vocab = (release / "vocab.txt").read_text().splitlines()
    vocab[vocab.index("minister")] = "Maria"  # 1 capitalised word piece of about 110: under the 1% rule
    (release / "vocab.txt").write_text("\n".join(vocab) + "\n")
    settings = {"do_lower_case": True, "tokenizer_class": "BertTokenizer"}
    (release / "tokenizer_config.json").write_text(json.dumps(settings))
    source = prepare_model_source(str(release), cache_dir=tmp_path / "model-cache")
    assert source.staged and "cased" not in Path(source.tokenizer).name
    assert source.user_name == str(release)
    with caplog.at_level(logging.WARNING, logger="ner"):
        tokenizer = load_tokenizer(source.tokenizer, user_name=source.user_name)
    assert "my_bert_cased: the tokenizer lowercases" in caplog.text and "the name says cased" in caplog.text
    assert tokenizer.tokenize("Maria") == ["Maria"]
    assert load_tokenizer(source.tokenizer, user_name="my_bert").tokenize("Maria")[0] == "m"  # no rule, < 1%: kept
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ner"):
        train_briefly(release, tmp_path)  # run_ner hands the name the user gave to the guard
    assert "my_bert_cased: the tokenizer lowercases" in caplog.text
    staged_settings = json.loads((Path(source.tokenizer) / "tokenizer_config.json").read_text())
    assert staged_settings["do_lower_case"] is True  # the folder's tokenizer settings are staged with its vocabulary


@pytest.mark.parametrize("capitalised, cased", [(0, False), (1, False), (2, True), (50, True)])
def test_one_casing_rule_for_the_tokenizer_and_the_tf_converter(capitalised, cased):
    """Over 1% of alphabetic word pieces capitalised makes a vocabulary cased, for the guard and the converter."""
    tokens = ["[CLS]", "[SEP]", "[UNK]", "##,", *["##ma"] * (100 - capitalised), *["##Ma"] * capitalised]
    assert vocabulary_casing(tokens) == (cased, capitalised / 100)
    assert guess_lower_case(tokens, [])[0] is not cased
    assert vocabulary_casing(["\u2581Porto", "\u2581lisbon", "\u2581"]) == (True, 0.5)  # SentencePiece's marker


@pytest.mark.parametrize(
    "names, says",
    [(["bert-base-cased"], "cased"), (["biobert_uncased"], "uncased"), (["out", "scibert_scivocab_cased"], "cased"),
     (["my_bert"], None), (["Bert-Base-Uncased", "cased"], "uncased")],
)
def test_what_a_name_says_about_case(names, says):
    assert name_says_case(names) == says
