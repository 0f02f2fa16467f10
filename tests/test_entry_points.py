"""What the entry points tell their user is true: bad input and bad arguments end in one ``error:`` line naming the
flag or path, exit status 2, before the long work and with nothing left behind; the model card states the run that
was made (data limits, the length that ended training, warmup as given, plain values); prediction files of the same
data agree on the gold tags; weights are readable as the umask allows."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

import convert_tf_to_pytorch
import run_ner
from conftest import DEMO_DATA
from ner.predict import cli
from ner.errors import run_cli


def run_fails(main, argv: list[str], capsys, *leaves: Path) -> str:
    """Run an entry point as the shell does; assert exit status 2 with one ``error:`` line (after any log lines),
    no traceback, and none of ``leaves`` created. Returns the error line's message."""
    status = run_cli(main, argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip("\n").endswith(errors[0]), err
    for path in leaves:
        assert not path.exists(), f"{path} left behind"
    return errors[0].removeprefix("error: ")


def run_args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model), "--train_file", str(DEMO_DATA / "train.txt"),
        "--validation_file", str(DEMO_DATA / "dev.txt"), "--output_dir", str(out),
        "--data_cache_dir", str(out.parent / "cache"), "--do_train", "--do_eval", "--max_steps", "1",
        "--save_strategy", "no", "--report_to", "none", *extra,
    ]


def damaged_copy(folder: Path, destination: Path, *, cut_weights: bool = False, drop_tokenizer: bool = False) -> Path:
    shutil.copytree(folder, destination)
    if cut_weights:
        weights = destination / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size - 100])
    if drop_tokenizer:
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (destination / name).unlink(missing_ok=True)
    return destination


# --- run_ner.py -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--per_device_train_batch_size", "0"], r"--per_device_train_batch_size must be 1 or more, got 0"),
        (["--per_device_eval_batch_size", "-2"], r"--per_device_eval_batch_size must be 1 or more, got -2"),
        (["--max_seq_length", "0"], r"--max_seq_length 0 leaves no room .* give at least 3"),
        (["--stride", "-1"], r"--stride must be 0 or more, got -1"),
        (["--max_train_samples", "0"], r"--max_train_samples must be 1 or more, got 0"),
        (["--use_crf", "true", "--decoding", "constrained"], r"--decoding constrained does not go with a CRF"),
    ],
)
def test_run_ner_refuses_bad_values_naming_the_flag(tiny_bert, tmp_path, capsys, extra, pattern):
    message = run_fails(run_ner.main, run_args(tiny_bert, tmp_path / "out", *extra), capsys, tmp_path / "out")
    assert re.search(pattern, message), message


def test_run_ner_refuses_a_folder_for_a_file_and_a_file_for_the_output_folder(tiny_bert, tmp_path, capsys):
    argv = run_args(tiny_bert, tmp_path / "out")
    argv[argv.index("--train_file") + 1] = str(DEMO_DATA)
    assert run_fails(run_ner.main, argv, capsys, tmp_path / "out") == f"--train_file {DEMO_DATA}: a folder; give the data file itself."
    taken = tmp_path / "taken"
    taken.write_text("mine\n")
    message = run_fails(run_ner.main, run_args(tiny_bert, taken), capsys, tmp_path / "cache")
    assert message == f"--output_dir {taken}: a file is there; give the path of a folder."
    assert taken.read_text() == "mine\n"


def test_run_ner_names_damaged_weights_and_missing_tokenizer_files(demo_model, tmp_path, capsys):
    cut = damaged_copy(demo_model, tmp_path / "cut", cut_weights=True)
    argv = ["--model_name_or_path", str(cut), "--test_file", str(DEMO_DATA / "test.txt"), "--do_predict",
            "--output_dir", str(tmp_path / "out"), "--data_cache_dir", str(tmp_path / "cache"), "--report_to", "none"]
    message = run_fails(run_ner.main, argv, capsys, tmp_path / "out")
    assert message.startswith(f"{cut / 'model.safetensors'}: not a readable safetensors file (")
    assert "cut short or damaged" in message
    bare = damaged_copy(demo_model, tmp_path / "bare", drop_tokenizer=True)
    argv[1] = str(bare)
    message = run_fails(run_ner.main, argv, capsys, tmp_path / "out")
    assert message.startswith(f"{bare}: no tokenizer files (none of tokenizer.json, vocab.txt")


