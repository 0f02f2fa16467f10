#!/usr/bin/env python
"""Fuzz the command-line arguments of the three entry points and check how every run ends.

The promise checked: bad input and bad arguments end with exactly one line on stderr starting with
``error: `` (naming the flag or path, and the fix), exit status 2, no Python traceback, and nothing left
behind. A value that is valid may instead be accepted (exit 0); those cases are listed for a human to judge.

Entry points and what is tried:

- ``run_ner.py`` (``run_ner.main``), ``python -m ner predict`` (``ner.predict.cli.main``) and
  ``convert_tf_to_pytorch.py`` (``convert_tf_to_pytorch.main``), each through ``ner.errors.run_cli`` as from
  the shell, on a valid base command built on small fixtures in a temporary folder (a tiny random BERT, CoNLL
  files of 6 sentences, a model trained by the run_ner base command, a copy of ``tests/fixtures/tf/finetuned_ner``).
- Every numeric option (argparse ``type`` int or float, or a function that turns "1" into a number), found by
  walking the parsers: -1, 0, -0.5, nan, inf, -inf, 1e309, abc, "" and 99999999999999999999, as ``--flag=VALUE``.
- Every path option (`PATH_NAMES`, and names ending in _file, _dir or _path): a missing path, a folder where a file
  is expected and a file where a folder is, an empty file, random bytes, a path under a missing folder for outputs.

Cases whose value argparse refuses by its type run first (fast), then the others. Each case runs in a child
process forked from this one after the entry points are imported (the in-process speed of ``run_cli(main, argv)``,
without one case's global state reaching the next), with its stdout/stderr captured at the file descriptors, a
wall-clock limit (``--timeout``) and a limit on the processes it starts; ``--mode subprocess`` runs each in a
fresh interpreter instead. Classes:

- ``ok-error``: exit 2, the last non-empty stderr line is the only one starting with ``error: ``, the lines
  before it are logging output or progress bars, no traceback, no file written or changed (empty folders allowed);
- ``accepted``: exit 0;
- ``hung``: still running at ``--timeout`` seconds (killed);
- ``bad``: anything else (a traceback, exit 1 or another status, several ``error:`` lines, other lines such as
  Python warnings before the error line, files left behind, too many processes started); ``reasons`` say which.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python3 bench/fuzz_arguments.py         # all: 3 to 10 min on 2 cores
    python3 bench/fuzz_arguments.py --only predict,convert                          # some entry points
    python3 bench/fuzz_arguments.py --options learning_rate,output_dir --limit 10   # some options, first 10 cases
    python3 bench/fuzz_arguments.py --mode subprocess --timeout 180                 # a fresh interpreter per case

Results: one JSON line per case in ``--out`` (default bench/fuzz_arguments.jsonl), paths under the temporary
folder written as ``$TMP``, with whether the error line names the option or the path (``names_option``, a
heuristic) and what an accepted case warned about (``notes``); then a summary on stdout. Most of the time goes
to the accepted cases (a whole run_ner run each, about 2 s) and to those killed at ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENTRY_POINTS = ("run_ner", "predict", "convert")
PROGRAMS = {"run_ner": "run_ner.py", "predict": "python -m ner", "convert": "convert_tf_to_pytorch.py"}

NUMERIC_VALUES = ("-1", "0", "-0.5", "nan", "inf", "-inf", "1e309", "abc", "", "99999999999999999999")

# Path options, chosen by reading the options' names and help: these, and names ending in a SUFFIX_KINDS key.
# Left out on purpose: dataset_name (a Hub name), token/hub_token/hub_model_id/run_name (not paths),
# lr_scheduler_kwargs/optim_args/*_kwargs (JSON strings).
PATH_NAMES = frozenset({
    # run_ner.py
    "model_name_or_path", "config_name", "tokenizer_name", "label_list", "resume_from_checkpoint", "cache_dir",
    "data_cache_dir", "logging_dir", "deepspeed", "fsdp_config", "accelerator_config",
    # python -m ner predict
    "model", "input", "output",
    # convert_tf_to_pytorch.py (and label_list, output_dir)
    "tf_checkpoint", "bert_config", "vocab", "folder",
})
# What a path option names: "file" (read), "dir" (a folder read), "either" (a file or a folder, read),
# "out_dir" (a folder written), "out_file" (a file written). By name, else by suffix, else "file".
PATH_KINDS = {
    "model_name_or_path": "either", "config_name": "either", "tokenizer_name": "either", "tf_checkpoint": "either",
    "resume_from_checkpoint": "dir", "model": "dir", "folder": "dir", "output": "out_file",
}
SUFFIX_KINDS = {"_file": "file", "_dir": "out_dir", "_path": "either"}
PATH_VARIANTS = {
    "file": ("missing", "directory", "empty file", "binary file"),
    "dir": ("missing", "text file", "empty directory", "binary file"),
    "either": ("missing", "empty directory", "empty file", "binary file"),
    "out_dir": ("empty file", "binary file", "under missing folder"),
    "out_file": ("directory", "under missing folder"),
}
# Options the base command would not read as it stands, and what it needs so that it does.
CONTEXT: dict[str, dict[str, str | None]] = {
    "num_train_epochs": {"--max_steps": None},  # None: the flag is removed
    "save_steps": {"--save_strategy": "steps"},
    "save_total_limit": {"--save_strategy": "steps", "--save_steps": "1"},
    "eval_steps": {"--eval_strategy": "steps"},
    "head_hidden_size": {"--head_layers": "1"},
    "dataloader_prefetch_factor": {"--dataloader_num_workers": "1"},
}
MAX_PROCESSES = 8  # a case whose processes outnumber this is stopped (e.g. a huge --dataloader_num_workers)
TAIL_LINES = 8  # stderr lines kept in the record of a bad or hung case

LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d|\d{4}-\d\d-\d\d[ T][\d:,.]+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
PROGRESS_LINE = re.compile(r"\[\d\d:\d\d(:\d\d)?(<|,|\])|\d+%\|")  # tqdm
ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours and tqdm's cursor moves

SENTENCES = [
    [("john", "B-PER"), ("smith", "I-PER"), ("said", "O"), ("in", "O"), ("paris", "B-LOC"), (".", "O")],
    [("the", "O"), ("bank", "O"), ("of", "O"), ("london", "B-LOC"), ("won", "O")],
    [("mary", "B-PER"), ("was", "O"), ("in", "O"), ("berlin", "B-LOC"), ("with", "O"), ("tom", "B-PER")],
    [("police", "O"), ("said", "O"), ("it", "O"), ("is", "O"), ("new", "O")],
    [("anna", "B-PER"), ("lee", "I-PER"), ("has", "O"), ("two", "O"), ("clubs", "O"), ("in", "O"), ("rome", "B-LOC")],
    [("the", "O"), ("team", "O"), ("from", "O"), ("madrid", "B-LOC"), ("won", "O"), ("the", "O"), ("match", "O")],
]


@dataclass
class Case:
    entry: str
    option: str  # the option's name (its dest), or "folder" for the converter's positional argument
    value: str  # the value given, or the path variant
    kind: str  # "number", or the path option's kind (PATH_KINDS)
    phase: str  # "parse": argparse refuses the value by its type; "run": the program gets it


@dataclass
class Fixtures:
    root: Path  # the temporary folder: fixtures/, cases/, cwd/ (the children's working folder), captures/, hf_home/
    model: Path = field(init=False)
    data: dict[str, Path] = field(init=False)
    trained: Path = field(init=False)
    release: Path = field(init=False)

    def __post_init__(self) -> None:
        base = self.root / "fixtures"
        self.model, self.trained, self.release = base / "tiny-bert", base / "trained", base / "finetuned_ner"
        self.data = {split: base / f"{split}.conll" for split in ("train", "dev", "test")}


@dataclass
class Outcome:
    rc: int | None
    stderr: str
    traceback: str | None
    logged: set[str]
    seconds: float
    timed_out: bool = False
    processes: int = 0  # most processes of the case seen at once, beyond its own


# --- options ----------------------------------------------------------------------------------------


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Each entry point's parser (for predict: its sub-command's); the converter's has its positional ``folder``."""
    from transformers import HfArgumentParser

    import convert_tf_to_pytorch
    import run_ner
    from ner.predict.cli import build_parser
    from ner.training.arguments import NerTrainingArguments

    convert = HfArgumentParser(convert_tf_to_pytorch.ConversionArguments)
    convert.add_argument("folder", nargs="?")
    return {
        "run_ner": HfArgumentParser((run_ner.ModelArguments, run_ner.DataArguments, NerTrainingArguments)),
        "predict": build_parser()[1],
        "convert": convert,
    }


