"""End to end through ``run_ner.main`` with a tiny random BERT on the shipped demo sample (the session's ``demo_run``
and runs of their own where a test needs other settings)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_DATA
from ner.data.conll import read_conll
from ner.errors import DataFileError
from run_ner import main


def base_args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model),
        "--train_file", str(DEMO_DATA / "train.txt"),
        "--validation_file", str(DEMO_DATA / "dev.txt"),
        "--test_file", str(DEMO_DATA / "test.txt"),
        "--output_dir", str(out),
        "--data_cache_dir", str(out.parent / "cache"),
        "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "32",
        "--learning_rate", "1e-3",
        *extra,
    ]


def prediction_rows(path: Path) -> tuple[list[list[str]], int]:
    """Sentences of (word, gold, predicted) rows, and the number of -DOCSTART- lines."""
    sentences, current, docstarts = [], [], 0
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            if current:
                sentences.append(current)
            current = []
        elif line.startswith("-DOCSTART-"):
            docstarts += 1
        else:
            current.append(line.split("\t"))
    return sentences, docstarts


@pytest.mark.integration
def test_end_to_end_writes_metrics_predictions_and_model(demo_run):
    out, results = demo_run.out, demo_run.results
    all_results = json.loads((out / "all_results.json").read_text())
    for key in ("train_loss", "eval_f1", "eval_precision", "eval_recall", "eval_accuracy", "predict_f1", "eval_PER_f1"):
        assert key in all_results, key
    assert all_results["eval_f1"] == pytest.approx(results["eval_f1"])
    assert 0.0 <= all_results["eval_f1"] <= 1.0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    # Two epochs, a checkpoint each, evaluation each epoch with F1 logged.
    state = json.loads((out / "trainer_state.json").read_text())
    assert [round(entry["epoch"]) for entry in state["log_history"] if "eval_f1" in entry] == [1, 2]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-13", "checkpoint-26"]


@pytest.mark.integration
@pytest.mark.parametrize("name, source", [("eval", "dev.txt"), ("predict", "test.txt")])
def test_predictions_file_has_one_line_per_input_word(demo_run, name, source):
    out = demo_run.out
    sentences, docstarts = prediction_rows(out / f"{name}_predictions.txt")
    expected = list(read_conll(DEMO_DATA / source))
    assert docstarts == sum(s.doc_start for s in expected) > 0
    assert [[row[0] for row in s] for s in sentences] == [s.words for s in expected]
    assert [[row[1] for row in s] for s in sentences] == [s.tags for s in expected]
    labels = set(json.loads((out / "config.json").read_text())["label2id"])
    assert all(len(row) == 3 and row[2] in labels for s in sentences for row in s)


@pytest.mark.integration
def test_output_folder_reloads_in_stock_and_own_classes(demo_run):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from ner.model.modeling import BertForNer

    out = demo_run.out
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer([["Maria", "visited", "Porto", "."]], is_split_into_words=True, return_tensors="pt")
    stock = AutoModelForTokenClassification.from_pretrained(out).eval()
    own = BertForNer.from_pretrained(out).eval()
    assert type(stock).__name__ == "BertForTokenClassification"
    with torch.no_grad():
        assert torch.allclose(stock(**batch).logits, own(**batch).logits, atol=1e-6)
    assert stock.config.id2label[0] == "O"


@pytest.mark.integration
@pytest.mark.usefixtures("one_torch_thread")
def test_predict_only_with_trained_folder_reproduces_scores(tagger, tmp_path):
    """The saved folder alone gives the training run's dev and test predictions, word for word, and its scores."""
    again = main(
        [
            "--model_name_or_path", str(tagger.out),
            "--validation_file", str(tagger.data / "dev.txt"),
            "--test_file", str(tagger.data / "test.txt"),
            "--output_dir", str(tmp_path / "again"),
            "--data_cache_dir", str(tmp_path / "cache"),
            "--per_device_eval_batch_size", "16",
            "--do_eval", "--do_predict",
            "--report_to", "none",
        ]
    )
    for name in ("eval_predictions.txt", "predict_predictions.txt"):
        assert (tmp_path / "again" / name).read_text() == (tagger.out / name).read_text(), name
    for key in ("f1", "precision", "recall", "accuracy", "number"):
        for prefix in ("eval", "predict"):
            assert again[f"{prefix}_{key}"] == tagger.results[f"{prefix}_{key}"], f"{prefix}_{key}"
    assert again["eval_f1"] >= 0.9 and again["predict_f1"] >= 0.9  # a model that tags, so that the files could differ


