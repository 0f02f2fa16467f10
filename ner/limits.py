"""The ranges of numeric command-line options, checked before any work starts.

Every number an entry point takes is finite and fits a 64-bit integer (NaN, infinity and 10**20 otherwise
end deep inside PyTorch or the Trainer, as a traceback, or run for ever), and those with a meaning outside
which nothing sensible happens (batch sizes, rates, betas, steps, seeds) declare a `Range`. A value outside
is one ``ValueError`` naming the flag, the range and the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LARGEST_INT = 2**63 - 1  # what PyTorch, NumPy and the C libraries below them hold
LARGEST_SEED = 2**32 - 1  # NumPy's and Python's random seeds


@dataclass(frozen=True)
class Range:
    """Values from ``low`` to ``high`` (None: unbounded), each end included unless ``low_open``/``high_open``;
    ``also``: values allowed besides (``--max_steps -1``, transformers' "not given")."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[float, ...] = ()

    def holds(self, value: float) -> bool:
        if value in self.also:
            return True
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        low, high = shown(self.low), shown(self.high)
        if self.low is not None and self.high is not None:
            text = f"from {low} to {high}"
            excluded = [end for end, open_ in ((low, self.low_open), (high, self.high_open)) if open_]
            text += f" ({' and '.join(excluded)} excluded)" if excluded else ""
        elif self.low is not None:
            text = f"more than {low}" if self.low_open else f"{low} or more"
        elif self.high is not None:
            text = f"less than {high}" if self.high_open else f"{high} or less"
        else:
            text = "a number"
        return text + "".join(f", or {shown(value)}" for value in self.also)


def shown(value: float | None) -> str:
    """A bound or value as written: whole numbers without exponent (4294967295), others as ``%g`` (1e-05)."""
    if value is None:
        return ""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e16):
        return str(int(value))
    return f"{value:g}"


def check_number(flag: str, value: Any, allowed: Range | None = None) -> None:
    """Refuse a non-finite float, an integer past 64 bits, or a value outside ``allowed``; None and booleans pass."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, got {value}.")
    if allowed is not None and not allowed.holds(value):
        raise ValueError(f"{flag} must be {allowed.describe()}, got {shown(value)}.")
    if isinstance(value, int) and abs(value) > LARGEST_INT:
        raise ValueError(f"{flag} {value} is too large (at most {LARGEST_INT}).")


def check_numbers(values: Mapping[str, Any], ranges: Mapping[str, Range]) -> None:
    """``check_number`` for every option in ``values`` (name -> value, e.g. ``vars(args)``), flags named ``--name``."""
    for name, value in values.items():
        check_number(f"--{name}", value, ranges.get(name))