def is_numeric(action: argparse.Action) -> bool:
    """An option that takes one number: type int or float, or a function that reads "1" as a number."""
    if not action.option_strings or action.nargs not in (None, "?") or action.choices or action.type is None:
        return False
    if action.type in (int, float):
        return True
    try:
        value = action.type("1")
    except Exception:
        return False
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def path_kind(name: str) -> str | None:
    """What the option ``name`` names (a key of PATH_VARIANTS), or None for an option that is not a path."""
    if name in PATH_KINDS:
        return PATH_KINDS[name]
    suffix = next((suffix for suffix in SUFFIX_KINDS if name.endswith(suffix)), None)
    return SUFFIX_KINDS[suffix] if suffix else "file" if name in PATH_NAMES else None


def parse_phase(action: argparse.Action, value: str) -> str:
    """"parse" when argparse refuses ``value`` by the option's type or choices, else "run"."""
    try:
        parsed = action.type(value) if action.type else value
    except Exception:
        return "parse"
    return "parse" if action.choices and parsed not in action.choices else "run"


def entry_cases(entry: str, parser: argparse.ArgumentParser) -> list[Case]:
    """The cases of one entry point: every numeric option by every value, every path option by its variants."""
    cases = []
    for action in parser._actions:
        name = action.dest
        if is_numeric(action):
            cases += [Case(entry, name, value, "number", parse_phase(action, value)) for value in NUMERIC_VALUES]
        elif (kind := path_kind(name)) and action.type in (None, str) and action.nargs in (None, "?"):
            cases += [Case(entry, name, variant, kind, "run") for variant in PATH_VARIANTS[kind]]
    return cases