def test_help_describes_last_and_the_bare_debug_flag(capsys):
    with pytest.raises(SystemExit):
        run_ner.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'last' for the newest complete checkpoint-N of this run" in text
    assert "Alone (a bare --debug, or NER_DEBUG=1 in the environment): show the Python traceback" in text


# --- the model card -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_run(tiny_bert, tmp_path_factory) -> Path:
    """A run on the first sentences of train and dev (the whole test), stopped by --max_steps, --label_all_tokens."""
    root = tmp_path_factory.mktemp("limited")
    previous = os.umask(0o027)
    try:
        run_ner.main([
            "--model_name_or_path", str(tiny_bert), "--train_file", str(DEMO_DATA / "train.txt"),
            "--validation_file", str(DEMO_DATA / "dev.txt"), "--test_file", str(DEMO_DATA / "test.txt"),
            "--output_dir", str(root / "out"), "--data_cache_dir", str(root / "cache"),
            "--do_train", "--do_eval", "--do_predict", "--max_train_samples", "40", "--max_eval_samples", "10",
            "--max_steps", "3", "--per_device_train_batch_size", "8", "--label_all_tokens",
            "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none",
        ])
    finally:
        os.umask(previous)
    return root / "out"


def card_parts(folder: Path) -> tuple[dict, str]:
    _, header, body = (folder / "README.md").read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(header), body


def sentences(path: Path) -> int:
    return sum(1 for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip() and not block.startswith("-DOCSTART-"))


@pytest.mark.integration  # whole run_ner.py runs
def test_the_card_states_the_limits_on_the_data(limited_run):
    metadata, body = card_parts(limited_run)
    train, dev, test = (sentences(DEMO_DATA / name) for name in ("train.txt", "dev.txt", "test.txt"))
    assert f"on the first 40 of the {train} sentences of `data/train.txt`" in body
    assert f"evaluated on the first 10 of the {dev} sentences of `data/dev.txt` (validation)" in body
    assert f"`data/test.txt` (test, {test} sentences)" in body
    splits = [result["dataset"]["split"] for result in metadata["model-index"][0]["results"]]
    assert splits == ["validation[:10]", "test"]  # a subset named as a subset


@pytest.mark.integration  # whole run_ner.py runs
def test_the_card_lists_what_ended_training_and_plain_values(limited_run):
    _, body = card_parts(limited_run)
    table = dict(re.findall(r"^\| (\S+) \| (.*) \|$", body, flags=re.M))
    assert table["max_steps"] == "3" and "num_train_epochs" not in table
    assert re.fullmatch(r"3 steps \(\d+\.\d\d epochs\)", table["trained"])
    assert table["warmup_ratio"] == "0.1" and "warmup_steps" not in table
    assert table["lr_scheduler_type"] == "linear" and "." not in table["optim"]
    assert table["max_train_samples"] == "40" and table["max_eval_samples"] == "10"
    assert table["label_all_tokens"] == "True"
    assert "trained on every sub-token of each word (`--label_all_tokens`" in body
    assert "trained on the first sub-token" not in body


@pytest.mark.integration  # whole run_ner.py runs
def test_weights_are_readable_as_the_umask_allows(limited_run):
    # The run was made under umask 027: safetensors would write 0600, open() gives 0640.
    weights = [limited_run / "model.safetensors", *limited_run.glob("checkpoint-*/model.safetensors")]
    assert len(weights) == 3
    for path in weights:
        assert oct(path.stat().st_mode & 0o777) == oct(0o640), path
    assert oct((limited_run / "config.json").stat().st_mode & 0o777) == oct(0o640)


