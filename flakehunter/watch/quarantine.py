"""Quarantine: files that could not be analysed, with the reason, in the journal and ``quarantine.jsonl``.

The file itself is left where it is (it belongs to the user). The journal row is written first, then the
line in ``quarantine.jsonl`` (appended and fsynced); a start re-adds a line a crash lost and cuts a torn
last one. A quarantined file that later grows or changes is examined again by the watcher.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flakehunter.atomic import fsync_dir
from flakehunter.journal import QUARANTINED, Journal
from flakehunter.watch.schedule import FileStat

log = logging.getLogger(__name__)


class Quarantine:
    """The quarantine of one watch output folder."""

    def __init__(self, journal: Journal, path: Path) -> None:
        self.journal = journal
        self.path = path
        self.count = 0  # quarantined by this process

    def add(
        self, key: str, file: Path, reason: str, *, attempts: int, stat: FileStat | None, sha256: str | None = None
    ) -> None:
        """Record ``file`` (journal key ``key``) as quarantined for ``reason``."""
        data: dict[str, Any] = {
            "file": str(file), "reason": reason, "attempts": attempts,
            "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "size": stat.size if stat else None, "mtime_ns": stat.mtime_ns if stat else None,
        }
        if sha256:
            data["sha256"] = sha256
        self.journal.set(key, QUARANTINED, **data)
        self._append({"key": key, **data})
        self.count += 1
        log.warning("watch: quarantined %s: %s", file, reason,
                    extra={"event": "file_quarantined", "file": key, "reason": reason})

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def reconcile(self) -> None:
        """Cut a torn last line (kill -9 mid-write) and re-add lines the journal has but the file lacks."""
        listed: set[tuple[str, Any, Any]] = set()
        if self.path.exists():
            with open(self.path, "rb+") as fh:
                data = fh.read()
                end = data.rfind(b"\n") + 1
                if end != len(data):
                    fh.truncate(end)
                    fh.flush()
                    os.fsync(fh.fileno())
                    log.warning("watch: dropped a torn last line of %s", self.path,
                                extra={"event": "quarantine_repair"})
            for line in data[:end].splitlines():
                with contextlib.suppress(json.JSONDecodeError, AttributeError):
                    r = json.loads(line)
                    listed.add((r.get("key"), r.get("size"), r.get("mtime_ns")))
        for item in self.journal.items(QUARANTINED):
            if (item.key, item.data.get("size"), item.data.get("mtime_ns")) not in listed:
                self._append({"key": item.key, **item.data})
        fsync_dir(self.path.parent)