def all_cases(only: set[str], options: set[str] | None) -> list[Case]:
    """Every case of the chosen entry points (and options), argparse's refusals first."""
    cases = [case for entry, parser in parsers().items() if entry in only for case in entry_cases(entry, parser)]
    if options:
        cases = [case for case in cases if case.option in options]
    return sorted(cases, key=lambda case: case.phase != "parse")


# --- argv -----------------------------------------------------------------------------------------


def drop_option(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (the next word, unless that is another flag)."""
    out, skip = [], False
    for position, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word == flag:
            following = argv[position + 1] if position + 1 < len(argv) else "--"
            skip = not following.startswith("--")
            continue
        out.append(word)
    return out


def set_option(argv: list[str], flag: str, value: str | None) -> list[str]:
    """``argv`` with ``flag=value`` in place of any ``flag`` it had (``value`` None: only removed)."""
    argv = drop_option(argv, flag)
    return argv if value is None else [*argv, f"{flag}={value}"]


def base_argv(entry: str, fx: Fixtures, out: Path) -> list[str]:
    """A valid command line of ``entry`` that writes under ``out`` (a folder that does not exist yet)."""
    if entry == "run_ner":
        return [
            "--model_name_or_path", str(fx.model), "--train_file", str(fx.data["train"]),
            "--validation_file", str(fx.data["dev"]), "--test_file", str(fx.data["test"]), "--output_dir", str(out),
            "--do_train", "--do_eval", "--do_predict", "--max_steps", "1", "--save_strategy", "no",
            "--report_to", "none", "--per_device_train_batch_size", "4",
        ]
    if entry == "predict":
        return ["predict", "--model", str(fx.trained), "--input", str(fx.data["test"]),
                "--output", str(out / "pred.txt")]
    return [str(fx.release), "--output_dir", str(out)]


def make_path(variant: str, folder: Path, suffix: str) -> Path:
    """Create what ``variant`` names inside ``folder`` (nothing for a missing path) and return its path."""
    if variant == "missing":
        return folder / f"no_such_path{suffix}"
    if variant == "under missing folder":
        return folder / "no_such_folder" / f"sub{suffix}"
    if variant in ("directory", "empty directory"):
        (folder / "a_folder").mkdir()
        return folder / "a_folder"
    path = folder / {"text file": "a_file", "empty file": "empty", "binary file": "random"}[variant]
    path = path.with_suffix(suffix or ".bin")
    if variant == "text file":
        path.write_text("not what was asked for\n")
    elif variant == "binary file":
        path.write_bytes(random.Random(0).randbytes(4096))
    else:
        path.touch()
    return path


def case_argv(case: Case, fx: Fixtures, folder: Path) -> tuple[list[str], str | None]:
    """The command line of ``case`` (the base command writing to ``folder/out``, with the case's value) and the
    path it gives, if any."""
    argv, path = base_argv(case.entry, fx, folder / "out"), None
    if case.entry == "predict":
        (folder / "out").mkdir()  # the base writes out/pred.txt
    if case.kind == "number":
        value = case.value
    else:
        suffix = ".json" if "config" in case.option or case.option == "deepspeed" else ".txt"
        if case.kind in ("dir", "out_dir") or case.option == "tf_checkpoint":
            suffix = ""
        value = path = str(make_path(case.value, folder, suffix))
    for flag, setting in CONTEXT.get(case.option, {}).items():
        argv = set_option(argv, flag, setting)
    if case.option == "folder":
        return [value, *argv[1:]], path
    return set_option(argv, f"--{case.option}", value), path


# --- running one case -----------------------------------------------------------------------------


def entry_main(entry: str) -> Callable[[list[str]], Any]:
    import convert_tf_to_pytorch
    import ner.predict.cli
    import run_ner

    return {"run_ner": run_ner.main, "predict": ner.predict.cli.main, "convert": convert_tf_to_pytorch.main}[entry]


def tap_logging() -> list[str]:
    """Record every line that logging writes from now on (so that logging output is told from other stderr lines)."""
    lines: list[str] = []
    emit = logging.StreamHandler.emit

    def tapped(handler: logging.StreamHandler, record: logging.LogRecord) -> None:
        try:
            lines.extend(line.rstrip() for line in handler.format(record).splitlines())
        except Exception:
            pass
        emit(handler, record)

    logging.StreamHandler.emit = tapped  # type: ignore[method-assign]
    return lines


def child_run(entry: str, argv: list[str], result_path: Path) -> None:
    """Run ``entry`` as the shell would (stdout and stderr already redirected) and write what happened as JSON."""
    from ner.errors import run_cli

    logged = tap_logging()
    sys.argv = [PROGRAMS[entry], *argv]
    rc, trace = None, None
    try:
        rc = run_cli(entry_main(entry), argv)
    except SystemExit as stop:  # as the interpreter turns it into an exit status
        rc = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, (int, type(None))):
            print(stop.code, file=sys.stderr)
    except BaseException:
        trace = traceback.format_exc()
        sys.stderr.write(trace)
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    result_path.write_text(json.dumps({"rc": rc, "traceback": trace, "logged": logged}))


def redirect_fds(stdout: Path, stderr: Path) -> None:
    """Point file descriptors 0, 1 and 2 at /dev/null and the capture files (where C code writes too)."""
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)


def count_processes(pid: int) -> int:
    try:
        import psutil

        return len(psutil.Process(pid).children(recursive=True))
    except Exception:  # psutil missing, or the process just ended
        return 0


def kill_group(pid: int) -> None:
    """Kill the case's process group (its id is the case's own pid: the case and everything it started)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def exited(pid: int) -> bool:
    """Whether the case's process has ended; it is not reaped, so that its pid (its group's id) stays ours."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def supervise(pid: int, timeout: float) -> tuple[int | None, bool, int]:
    """Wait for the case, killing it past ``timeout`` or MAX_PROCESSES: (exit status or None if killed, whether
    killed for time, most processes it had at once)."""
    deadline, most, pause, killed = time.monotonic() + timeout, 0, 0.01, False
    while not exited(pid):
        most = max(most, count_processes(pid))
        if most > MAX_PROCESSES or time.monotonic() > deadline:
            killed = True
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
    kill_group(pid)  # the case if it still runs, and whatever it left running
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return (None if killed else status), killed and most <= MAX_PROCESSES, most


def fork_case(entry: str, argv: list[str], cwd: Path, capture: Path) -> int:
    """Start the case in a child forked from this process (its own process group); its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setpgid(0, 0)
            os.chdir(cwd)
            redirect_fds(capture / "stdout", capture / "stderr")
            child_run(entry, argv, capture / "result.json")
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    try:
        os.setpgid(pid, pid)
    except (ProcessLookupError, PermissionError):
        pass
    return pid


def spawn_case(entry: str, argv: list[str], cwd: Path, capture: Path) -> int:
    """Start the case in a fresh interpreter (``--mode subprocess``, its own process group); its pid."""
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, "--child", entry, str(capture / "result.json"), "--", *argv]
    with open(capture / "stdout", "wb") as out, open(capture / "stderr", "wb") as err:
        process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                   start_new_session=True)
    process.returncode = 0  # `supervise` reaps it: keep Popen from polling a pid that is no longer its own
    return process.pid


