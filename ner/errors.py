"""The one exception type for bad input files, and how the entry points report bad input: one line, no traceback."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn


class DataFileError(ValueError):
    """A data or label file that cannot be read as given.

    The message always starts with ``path:line`` (line is 1-based; omitted only when the
    problem concerns the whole file), says what was expected and what was found, and how to fix it.
    """

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.detail = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class UsageError(ValueError):
    """A command line the argument parser refused (raised by `run_cli` instead of printing the whole usage)."""


DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "NER_DEBUG"


def _without_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` less every bare ``--debug``, and whether there was one.

    A ``--debug`` followed by a value (``run_ner.py --debug underflow_overflow``) is transformers' own
    option and stays.
    """
    kept, debug = [], False
    for position, argument in enumerate(argv):
        following = argv[position + 1] if position + 1 < len(argv) else None
        if argument == DEBUG_FLAG and (following is None or following.startswith("-")):
            debug = True
        else:
            kept.append(argument)
    return kept, debug


@contextlib.contextmanager
def _parser_errors_raise() -> Iterator[None]:
    # argparse prints the whole usage (a hundred lines for run_ner.py) before its one-line error; the entry
    # points' parsers are built in several places (HfArgumentParser, sub-commands), so it is swapped here.
    original = argparse.ArgumentParser.error

    def error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {parser.prog} --help)")

    argparse.ArgumentParser.error = error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


def run_cli(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> int:
    """Run an entry point's ``main(argv)`` for the shell: its exit status, and bad input as one line.

    Bad input, bad arguments and missing files (`DataFileError`, `ValueError`, argparse's errors,
    `OSError`) print ``error: <message>`` on stderr, without a traceback, and return 2 (1 for other
    operating-system errors, such as a full disk). ``--debug`` on the command line (removed before
    ``main`` sees it) or ``NER_DEBUG=1`` in the environment lets the exception through, traceback and all.
    For entry points only: library code raises.
    """
    argv, debug = _without_debug_flag(sys.argv[1:] if argv is None else list(argv))
    debug = debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        with _parser_errors_raise():
            result = main(argv)
    except (ValueError, OSError) as error:
        if debug:
            raise
        if isinstance(error, OSError) and error.filename is not None and error.strerror:
            message = f"{error.filename}: {error.strerror}"
        else:
            message = str(error)
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 1 if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) else 2
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
