"""When to look at a file in flight: settle time, exponential back-off, and the queue of due files.

A file is read only once its size and mtime have stayed unchanged for ``settle_s`` (or right after the
writer closed it, where the OS says so). A file that does not parse is retried with exponential
back-off; a file that changes meanwhile starts counting again, so a slow writer is waited for and never
punished.
"""

from __future__ import annotations

import heapq
import os
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FileStat:
    """What says whether a file changed: its size and modification time (ns)."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(int(st.st_size), int(st.st_mtime_ns))

    def matches(self, data: dict[str, Any]) -> bool:
        """True when the journal's record of the file (``size``, ``mtime_ns``) is this."""
        return data.get("size") == self.size and data.get("mtime_ns") == self.mtime_ns


@dataclass
class PendingFile:
    """A file in flight: seen, not yet analysed or quarantined."""

    path: Any  # pathlib.Path
    key: str
    due: float  # monotonic time of the next check
    stat: FileStat | None = None
    stable_since: float = 0.0
    closed: bool = False  # the writer closed the file since we last looked (inotify close-write)
    attempts: int = 0  # failed parses of the current content
    last_error: str = ""


def backoff_s(attempts: int, initial_s: float, max_s: float) -> float:
    """The wait after the ``attempts``-th failure: ``initial_s`` doubling, at most ``max_s``."""
    return float(min(initial_s * 2 ** (attempts - 1), max_s))


class Schedule:
    """Files in flight by key, and a heap of (due time, key) saying which to look at next.

    Rescheduling pushes a new heap entry; stale entries (the file finished, or was rescheduled) are
    skipped when they come up, which keeps every operation O(log n).
    """

    def __init__(self) -> None:
        self.files: dict[str, PendingFile] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def get(self, key: str) -> PendingFile | None:
        return self.files.get(key)

    def add(self, pf: PendingFile) -> None:
        self.files[pf.key] = pf
        self.at(pf, pf.due)

    def at(self, pf: PendingFile, due: float) -> None:
        """Look at ``pf`` again at monotonic time ``due``."""
        pf.due = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, pf.key))

    def drop(self, key: str) -> None:
        self.files.pop(key, None)

    def next_due(self) -> float | None:
        """When the earliest file is due (monotonic), None when nothing is in flight."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float | None = None) -> PendingFile | None:
        """The next file whose time has come, or None."""
        now = time.monotonic() if now is None else now
        while self._heap:
            due, _, key = self._heap[0]
            if due > now:
                return None
            heapq.heappop(self._heap)
            pf = self.files.get(key)
            if pf is not None and pf.due == due:
                return pf
        return None