def run_case(entry: str, argv: list[str], fx: Fixtures, mode: str, timeout: float) -> Outcome:
    """Run one command line of ``entry`` in a child process and collect how it ended."""
    capture = Path(tempfile.mkdtemp(dir=fx.root / "captures"))
    start = time.monotonic()
    pid = (fork_case if mode == "fork" else spawn_case)(entry, argv, fx.root / "cwd", capture)
    status, timed_out, most = supervise(pid, timeout)
    seconds = time.monotonic() - start
    stderr = (capture / "stderr").read_text(errors="replace")
    result = json.loads((capture / "result.json").read_text()) if (capture / "result.json").is_file() else {}
    shutil.rmtree(capture)
    # The entry point's status, unless the child was killed (None) or ended otherwise (a signal: negative).
    rc = result["rc"] if status == 0 and "rc" in result else status
    return Outcome(rc, stderr, result.get("traceback"), set(result.get("logged", [])), seconds, timed_out, most)


# --- classification -------------------------------------------------------------------------------


def snapshot(root: Path, skip: Iterable[str]) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root`` (less the top-level names in ``skip``): is-folder, size and mtime."""
    found = {}
    for folder, dirs, files in os.walk(root):
        if folder == str(root):
            dirs[:] = [name for name in dirs if name not in skip]
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            found[os.path.relpath(path, root)] = (name in dirs, info.st_size, info.st_mtime_ns)
    return found


def left_behind(before: dict, after: dict) -> list[str]:
    """Files the case wrote, changed or removed (a folder only if it is not empty)."""
    changed = []
    for path, (is_dir, size, mtime) in after.items():
        old = before.get(path)
        if old is None and is_dir and any(p.startswith(path + os.sep) for p in after):
            continue  # a new folder: its new files are listed
        if old is None and not is_dir:
            changed.append(path)
        elif old is not None and not is_dir and old != (is_dir, size, mtime):
            changed.append(f"{path} (changed)")
    changed += [f"{path} (removed)" for path in before if path not in after]
    return sorted(changed)


def stray_lines(lines: list[str], logged: set[str]) -> list[str]:
    """Non-empty stderr lines that are neither logging output nor progress bars."""
    return [line for line in lines if line not in logged and ESCAPE.sub("", line).strip()
            and not LOG_LINE.match(line) and not PROGRESS_LINE.search(line)]


def error_message(line: str) -> str | None:
    """The ``error: ...`` message of ``line``: at its start, or right after an unfinished progress bar."""
    if line.startswith("error: "):
        return line
    head, found, tail = line.partition("error: ")
    return found + tail if found and PROGRESS_LINE.search(head) else None


def exception_line(outcome: Outcome, lines: list[str]) -> str:
    """The last line of the traceback: the exception and its message."""
    trace = [line for line in (outcome.traceback or "").splitlines() if line.strip()]
    return trace[-1] if trace else next((line for line in reversed(lines) if re.match(r"^[\w.]+: ", line)), "?")


def classify(outcome: Outcome, lines: list[str], left: list[str]) -> tuple[str, list[str]]:
    """The case's class (ok-error, accepted, hung, bad) and, for hung and bad, why."""
    if outcome.timed_out:
        return "hung", [f"still running after {outcome.seconds:.0f} s (killed)"]
    if outcome.rc is None:
        return "bad", [f"started {outcome.processes}+ processes (killed)"]
    traced = outcome.traceback or "Traceback (most recent call last)" in outcome.stderr
    if outcome.rc == 0 and not traced:
        return "accepted", []
    reasons = [f"traceback ({exception_line(outcome, lines)[:160]})"] if traced else []
    if outcome.rc != 2:
        reasons.append(f"exit status {outcome.rc}")
    found = [number for number, line in enumerate(lines) if error_message(line)]
    if not traced and len(found) != 1:
        reasons.append(f"{len(found)} error lines")
    elif not traced and found[0] != len(lines) - 1:
        reasons.append("lines after the error line")
    if found and not lines[found[-1]].startswith("error: "):
        reasons.append("the error line follows an unfinished progress bar on the same line")
    stray = [] if traced else stray_lines(lines[: found[-1] if found else len(lines)], outcome.logged)
    if stray:
        reasons.append(f"{len(stray)} non-logging lines before the error line, the last: {stray[-1][:160]!r}")
    if left:
        reasons.append(f"left behind: {', '.join(left[:4])}{' ...' if len(left) > 4 else ''}")
    return ("bad", reasons) if reasons else ("ok-error", [])


