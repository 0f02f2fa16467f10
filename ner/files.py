"""Writing files and folders so that an interrupted run never leaves a truncated one behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing (UTF-8 text with ``\\n`` line ends, or bytes when
    ``binary``); rename it over ``path`` on success, remove it on any error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    opening: dict[str, Any] = {"mode": "wb"} if binary else {"mode": "w", "encoding": "utf-8", "newline": "\n"}
    try:
        with os.fdopen(handle, **opening) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        readable_as_umask_allows(temporary)  # mkstemp makes it private
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def new_work_folder(parent: Path, name: str) -> Path:
    """An empty folder in ``parent`` to build ``name`` in, then rename into place.

    Made with ``mkdir``, so its permissions follow the umask as any folder's do (``mkdtemp``'s are 0700,
    which other users of a shared cache could not read).
    """
    parent.mkdir(parents=True, exist_ok=True)
    work = parent / f".{name}.{uuid.uuid4().hex[:12]}.tmp"
    work.mkdir()
    return work


def readable_as_umask_allows(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions ``open`` would have: a file that safetensors (0600) or mkstemp wrote private."""
    os.chmod(path, 0o666 & ~current_umask())


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back: Python has no other portable way)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
