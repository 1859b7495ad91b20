"""Structured logs for unattended operation: JSON lines in a rotating file, short lines on stderr.

Every record in the file is one JSON object with ``time`` (UTC, ISO 8601), ``level``, ``logger`` and
``message``, plus whatever the caller passed as ``extra`` (``event``, ``file``, ``job``, counts), so
that a morning's questions ("which files failed, when, why") are one ``jq`` or ``grep`` away.
The file rotates by size (`logging.handlers.RotatingFileHandler`), so an overnight run cannot fill
the disk. Records are flushed as they are written: a process killed with ``kill -9`` loses none.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record; ``extra`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    log_file: str | Path | None,
    *,
    debug: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    backups: int = DEFAULT_BACKUPS,
) -> logging.Handler | None:
    """Send records to stderr (human lines) and, if given, ``log_file`` (JSON lines, rotated by size).

    For the long-running commands (watch, daemon): both get INFO and above, DEBUG with ``debug``; the
    status line is an INFO record. Returns the file handler (or None).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if debug else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root.addHandler(console)
    # Third-party chatter (watchdog's per-event debug lines) stays out of the service log.
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    if log_file is None:
        return None
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    # StreamHandler flushes after every record, so kill -9 loses no line already logged.
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setLevel(logging.DEBUG if debug else logging.INFO)
    handler.setFormatter(JsonLineFormatter())
    root.addHandler(handler)
    return handler


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The JSON records of a log file and its rotated backups, oldest first; torn lines skipped."""
    path = Path(path)
    # RotatingFileHandler keeps log, log.1 (newest backup), log.2, ...: read the highest number first.
    backups = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    backups.sort(key=lambda p: -int(p.suffix[1:]))
    records: list[dict[str, Any]] = []
    for f in [*backups, path]:
        if not f.exists():
            continue
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records