def names_option(message: str | None, option: str, path: str | None) -> bool:
    """Whether the error message names the option (``max_steps``, ``max-steps`` or "max steps") or the path given."""
    if message is None:
        return False
    text = message.lower().replace("-", "_")
    return option in text or option.replace("_", " ") in text.replace("_", " ") or bool(path and path in message)


def notes(lines: list[str], logged: set[str]) -> list[str]:
    """What an accepted case warned about: WARNING log lines and lines from outside logging (Python warnings)."""
    stray = set(stray_lines(lines, logged))
    return [line[:200] for line in lines if " WARNING " in line or line in stray][:3]


# --- the campaign ---------------------------------------------------------------------------------


def in_fork(function: Callable[[], None]) -> None:
    """Call ``function`` in a forked child (this process stays free of torch's thread pools) and wait for it."""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            function()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status:
        raise SystemExit(f"building a fixture failed (status {status})")


def write_data(fx: Fixtures) -> None:
    """CoNLL train/dev/test files: the 6 sentences, word TAB tag, in a different order per split."""
    for shift, path in enumerate(fx.data.values()):
        sentences = SENTENCES[shift:] + SENTENCES[:shift]
        path.write_text("\n".join("".join(f"{w}\t{t}\n" for w, t in sentence) for sentence in sentences))


