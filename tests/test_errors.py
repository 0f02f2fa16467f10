"""Tests for ner/errors.py's `run_cli`: bad input ends with one `error:` line and a non-zero status, in each entry
point (run_ner.py, python -m ner predict, convert_tf_to_pytorch.py), and --debug / NER_DEBUG=1 show the traceback."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

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
# One real start per entry point proves the whole path (the `__main__` block, run_cli, exit status, nothing
# else on stderr); the other cases call the same functions in this process.


class BadInput(NamedTuple):
    """An entry point's arguments on bad input, and the one error line it must end with."""

    command: list[str]
    error: str  # the whole line, or its start where the rest is Python's own wording
    whole_line: bool = True


def bad_run_ner_data(folder: Path) -> BadInput:
    """run_ner.py on a training file with a sentence of 2 words and 1 tag."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "train.jsonl"
    data.write_text('{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a", "b"], "ner_tags": ["O"]}\n')
    command = ["--model_name_or_path", "unused", "--train_file", str(data), "--do_train",
               "--output_dir", str(folder / "out"), "--data_cache_dir", str(folder / "cache")]
    return BadInput(command, f'error: {data}:2: expected one tag per word in "ner_tags": 2 words in "tokens", found 1 tags')


def bad_predict_input(folder: Path, model: Path) -> BadInput:
    """``python -m ner predict`` on JSON lines with a number for a text."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "in.jsonl"
    source.write_text('{"text": "Maria"}\n{"text": 5}\n')
    command = ["predict", "--model", str(model), "--input", str(source), "--output", str(folder / "o.jsonl"), "--device", "cpu"]
    return BadInput(command, f'error: {source}:2: "text" must be a string, found int.')


def bad_convert_config(folder: Path) -> BadInput:
    """convert_tf_to_pytorch.py with a bert_config.json that is not JSON (line 3)."""
    folder.mkdir(parents=True, exist_ok=True)
    fixture = REPO / "tests" / "fixtures" / "tf" / "uncased_L-2_H-8_A-2"
    config = folder / "bert_config.json"
    config.write_text('{\n  "hidden_size": 8,\n  "num_hidden_layers": 2,,\n}\n')
    command = ["--tf_checkpoint", str(fixture / "bert_model.ckpt"), "--bert_config", str(config),
               "--vocab", str(fixture / "vocab.txt"), "--output_dir", str(folder / "out")]
    return BadInput(command, f"error: {config}:3: not valid JSON", whole_line=False)


def assert_one_error_line(status: int, stderr: str, bad: BadInput) -> None:
    """Exit status 2 and, after any progress bars, the one error line ``bad`` expects; no traceback."""
    assert status == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [stderr.splitlines()[-1]], stderr
    assert errors[0] == bad.error if bad.whole_line else errors[0].startswith(bad.error), errors[0]


ENTRY_POINTS = {"run_ner.py": ["run_ner.py"], "python -m ner": ["-m", "ner"], "convert_tf_to_pytorch.py": ["convert_tf_to_pytorch.py"]}


@pytest.fixture(scope="module")
def from_the_shell(plain_model, tmp_path_factory) -> dict[str, tuple[BadInput, int, str]]:
    """Each entry point started as the shell starts it (without NER_DEBUG) on its bad input: the input, the
    exit status and stderr. Each start imports torch, seconds, so the three run at once."""
    root = tmp_path_factory.mktemp("shell")
    bad = {
        "run_ner.py": bad_run_ner_data(root / "run_ner"),
        "python -m ner": bad_predict_input(root / "ner", plain_model),
        "convert_tf_to_pytorch.py": bad_convert_config(root / "convert"),
    }
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO))
    environment.pop("NER_DEBUG", None)
    started = {}
    for i, (name, start) in enumerate(ENTRY_POINTS.items()):
        log = root / f"stderr-{i}.txt"  # a file, not a pipe: nobody reads a pipe until all three are started
        with log.open("w") as stream:
            started[name] = subprocess.Popen([sys.executable, *start, *bad[name].command], cwd=REPO, env=environment,
                                             stdout=subprocess.DEVNULL, stderr=stream), log
    try:
        for process, _ in started.values():
            process.wait(timeout=300)
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return {name: (bad[name], process.returncode, log.read_text()) for name, (process, log) in started.items()}


@pytest.mark.integration
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_bad_input_from_the_shell_is_one_error_line(from_the_shell, entry_point):
    bad, status, stderr = from_the_shell[entry_point]
    assert_one_error_line(status, stderr, bad)
    if entry_point == "convert_tf_to_pytorch.py":
        assert not Path(bad.command[bad.command.index("--output_dir") + 1]).exists()


@pytest.fixture
def no_debug(monkeypatch) -> None:
    monkeypatch.delenv("NER_DEBUG", raising=False)


def test_run_ner_bad_input(tmp_path, capsys, no_debug):
    import run_ner

    bad = bad_run_ner_data(tmp_path)
    assert_one_error_line(run_cli(run_ner.main, bad.command), capsys.readouterr().err, bad)
    with pytest.raises(DataFileError, match=re.escape(f"{tmp_path / 'train.jsonl'}:2:")):
        run_cli(run_ner.main, [*bad.command, "--debug"])
    missing = tmp_path / "no.json"
    capsys.readouterr()
    assert run_cli(run_ner.main, ["--model_name_or_path", "unused", "--train_file", str(missing), "--do_train",
                                  "--output_dir", str(tmp_path / "out")]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error: ") and str(missing) in last


def test_ner_predict_bad_input(plain_model, tmp_path, capsys, no_debug):
    from ner.predict.cli import main

    bad = bad_predict_input(tmp_path, plain_model)
    assert_one_error_line(run_cli(main, bad.command), capsys.readouterr().err, bad)
    assert not (tmp_path / "o.jsonl").exists()
    missing_input = BadInput(["predict", "--model", str(plain_model)],
                             "error: the following arguments are required: --input (see python -m ner predict --help)")
    assert_one_error_line(run_cli(main, missing_input.command), capsys.readouterr().err, missing_input)


def test_convert_bad_config(tmp_path, capsys, monkeypatch, no_debug):
    from convert_tf_to_pytorch import main

    bad = bad_convert_config(tmp_path)
    assert_one_error_line(run_cli(main, bad.command), capsys.readouterr().err, bad)
    config = tmp_path / "bert_config.json"
    with pytest.raises(DataFileError, match=re.escape(f"{config}:3: not valid JSON")):
        run_cli(main, [*bad.command, "--debug"])
    monkeypatch.setenv("NER_DEBUG", "1")
    with pytest.raises(DataFileError, match=re.escape(f"{config}:3: not valid JSON")):
        run_cli(main, bad.command)
    assert not (tmp_path / "out").exists()
