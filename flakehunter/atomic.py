"""Atomic file writes: a temporary name in the same folder, fsync, rename, fsync the folder.

A reader, or a process restarted after ``kill -9`` or a power cut, sees the old file or the new one,
never half of one. Temporary names look like ``.{name}.tmp-{pid}-{random}`` (`is_temp_name`), so
folder scans and watchers can skip them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_TEMP_RE = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]+$")


def temp_path(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path``; unique across processes and threads."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temp_name(path: str | Path) -> bool:
    """True for a temporary name made by `temp_path` (a write still in progress, or abandoned)."""
    return bool(_TEMP_RE.match(Path(path).name))


def fsync_dir(path: str | Path) -> None:
    """Make a rename in ``path`` durable. Best effort: some file systems refuse to fsync a folder."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; when the block succeeds it replaces ``path`` durably.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is left
    as it was.
    """
    path = Path(path)
    tmp = temp_path(path)
    kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with open(tmp, "x" + mode.replace("w", ""), **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