def build_fixtures(fx: Fixtures, mode: str, timeout: float) -> dict[str, float]:
    """Model, data, TF release and trained folder; the seconds each entry point's base command took."""
    for name in ("fixtures", "cases", "cwd", "captures", "hf_home"):
        (fx.root / name).mkdir(exist_ok=True)  # matplotlib, imported with the entry points, may have made hf_home
    write_data(fx)
    shutil.copytree(REPO / "tests" / "fixtures" / "tf" / "finetuned_ner", fx.release)

    def tiny_bert() -> None:
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import make_tiny_bert

        make_tiny_bert(fx.model, seed=0)

    in_fork(tiny_bert)
    times = {}
    for entry in ENTRY_POINTS:
        folder = Path(tempfile.mkdtemp(dir=fx.root / "cases"))
        argv = base_argv(entry, fx, fx.trained if entry == "run_ner" else folder / "out")
        if entry == "predict":
            (folder / "out").mkdir()
        outcome = run_case(entry, argv, fx, mode, timeout)
        if outcome.rc != 0:
            tail = "\n".join(outcome.stderr.splitlines()[-20:])
            raise SystemExit(f"The base command of {entry} failed (exit {outcome.rc}): {shown(argv, fx)}\n{tail}")
        times[entry] = outcome.seconds
        shutil.rmtree(folder)
    return times