@pytest.mark.integration
def test_resume_from_last_checkpoint(tiny_bert, tmp_path):
    out = tmp_path / "out"
    common = ["--do_train", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no", "--max_train_samples", "64"]
    main(base_args(tiny_bert, out, *common, "--max_steps", "4"))
    assert (out / "checkpoint-4").is_dir()
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume_from_checkpoint last"):
        main(base_args(tiny_bert, out, *common, "--max_steps", "6"))
    main(base_args(tiny_bert, out, *common, "--max_steps", "6", "--resume_from_checkpoint", "last"))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert (out / "checkpoint-6").is_dir()


@pytest.mark.integration
def test_config_file_yaml_and_json(tiny_bert, tmp_path):
    settings = {
        "model_name_or_path": str(tiny_bert),
        "validation_file": str(DEMO_DATA / "dev.txt"),
        "output_dir": str(tmp_path / "yaml"),
        "data_cache_dir": str(tmp_path / "cache"),
        "per_device_eval_batch_size": 32,
        "do_eval": True,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    assert "eval_f1" in main([str(tmp_path / "run.yaml")])
    settings["output_dir"] = str(tmp_path / "json")
    (tmp_path / "run.json").write_text(json.dumps(settings))
    assert "eval_f1" in main([str(tmp_path / "run.json")])


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.integration
def test_label_seen_only_in_test_is_added_to_the_list(tiny_bert, tmp_path):
    train = write(tmp_path / "train.txt", "Maria\tB-PER\nsaid\tO\n\nPorto\tB-LOC\nwon\tO\n")
    test = write(tmp_path / "test.txt", "Acme\tB-ORG\nwon\tO\n")
    main(["--model_name_or_path", str(tiny_bert), "--train_file", str(train), "--test_file", str(test),
          "--output_dir", str(tmp_path / "out"), "--data_cache_dir", str(tmp_path / "cache"),
          "--do_train", "--do_predict", "--max_steps", "1"])
    labels = json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]
    assert list(labels.values()) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_label_missing_from_label_list_names_file_and_line(tiny_bert, tmp_path):
    train = write(tmp_path / "train.txt", "Maria\tB-PER\nsaid\tO\n\nPorto\tB-LOC\nwon\tO\n")
    test = write(tmp_path / "test.txt", "The\tO\nAcme\tB-ORG\nwon\tO\n")
    labels = write(tmp_path / "labels.txt", "O\nB-PER\nI-PER\nB-LOC\nI-LOC\n")
    with pytest.raises(DataFileError, match=r"test\.txt:2: label 'B-ORG' is not in the label list"):
        main(["--model_name_or_path", str(tiny_bert), "--train_file", str(train), "--test_file", str(test),
              "--label_list", str(labels), "--output_dir", str(tmp_path / "out"),
              "--data_cache_dir", str(tmp_path / "cache"), "--do_train", "--do_predict", "--max_steps", "1"])


@pytest.mark.integration
def test_long_sentence_becomes_windows_and_every_word_is_predicted(tiny_bert, tmp_path, caplog):
    long_sentence = "".join(f"word{i}\t{'B-PER' if i % 10 == 0 else 'O'}\n" for i in range(60))
    data = write(tmp_path / "dev.txt", long_sentence + "\nshort\tO\n")
    with caplog.at_level(logging.INFO, logger="ner"):
        results = main(["--model_name_or_path", str(tiny_bert), "--validation_file", str(data), "--train_file", str(data),
                        "--output_dir", str(tmp_path / "out"), "--data_cache_dir", str(tmp_path / "cache"),
                        "--do_train", "--do_eval", "--max_steps", "2", "--max_seq_length", "32", "--stride", "8"])
    assert "1 sentences are longer than max_seq_length=32 sub-tokens; encoded as" in caplog.text
    sentences, _ = prediction_rows(tmp_path / "out" / "eval_predictions.txt")
    assert [[row[0] for row in s] for s in sentences] == [[f"word{i}" for i in range(60)], ["short"]]
    assert results["eval_number"] == 6  # all six PER entities scored, none cut off


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "Nothing to do: pass --do_train"),
        (["--do_eval"], "--do_eval needs --validation_file"),
        (["--do_train", "--resume_from_checkpoint", "last"], "no checkpoint-\\* folder"),
        (["--do_train", "--warmup_ratio", "0.1", "--warmup_steps", "5"], "not both"),
    ],
)
def test_argument_errors_say_the_fix(tiny_bert, tmp_path, extra, message):
    train = write(tmp_path / "train.txt", "Maria\tB-PER\nsaid\tO\n")
    with pytest.raises(ValueError, match=message):
        main(["--model_name_or_path", str(tiny_bert), "--train_file", str(train), "--output_dir", str(tmp_path / "o"),
              "--data_cache_dir", str(tmp_path / "cache"), *extra])


