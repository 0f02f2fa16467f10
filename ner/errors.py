"""The one exception type for bad input files."""

from __future__ import annotations


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
