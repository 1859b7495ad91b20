"""``flakehunter status OUT``: where a scan, detect or watch run stands, read from another process.

The counts come from the journal (the durable truth), liveness from the directory's lock (so a
manifest that still says "running" after a crash is reported as stopped), and a watcher's last status
line from ``status.json``. The keys are the same for every kind of run.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from flakehunter.errors import InputError
from flakehunter.journal import ACQUIRED, DONE, FAILED, PENDING, PLANNED, QUARANTINED, Journal
from flakehunter.run.layout import RunDirectory


def journal_counts(journal: Journal) -> dict[str, int]:
    """processed / quarantined / pending / failed, from the journal's item statuses."""
    raw = journal.counts()
    return {
        "processed": raw.get(DONE, 0),
        "quarantined": raw.get(QUARANTINED, 0),
        "pending": raw.get(PLANNED, 0) + raw.get(ACQUIRED, 0) + raw.get(PENDING, 0),
        "failed": raw.get(FAILED, 0),
    }


def read_status(out: str | Path) -> dict[str, Any]:
    """Journal counts, liveness, candidates and the manifest's state of a run directory of any kind."""
    run = RunDirectory(out)
    if not run.journal.is_file():
        raise InputError(f"{run.path}: no {run.journal.name} here; not a run directory or watch output folder")
    with Journal(run.journal) as journal:
        counts = journal_counts(journal)
    manifest: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    kind = manifest.get("kind") or (
        "watch" if run.watch_config.exists() else "scan" if run.tiles.is_dir() else "detect"
    )
    running = run.is_active()
    state = manifest.get("status", "unknown")
    if state == "running" and not running:
        state = "stopped"  # the writer died (kill -9, power cut) before it could say so
    result: dict[str, Any] = {
        "out": str(run.path),
        "kind": kind,
        **counts,
        "running": running,
        "pid": run.holder_pid() if running else None,
        "state": state,
        "candidates": _count_lines(run.candidates_jsonl),
        "quarantine_file": str(run.quarantine) if run.quarantine.exists() else None,
    }
    last: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        last = json.loads(run.status.read_text(encoding="utf-8"))
    if last:
        result["last_status"] = {
            k: last.get(k) for k in ("state", "updated", "watch_dir", "files_per_s", "rss_mb", "peak_rss_mb")
        }
    return result


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