def shown(argv: list[str], fx: Fixtures) -> str:
    """``argv`` as a shell line, with the temporary folder written as $TMP."""
    words = (json.dumps(word) if not word or " " in word else word for word in argv)
    return " ".join(words).replace(str(fx.root), "$TMP")


def changes(argv: list[str], base: list[str]) -> str:
    """What ``argv`` adds to the base command line, and what it leaves out of it."""
    added = [word for word in argv if word not in base]
    removed = [word for word in base if word not in argv]
    return " ".join(added) + (f" (without {' '.join(removed)})" if removed else "")


def run_one(case: Case, fx: Fixtures, mode: str, timeout: float) -> dict[str, Any]:
    """Run ``case`` in its own folder under cases/ and return its JSON record."""
    folder = Path(tempfile.mkdtemp(dir=fx.root / "cases"))
    argv, path = case_argv(case, fx, folder)
    skip = ("captures", "hf_home")
    before = snapshot(fx.root, skip)
    outcome = run_case(case.entry, argv, fx, mode, timeout)
    left = left_behind(before, snapshot(fx.root, skip)) if outcome.rc not in (0, None) else []  # None: killed
    left = [name.replace(str(folder.relative_to(fx.root)), "$CASE") for name in left]
    lines = [line.rstrip() for line in outcome.stderr.splitlines() if line.strip()]
    verdict, reasons = classify(outcome, lines, left)
    message = next((m for line in reversed(lines) if (m := error_message(line))), None)
    local = [word.replace(str(folder), "$CASE") for word in argv]
    base = base_argv(case.entry, fx, Path("$CASE/out"))
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "entry": case.entry, "option": case.option, "value": case.value, "kind": case.kind, "phase": case.phase,
        "class": verdict, "reasons": reasons, "rc": outcome.rc, "seconds": round(outcome.seconds, 2),
        "error_line": message and message.replace(str(folder), "$CASE").replace(str(fx.root), "$TMP"),
        "names_option": names_option(message, case.option, path) if verdict in ("ok-error", "bad") else None,
        "stderr_tail": lines[-TAIL_LINES:] if verdict in ("bad", "hung") else [],
        "notes": notes(lines, outcome.logged) if verdict == "accepted" else [],
        "left_behind": left, "changes": changes(local, base).replace(str(fx.root), "$TMP"),
        "argv": shown(local, fx),
    }


def print_cases(title: str, records: list[dict[str, Any]], detail: Callable[[dict[str, Any]], list[str]]) -> None:
    print(f"\n== {title}: {len(records)}")
    for r in records:
        print(f"- {r['entry']} --{r['option']} {r['value']!r}: {'; '.join(r['reasons'])}")
        for line in detail(r):
            print(f"    {line[:240]}")


def command_and_tail(record: dict[str, Any]) -> list[str]:
    return [f"BASE {record['changes']}", *(f"| {line}" for line in record["stderr_tail"][-3:])]


