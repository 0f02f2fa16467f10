"""Tests for ner/errors.py's `run_cli`: bad input ends with one `error:` line and a non-zero status, in each entry
point (run_ner.py, python -m ner predict, convert_tf_to_pytorch.py), and --debug / NER_DEBUG=1 show the traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from conftest import REPO
from ner.errors import DataFileError, run_cli


def parse_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--steps", type=int, required=True)
    return parser.parse_args(argv).steps


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (DataFileError("in.jsonl", 3, "bad tag; fix it"), 2, "error: in.jsonl:3: bad tag; fix it\n"),
        (ValueError("--max_seq_length 900 is over the limit"), 2, "error: --max_seq_length 900 is over the limit\n"),
        (FileNotFoundError(2, "No such file or directory", "x.txt"), 2, "error: x.txt: No such file or directory\n"),
        (PermissionError(13, "Permission denied", "out"), 1, "error: out: Permission denied\n"),
        (OSError(28, "No space left on device"), 1, "error: [Errno 28] No space left on device\n"),
    ],
)
def test_bad_input_is_one_line_and_a_status(error, status, message, capsys, monkeypatch):
    monkeypatch.delenv("NER_DEBUG", raising=False)

    def main(argv):
        raise error

    assert run_cli(main, []) == status
    assert capsys.readouterr().err == message


def test_argument_errors_are_one_line(capsys, monkeypatch):
    monkeypatch.delenv("NER_DEBUG", raising=False)
    assert run_cli(parse_main, ["--steps", "x"]) == 2
    assert capsys.readouterr().err == "error: argument --steps: invalid int value: 'x' (see tool --help)\n"
    assert run_cli(parse_main, []) == 2
    assert capsys.readouterr().err == "error: the following arguments are required: --steps (see tool --help)\n"
    # argparse is itself again afterwards
    with pytest.raises(SystemExit):
        parse_main([])


def test_success_returns_main_s_status(monkeypatch):
    monkeypatch.delenv("NER_DEBUG", raising=False)
    assert run_cli(parse_main, ["--steps", "3"]) == 3
    assert run_cli(lambda argv: {"f1": 1.0}, []) == 0


def test_debug_flag_or_variable_lets_the_exception_through(monkeypatch):
    monkeypatch.delenv("NER_DEBUG", raising=False)
    seen = []

    def main(argv):
        seen.append(argv)
        raise DataFileError("in.jsonl", 3, "bad")

    with pytest.raises(DataFileError):
        run_cli(main, ["--input", "x", "--debug"])
    with pytest.raises(DataFileError):
        run_cli(main, ["--debug", "--input", "x"])
    assert seen == [["--input", "x"], ["--input", "x"]]  # main never sees the flag
    monkeypatch.setenv("NER_DEBUG", "1")
    with pytest.raises(DataFileError):
        run_cli(main, [])
    monkeypatch.setenv("NER_DEBUG", "0")
    assert run_cli(main, []) == 2


def test_transformers_debug_option_is_left_alone(monkeypatch):
    monkeypatch.delenv("NER_DEBUG", raising=False)
    assert run_cli(lambda argv: len(argv), ["--debug", "underflow_overflow", "--x"]) == 3


# --- the entry points, as the shell runs them ------------------------------------------------------


def run(*command: str, debug: bool = False) -> subprocess.CompletedProcess:
    """One entry point run as the shell runs it (each start imports torch: seconds, so few of them)."""
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO))
    environment.pop("NER_DEBUG", None)
    if debug:
        environment["NER_DEBUG"] = "1"
    return subprocess.run([sys.executable, *command], cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.splitlines()[-1]] == [expected]


def test_run_ner_bad_data_file(tmp_path, monkeypatch):
    import run_ner

    data = tmp_path / "train.jsonl"
    data.write_text('{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a", "b"], "ner_tags": ["O"]}\n')
    command = ["--model_name_or_path", "unused", "--train_file", str(data), "--do_train",
               "--output_dir", str(tmp_path / "out"), "--data_cache_dir", str(tmp_path / "cache")]
    assert_one_error_line(run("run_ner.py", *command), f'error: {data}:2: expected one tag per word in "ner_tags": 2 words in "tokens", found 1 tags')
    # The same through run_cli in this process (a second interpreter start costs seconds): --debug raises.
    monkeypatch.delenv("NER_DEBUG", raising=False)
    with pytest.raises(DataFileError, match=f"{data}:2:"):
        run_cli(run_ner.main, [*command, "--debug"])
    assert run_cli(run_ner.main, ["--model_name_or_path", "unused", "--train_file", str(tmp_path / "no.json"), "--do_train",
                                  "--output_dir", str(tmp_path / "out")]) == 2


def test_ner_predict_bad_input(tiny_bert, tmp_path):
    from conftest import make_scaled_classifier_folder

    model = make_scaled_classifier_folder(tiny_bert, tmp_path / "model", ["O", "B-PER", "I-PER"])
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Maria"}\n{"text": 5}\n')
    command = ["-m", "ner", "predict", "--model", str(model), "--input", str(source), "--output", str(tmp_path / "o.jsonl"), "--device", "cpu"]
    assert_one_error_line(run(*command), f'error: {source}:2: "text" must be a string, found int.')
    assert_one_error_line(run("-m", "ner", "predict", "--model", str(model)), "error: the following arguments are required: --input (see python -m ner predict --help)")


def test_convert_bad_config(tmp_path):
    fixture = REPO / "tests" / "fixtures" / "tf" / "uncased_L-2_H-8_A-2"
    config = tmp_path / "bert_config.json"
    config.write_text('{\n  "hidden_size": 8,\n  "num_hidden_layers": 2,,\n}\n')
    command = ["convert_tf_to_pytorch.py", "--tf_checkpoint", str(fixture / "bert_model.ckpt"), "--bert_config", str(config),
               "--vocab", str(fixture / "vocab.txt"), "--output_dir", str(tmp_path / "out")]
    result = run(*command)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: {config}:3: not valid JSON")
    for shown in (run(*command, "--debug"), run(*command, debug=True)):
        assert shown.returncode != 0 and "Traceback" in shown.stderr and f"DataFileError: {config}:3:" in shown.stderr
    assert not (tmp_path / "out").exists()