@pytest.mark.integration  # whole run_ner.py runs
def test_one_gold_rule_for_both_prediction_files(demo_model, tmp_path):
    """IOB1 gold (entities opened by I-) is written as IOB2 by run_ner.py --do_predict and python -m ner predict."""
    iob1 = tmp_path / "test.iob1.txt"
    lines, previous = [], "O"
    for line in (DEMO_DATA / "test.txt").read_text(encoding="utf-8").split("\n"):
        fields = line.split()
        if len(fields) >= 2 and fields[-1].startswith("B-") and previous[2:] != fields[-1][2:]:
            line = line[: -len(fields[-1])] + "I-" + fields[-1][2:]
        previous = fields[-1] if len(fields) >= 2 else "O"
        lines.append(line)
    iob1.write_text("\n".join(lines), encoding="utf-8")
    assert iob1.read_text() != (DEMO_DATA / "test.txt").read_text()
    run_ner.main(["--model_name_or_path", str(demo_model), "--test_file", str(iob1), "--do_predict",
                  "--output_dir", str(tmp_path / "out"), "--data_cache_dir", str(tmp_path / "cache"), "--report_to", "none"])
    cli.main(["predict", "--model", str(demo_model), "--input", str(iob1), "--output", str(tmp_path / "pred.txt"),
              "--device", "cpu"])
    ours = (tmp_path / "pred.txt").read_text(encoding="utf-8")
    assert (tmp_path / "out" / "predict_predictions.txt").read_text(encoding="utf-8") == ours
    gold = [line.split("\t")[1] for line in ours.split("\n") if "\t" in line]
    expected = [line.split()[-1] for line in (DEMO_DATA / "test.txt").read_text().split("\n") if len(line.split()) > 1]
    assert gold == [tag for tag in expected if tag != "-X-"] and any(tag.startswith("B-") for tag in gold)


# --- python -m ner predict ----------------------------------------------------------------------------------