def summarize(records: list[dict[str, Any]], times: dict[str, float], seconds: float, fx: Fixtures) -> None:
    """Counts per entry point and class; every bad, hung and left-behind case; the accepted values by option."""
    print(f"\n== {len(records)} cases in {seconds / 60:.1f} min; base commands (BASE below):")
    for entry, took in times.items():
        print(f"   {entry} ({took:.1f} s): {shown(base_argv(entry, fx, Path('$CASE/out')), fx)}")
    counts = Counter((r["entry"], r["class"]) for r in records)
    classes = ("ok-error", "accepted", "bad", "hung")
    print(f"\n{'entry':<10}" + "".join(f"{c:>10}" for c in classes) + f"{'left':>10}{'unnamed':>10}")
    for entry in ENTRY_POINTS:
        mine = [r for r in records if r["entry"] == entry]
        if mine:
            left = sum(bool(r["left_behind"]) for r in mine)
            unnamed = sum(r["class"] == "ok-error" and not r["names_option"] for r in mine)
            print(f"{entry:<10}" + "".join(f"{counts[entry, c]:>10}" for c in classes) + f"{left:>10}{unnamed:>10}")
    print("(left: error cases that left files; unnamed: ok-error lines naming neither the option nor the path)")
    print_cases("bad", [r for r in records if r["class"] == "bad"], command_and_tail)
    print_cases("hung", [r for r in records if r["class"] == "hung"], command_and_tail)
    print_cases("left behind", [r for r in records if r["left_behind"]], lambda r: [", ".join(r["left_behind"])])
    unnamed = [r for r in records if r["class"] == "ok-error" and not r["names_option"]]
    print_cases("ok-error lines naming neither the option nor the path", unnamed, lambda r: [r["error_line"]])
    accepted: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        if r["class"] == "accepted":
            accepted[r["entry"], r["option"]].append(repr(r["value"]))
    print(f"\n== accepted: {sum(map(len, accepted.values()))} (judge whether each value is valid; warnings in 'notes')")
    for (entry, option), values in accepted.items():
        print(f"- {entry} --{option}: {', '.join(values)}")


def prepare_environment(root: Path | None) -> None:
    """Offline, one torch thread (2-core machine), caches in the temporary folder, no --debug tracebacks."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.pop("NER_DEBUG", None)
    if root is not None:
        os.environ["HF_HOME"] = str(root / "hf_home")
        os.environ["MPLCONFIGDIR"] = str(root / "hf_home" / "matplotlib")
    sys.path.insert(0, str(REPO))


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "fuzz_arguments.jsonl"), help="JSON lines, one per case")
    parser.add_argument("--only", default=",".join(ENTRY_POINTS), help="entry points: run_ner,predict,convert")
    parser.add_argument("--options", default=None, help="only these options (their names, comma-separated)")
    parser.add_argument("--limit", type=int, default=None, help="run at most this many cases")
    parser.add_argument("--timeout", type=float, default=60,
                        help="seconds a case may run before it is killed as 'hung' (the run_ner base takes ~2 s)")
    parser.add_argument("--mode", choices=("fork", "subprocess"), default="fork", help="how each case is started")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--child", nargs=2, metavar=("ENTRY", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    if args.child:  # --mode subprocess: one case, in this fresh interpreter
        prepare_environment(None)
        child_run(args.child[0], args.argv, Path(args.child[1]))
        os._exit(0)
    only = set(args.only.split(","))
    if unknown := only - set(ENTRY_POINTS):
        raise SystemExit(f"--only: unknown entry points {sorted(unknown)}; choose from {', '.join(ENTRY_POINTS)}")
    fx = Fixtures(Path(tempfile.mkdtemp(prefix="fuzz_arguments_")))
    prepare_environment(fx.root)
    start = time.monotonic()
    try:
        cases = all_cases(only, set(args.options.split(",")) if args.options else None)[: args.limit]
        entry_main("run_ner")  # imported once here, so that every forked case starts with it
        print(f"{len(cases)} cases ({sum(c.phase == 'parse' for c in cases)} refused by argparse types); "
              f"temporary folder {fx.root}", flush=True)
        times = build_fixtures(fx, args.mode, args.timeout)
        print("base commands: " + ", ".join(f"{entry} {t:.1f} s" for entry, t in times.items()), flush=True)
        records = []
        with open(args.out, "w") as out:
            for number, case in enumerate(cases, 1):
                record = run_one(case, fx, args.mode, args.timeout)
                records.append(record)
                out.write(json.dumps(record) + "\n")
                out.flush()
                print(f"[{number}/{len(cases)}] {record['class']:<9} {record['seconds']:6.1f} s  {case.entry} "
                      f"--{case.option} {case.value!r}", flush=True)
        summarize(records, times, time.monotonic() - start, fx)
    finally:
        if args.keep:
            print(f"kept {fx.root}")
        else:
            shutil.rmtree(fx.root, ignore_errors=True)


if __name__ == "__main__":
    main()