def test_no_data_is_an_error(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match="No data"):
        main(["--model_name_or_path", str(tiny_bert), "--output_dir", str(tmp_path), "--do_train"])


@pytest.mark.integration
def test_hub_style_dataset_folder(tiny_bert, tmp_path):
    """--dataset_name with a local folder in the Hub's tokens/ner_tags layout (offline stand-in for the Hub)."""
    folder = tmp_path / "hubdata"
    folder.mkdir()
    rows = [{"tokens": ["Maria", "visited", "Porto"], "ner_tags": ["B-PER", "O", "B-LOC"]}] * 8
    for split in ("train", "validation"):
        write(folder / f"{split}.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    results = main(["--model_name_or_path", str(tiny_bert), "--dataset_name", str(folder),
                    "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "hf"),
                    "--do_train", "--do_eval", "--max_steps", "2"])
    assert results["eval_number"] == 16
    sentences, _ = prediction_rows(tmp_path / "out" / "eval_predictions.txt")
    assert sentences[0][0][:2] == ["Maria", "B-PER"]


@pytest.mark.integration
def test_bf16_mixed_precision_on_cpu(tiny_bert, tmp_path):
    results = main(base_args(tiny_bert, tmp_path / "out", "--do_train", "--do_eval", "--max_steps", "3",
                             "--bf16", "--use_cpu", "--save_strategy", "no"))
    assert results["train_loss"] > 0 and 0 <= results["eval_f1"] <= 1


@pytest.mark.integration
def test_a_new_head_is_a_crf_by_default_and_the_run_says_so(tiny_bert, tmp_path, caplog):
    out = tmp_path / "default"
    with caplog.at_level(logging.INFO):
        main(base_args(tiny_bert, out, "--do_train", "--max_steps", "2", "--save_strategy", "no"))
    config = json.loads((out / "config.json").read_text())
    # Read by plain transformers as a stock classifier over its emissions; its own code (auto_map) decodes with the CRF.
    assert config["use_crf"] is True and config["model_type"] == "bert" and "auto_map" in config
    announced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("A new CRF head: the default")]
    assert len(announced) == 1 and "--use_crf false" in announced[0]
    assert "trust_remote_code=True" in (out / "README.md").read_text()  # the card says how it loads
    caplog.clear()
    # A fine-tuned model keeps its own head: no CRF added to a linear one, nothing announced.
    linear = tmp_path / "linear"
    main(base_args(tiny_bert, linear, "--do_train", "--max_steps", "2", "--save_strategy", "no", "--use_crf", "false"))
    with caplog.at_level(logging.INFO):
        main(base_args(linear, tmp_path / "again", "--do_train", "--max_steps", "2", "--save_strategy", "no"))
    assert json.loads((tmp_path / "again" / "config.json").read_text())["model_type"] == "bert"
    assert not [r for r in caplog.records if r.getMessage().startswith("A new CRF head")]


