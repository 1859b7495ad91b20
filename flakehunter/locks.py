"""One process per output folder: an advisory lock that the kernel releases when the holder dies.

A watcher on ``OUT`` and a daemon on ``QUEUE`` hold an exclusive ``flock`` on a file in that folder
for their whole life, so that a second instance refuses to start instead of appending to the same
candidates, and ``flakehunter status`` can tell a running watcher from a dead one. ``flock`` locks
vanish with the process, ``kill -9`` and power loss included, so a stale lock never blocks a restart.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from flakehunter.errors import InputError

try:  # POSIX; on Windows the lock degrades to a pid file that is only advisory
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None  # type: ignore[assignment]


class DirectoryLock:
    """An exclusive lock on ``folder/name``; the file holds the owner's pid for humans."""

    def __init__(self, folder: Path, name: str, what: str) -> None:
        self.path = Path(folder) / name
        self.what = what
        self._fd: int | None = None

    def acquire(self, wait_s: float = 2.0) -> None:
        """Take the lock, retrying for ``wait_s`` (a `status` probe holds it for an instant).

        Raises `InputError` naming the holder's pid when another process holds it.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    raise InputError(
                        f"{self.path.parent}: another {self.what} (pid {holder or '?'}) is already running there"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(folder: Path, name: str) -> bool:
    """True while some process holds the lock (probe with a shared, non-blocking lock)."""
    path = Path(folder) / name
    if fcntl is None or not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def lock_holder(folder: Path, name: str) -> int | None:
    """The pid written by the last holder, if readable."""
    try:
        text = (Path(folder) / name).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    return None
