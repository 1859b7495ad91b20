"""``RUN_DIR/review.jsonl``: a person's verdicts on candidates, one JSON line each, appended durably.

A line holds the whole state of one candidate's review at that moment::

    {"id": 17, "verdict": "good", "favourite": true, "note": "clean edges", "time": "2026-12-06T08:14:02+00:00"}

``verdict`` is ``"good"``, ``"bad"`` or null (not decided); the latest line per candidate wins, so a changed
mind is one more line and the history stays. Lines are appended with a single write and fsynced, so a
crash loses at most the line being written, and a torn last line is skipped when read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flakehunter.atomic import fsync_dir
from flakehunter.errors import InputError

VERDICTS = ("good", "bad")
MAX_NOTE_CHARS = 2000


@dataclass(frozen=True)
class Verdict:
    """One candidate's review: good/bad/None, a favourite mark and a free-text note."""

    id: int
    verdict: str | None = None
    favourite: bool = False
    note: str = ""
    time: str = ""

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def parse_verdict(data: Any) -> Verdict:
    """A `Verdict` from a JSON object (a review.jsonl line or a request body); `InputError` if it is not one.

    The candidate id is checked for form only; whether the run has it is the caller's question.
    """
    if not isinstance(data, dict):
        raise InputError("a verdict must be a JSON object")
    unknown = set(data) - {"id", "verdict", "favourite", "note", "time"}
    if unknown:
        raise InputError(f"unknown verdict field(s): {', '.join(sorted(unknown))}")
    cid = data.get("id")
    if isinstance(cid, bool) or not isinstance(cid, int):
        raise InputError(f"id: expected an integer candidate id, got {cid!r}")
    verdict = data.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise InputError(f"verdict: expected good, bad or null, got {verdict!r}")
    favourite = data.get("favourite", False)
    if not isinstance(favourite, bool):
        raise InputError(f"favourite: expected true or false, got {favourite!r}")
    note = data.get("note", "")
    if not isinstance(note, str):
        raise InputError(f"note: expected text, got {type(note).__name__}")
    if len(note) > MAX_NOTE_CHARS:
        raise InputError(f"note: at most {MAX_NOTE_CHARS} characters, got {len(note)}")
    time = data.get("time") or ""
    return Verdict(cid, verdict, favourite, note, str(time))


def read_verdicts(path: str | Path) -> dict[int, Verdict]:
    """The latest verdict per candidate id; {} when the file does not exist. Bad or torn lines are skipped."""
    latest: dict[int, Verdict] = {}
    path = Path(path)
    if not path.exists():
        return latest
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                v = parse_verdict(json.loads(line))
            except (json.JSONDecodeError, InputError):
                continue
            latest[v.id] = v
    return latest


def append_verdict(path: str | Path, verdict: Verdict) -> Verdict:
    """Append one verdict line durably (one write, fsync; the folder is fsynced when the file is new).

    The time is stamped here when the verdict has none. Returns the verdict as written.
    """
    path = Path(path)
    if not verdict.time:
        verdict = Verdict(verdict.id, verdict.verdict, verdict.favourite, verdict.note,
                          datetime.now(UTC).isoformat(timespec="seconds"))
    line = (json.dumps(verdict.to_record(), ensure_ascii=False) + "\n").encode("utf-8")
    new = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read: to see a torn last line
    try:
        # Two review servers on one run must not interleave their lines.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            _end_torn_line(fd)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)
    return verdict


def _end_torn_line(fd: int) -> None:
    """Start on a fresh line if a crash left the file ending mid-line (the torn line stays unreadable)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    with contextlib.suppress(OSError):
        if os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")