@pytest.mark.integration  # a whole run_ner.py run
@pytest.mark.parametrize("option", [["--decoding", "constrained"], ["--label_all_tokens"]])
def test_a_new_head_stays_linear_with_options_a_crf_does_not_take(tiny_bert, tmp_path, caplog, option):
    with caplog.at_level(logging.INFO):
        main(base_args(tiny_bert, tmp_path / "out", "--do_train", "--max_steps", "1", "--save_strategy", "no", *option))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["use_crf"] is False
    assert any(r.getMessage() == f"A new head is linear with {option[0]} (without it, the default is a CRF)." for r in caplog.records)


@pytest.mark.integration
def test_crf_run_then_predict_only_and_constrained_decoding(tiny_bert, tmp_path):
    out = tmp_path / "crf"
    trained = main(base_args(tiny_bert, out, "--do_train", "--do_eval", "--max_steps", "6", "--use_crf", "--save_strategy", "no"))
    again = main(["--model_name_or_path", str(out), "--validation_file", str(DEMO_DATA / "dev.txt"),
                  "--output_dir", str(tmp_path / "again"), "--data_cache_dir", str(tmp_path / "cache"), "--do_eval"])
    assert again["eval_f1"] == pytest.approx(trained["eval_f1"]) and again["eval_loss"] == pytest.approx(trained["eval_loss"])
    sentences, _ = prediction_rows(tmp_path / "again" / "eval_predictions.txt")
    for sentence in sentences:
        predicted = [row[2] for row in sentence]
        for i, tag in enumerate(predicted):
            if tag.startswith("I-"):
                assert i > 0 and predicted[i - 1][2:] == tag[2:], predicted


@pytest.mark.integration  # a whole run_ner.py run
def test_head_learning_rate_reaches_the_optimizer_and_the_card(tiny_bert, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        main(base_args(tiny_bert, out, "--do_train", "--max_steps", "2", "--save_strategy", "no", "--head_learning_rate", "0.02"))
    assert any(r.getMessage().startswith("Learning rate 0.02 for the head") for r in caplog.records)
    assert "head_learning_rate" in (out / "README.md").read_text()
    with pytest.raises(ValueError, match="--head_learning_rate must be more than 0, got 0"):
        main(base_args(tiny_bert, tmp_path / "bad", "--do_train", "--head_learning_rate", "0"))


def test_default_learning_rate_follows_the_measured_rule():
    from ner.model.configuration import NerBertConfig
    from ner.training.recipe import RECIPE

    assert RECIPE.learning_rate(NerBertConfig(hidden_size=384, num_attention_heads=12, use_crf=True)) == 1e-4
    assert RECIPE.learning_rate(NerBertConfig(hidden_size=768, use_crf=True)) is None  # not measured: 5e-5
    assert RECIPE.learning_rate(NerBertConfig(hidden_size=384, num_attention_heads=12, use_crf=False)) == 1e-4


@pytest.mark.integration  # a whole run_ner.py run
@pytest.mark.parametrize("extra, rate", [([], 1e-4), (["--use_crf", "false"], 1e-4), (["--learning_rate", "2e-3"], 2e-3)])
def test_a_run_without_learning_rate_takes_the_measured_default(tiny_bert, tmp_path, caplog, extra, rate):
    argv = base_args(tiny_bert, tmp_path / "out", "--do_train", "--max_steps", "1", "--save_strategy", "no", *extra)
    at = argv.index("--learning_rate")
    del argv[at : at + 2]  # base_args' own rate (the first); one in ``extra`` stays
    with caplog.at_level(logging.INFO):
        main(argv)
    announced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Learning rate 0.0001: the default")]
    assert len(announced) == (1 if rate == 1e-4 else 0)
    assert f"| learning_rate | {rate:g} |" in (tmp_path / "out" / "README.md").read_text()