@pytest.fixture
def no_model_load(monkeypatch):
    """Make loading a model fail the test: refusals must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("ner.predict.predictor.NerPredictor.__init__", refuse)


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--batch_size", "0"], r"^--batch_size must be 1 or more, got 0\.$"),
        (["--chunk_size", "-3"], r"^--chunk_size must be 1 or more, got -3\.$"),
        (["--max_seq_length", "2"], r"^--max_seq_length 2 leaves no room"),
        (["--stride", "-1"], r"^--stride must be 0 or more, got -1\.$"),
    ],
)
def test_predict_refuses_bad_values_before_loading(demo_model, tmp_path, capsys, no_model_load, extra, pattern):
    output = tmp_path / "o.txt"
    argv = ["predict", "--model", str(demo_model), "--input", str(DEMO_DATA / "test.txt"), "--output", str(output), *extra]
    message = run_fails(cli.main, argv, capsys, output, tmp_path / "o.txt.parts")
    assert re.search(pattern, message), message


def test_predict_refuses_a_folder_as_output_before_the_work(demo_model, tmp_path, capsys, no_model_load):
    folder = tmp_path / "taken"
    folder.mkdir()
    argv = ["predict", "--model", str(demo_model), "--input", str(DEMO_DATA / "test.txt"), "--output", str(folder)]
    message = run_fails(cli.main, argv, capsys, tmp_path / "taken.parts")
    assert message == f"--output {folder}: a folder; give the path of the file to write."
    (tmp_path / "plain").write_text("x")
    argv[-1] = str(tmp_path / "plain" / "sub" / "o.txt")
    message = run_fails(cli.main, argv, capsys, tmp_path / "plain.parts")
    assert message == f"--output {argv[-1]}: {tmp_path / 'plain'} is a file, not a folder to write in."


def test_predict_names_damaged_weights_and_missing_tokenizer_files(demo_model, tmp_path, capsys):
    output = tmp_path / "o.txt"
    for options, start in (
        ({"cut_weights": True}, "model.safetensors: not a readable safetensors file ("),
        ({"drop_tokenizer": True}, ": no tokenizer files (none of tokenizer.json"),
    ):
        folder = damaged_copy(demo_model, tmp_path / str(len(options) + len(start)), **options)
        argv = ["predict", "--model", str(folder), "--input", str(DEMO_DATA / "test.txt"), "--output", str(output)]
        message = run_fails(cli.main, argv, capsys, output, tmp_path / "o.txt.parts")
        assert message.startswith(str(folder)) and start in message, message


# --- convert_tf_to_pytorch.py ------------------------------------------------------------------------------------


def test_converter_names_a_missing_release_folder(tmp_path, capsys):
    message = run_fails(convert_tf_to_pytorch.main, [str(tmp_path / "nope")], capsys, tmp_path / "nope-pytorch")
    assert message.startswith(f"{tmp_path / 'nope'}: no such folder.")


# --- found by bench/fuzz_arguments.py ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--num_train_epochs", "inf"], r"^--num_train_epochs must be a finite number, got inf\.$"),
        (["--num_train_epochs", "0"], r"^--num_train_epochs must be more than 0, got 0\.$"),
        (["--max_steps", "0"], r"^--max_steps must be 1 or more, or -1, got 0\.$"),
        (["--learning_rate", "nan"], r"^--learning_rate must be a finite number, got nan\.$"),
        (["--adam_beta2", "1"], r"^--adam_beta2 must be from 0 to 1 \(1 excluded\), got 1\.$"),
        (["--logging_steps", "-0.5"], r"^--logging_steps must be more than 0, got -0\.5\.$"),
        (["--eval_accumulation_steps", "0"], r"^--eval_accumulation_steps must be 1 or more, got 0\.$"),
        (["--data_seed", "99999999999999999999"], r"^--data_seed must be from 0 to 4294967295, got 99999999999999999999\.$"),
        (["--torch_empty_cache_steps", "99999999999999999999"], r"^--torch_empty_cache_steps 99999999999999999999 is too large"),
        (["--seed", "-1"], r"^--seed must be from 0 to 4294967295, got -1\.$"),
        (["--dataloader_prefetch_factor", "2"], r"^--dataloader_prefetch_factor is for loader processes"),
        (["--classifier_dropout", "nan"], r"^--classifier_dropout must be a finite number, got nan\.$"),
        (["--head_layers", "99"], r"^--head_layers must be from 1 to 16, got 99\.$"),
        (["--context_size", "-1"], r"^--context_size must be 0 or more, got -1\.$"),
        (["--crf_token_loss", "-0.5"], r"^--crf_token_loss must be 0 or more, got -0\.5\.$"),
        (["--deepspeed", "nope.json"], r"^--deepspeed nope\.json: no such file; give a JSON file\.$"),
        (["--tokenizer_name", "/no/such/tokenizer"], r"^--tokenizer_name /no/such/tokenizer: no such file or folder\.$"),
    ],
)
def test_run_ner_refuses_what_the_fuzzer_found(tiny_bert, tmp_path, capsys, extra, pattern):
    message = run_fails(run_ner.main, run_args(tiny_bert, tmp_path / "out", *extra), capsys, tmp_path / "out")
    assert re.search(pattern, message), message


def test_run_ner_refuses_a_file_for_any_folder_and_a_plain_file_for_a_tokenizer(tiny_bert, tmp_path, capsys):
    taken = tmp_path / "taken.bin"
    taken.write_bytes(os.urandom(64))
    for flag in ("--data_cache_dir", "--cache_dir"):
        argv = run_args(tiny_bert, tmp_path / "out")
        argv += [flag, str(taken)] if flag not in argv else []
        if flag in argv[:-2]:
            argv[argv.index(flag) + 1] = str(taken)
        assert run_fails(run_ner.main, argv, capsys, tmp_path / "out") == f"{flag} {taken}: a file is there; give the path of a folder."
    argv = run_args(tiny_bert, tmp_path / "out", "--tokenizer_name", str(taken))
    assert "a file that is not a SentencePiece .model" in run_fails(run_ner.main, argv, capsys, tmp_path / "out")


def test_predict_and_converter_name_missing_models_and_taken_outputs(tmp_path, capsys, no_model_load):
    argv = ["predict", "--model", str(tmp_path / "nope"), "--input", str(DEMO_DATA / "test.txt")]
    assert run_fails(cli.main, argv, capsys) == f"--model {tmp_path / 'nope'}: no such file or folder."
    taken = tmp_path / "taken"
    taken.write_text("x")
    release = Path(__file__).resolve().parent / "fixtures" / "tf" / "uncased_L-2_H-8_A-2"
    message = run_fails(convert_tf_to_pytorch.main, [str(release), "--output_dir", str(taken)], capsys)
    assert message == f"--output_dir {taken}: a file is there; give the path of a folder."
    assert taken.read_text() == "x"


def test_unreadable_label_lists_and_settings_files_are_named(tiny_bert, tmp_path, capsys):
    noise = tmp_path / "noise.txt"
    noise.write_bytes(b"\xcd\xff\x00O\n")
    argv = run_args(tiny_bert, tmp_path / "out", "--label_list", str(noise))
    assert run_fails(run_ner.main, argv, capsys, tmp_path / "out").startswith(f"{noise}:1: the file is not UTF-8")
    empty = tmp_path / "accelerate.json"
    empty.write_text("")
    argv = run_args(tiny_bert, tmp_path / "out", "--accelerator_config", str(empty))
    assert run_fails(run_ner.main, argv, capsys, tmp_path / "out").startswith(f"--accelerator_config {empty}: not a JSON file")
