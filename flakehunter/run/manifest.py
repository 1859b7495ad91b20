"""``manifest.json``: one documented schema for scan, detect and watch runs (docs/run-directory.md).

The header says what ran (kind, config, versions, plugins, calibration) and how it went (status,
summary); ``items`` lists every tile (scan) or file (detect, watch) with its status. The file is
rewritten atomically, and its items are streamed from the journal, so a night of watched files never
sits in memory. ``status`` "running" is true only while the directory's lock is held:
`flakehunter.run.status.read_status` reports a dead writer as stopped.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flakehunter import __version__
from flakehunter.atomic import atomic_write
from flakehunter.run.layout import MANIFEST, RunDirectory, output_error

log = logging.getLogger(__name__)

SCHEMA = "flakehunter.run-manifest"
SCHEMA_VERSION = 2

Kind = Literal["scan", "detect", "watch"]
Status = Literal["running", "completed", "completed_with_errors", "interrupted", "failed", "stopped"]


class Summary(BaseModel):
    """Counts and timings, the same keys for every kind."""

    model_config = ConfigDict(extra="allow")

    items_total: int = Field(description="Tiles planned (scan) or files seen (detect, watch)")
    counts: dict[str, int] = Field(description="Items per journal status: planned, acquired, pending, done, ...")
    candidates: int
    duplicates_dropped: int = 0
    items_with_warnings: list[str] = Field(default_factory=list, description="Keys of items with warnings")
    bad_inputs: dict[str, str] = Field(default_factory=dict, description="Key -> why it could not be analysed")
    wall_s: float
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds spent per stage")


class Item(BaseModel):
    """One tile or file: its journal key, the file, its status, plus what the journal recorded."""

    model_config = ConfigDict(extra="allow")

    key: str
    file: str
    status: str
    candidates: int | None = None
    warnings: list[str] | None = None
    error: str | None = None


class Manifest(BaseModel):
    """The whole ``manifest.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_name: str = Field(SCHEMA, alias="schema")
    schema_version: int = SCHEMA_VERSION
    kind: Kind
    run_id: str
    status: Status
    error: str | None = None
    pid: int | None = Field(None, description="The process that wrote it, while running")
    host: str
    created: str
    updated: str
    flakehunter_version: str
    versions: dict[str, Any]
    config_file: str | None = None
    config_sha256: str | None = None
    config: dict[str, Any]
    inputs: dict[str, Any] = Field(description="scan: plan and focus; detect: paths; watch: folder and observer")
    plugins: dict[str, Any] = Field(description="Which plugin and package supplied each device and detector")
    calibration: dict[str, Any]
    summary: Summary
    items: list[Item]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions(plugins: dict[str, str] | None = None) -> dict[str, Any]:
    """Versions worth recording: Python, the numeric libraries, and every loaded plugin."""
    import numpy as np
    import tifffile

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tifffile": tifffile.__version__,
        "plugins": dict(plugins or {}),
    }


def header(
    *,
    kind: Kind,
    run_id: str,
    status: Status,
    created: str,
    config: dict[str, Any],
    inputs: dict[str, Any],
    plugins: dict[str, Any],
    calibration: dict[str, Any],
    summary: dict[str, Any],
    versions: dict[str, Any],
    config_file: str | None = None,
    config_sha256: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """Every header field of the schema, in its order (``items`` are streamed by `write_manifest`)."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "run_id": run_id,
        "status": status,
        "error": error,
        "pid": os.getpid() if status == "running" else None,
        "host": socket.gethostname(),
        "created": created,
        "updated": now_iso(),
        "flakehunter_version": __version__,
        "versions": versions,
        "config_file": config_file,
        "config_sha256": config_sha256,
        "config": config,
        "inputs": inputs,
        "plugins": plugins,
        "calibration": calibration,
        "summary": Summary.model_validate(summary).model_dump(mode="json"),
    }


def write_manifest(path: str | Path, head: dict[str, Any], items: Iterable[dict[str, Any]]) -> None:
    """Write ``head`` plus the streamed ``items`` atomically to ``path``."""
    text = json.dumps(head, indent=2, default=str)
    with atomic_write(path) as fh:
        fh.write(text[: text.rindex("}")].rstrip() + ',\n  "items": [')
        for n, item in enumerate(items):
            fh.write(("," if n else "") + "\n    " + json.dumps(item, default=str))
        fh.write("\n  ]\n}\n")


def summarize(
    items: Iterable[dict[str, Any]], *, items_total: int, statuses: Iterable[str], candidates: int,
    duplicates_dropped: int, wall_s: float, timings: dict[str, float], **extra: Any,
) -> dict[str, Any]:
    """The summary block from the manifest's items: counts per status, warnings, bad inputs."""
    counts = dict.fromkeys(statuses, 0)
    warned, bad = [], {}
    for item in items:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
        if item.get("warnings"):
            warned.append(item["key"])
        if item["status"] in ("failed", "quarantined"):
            bad[item["key"]] = item.get("error") or item.get("reason") or item["status"]
    return {
        "items_total": items_total, "counts": counts, "candidates": candidates,
        "duplicates_dropped": duplicates_dropped, "items_with_warnings": warned, "bad_inputs": bad,
        "wall_s": round(wall_s, 2), "timings": {k: round(v, 2) for k, v in timings.items()}, **extra,
    }


def write_manifest_safely(
    run: RunDirectory, head: dict[str, Any], items: Callable[[], Iterable[dict[str, Any]]]
) -> None:
    """`write_manifest` with ``items()``, and on a full disk free the run's reserve and try once more. A final
    manifest that still cannot be written is logged (the run's own error is what the user must see); a
    first one raises."""
    try:
        write_manifest(run.manifest, head, items())
        return
    except OSError as exc:
        failure = exc
    if failure.errno == errno.ENOSPC and run.release_reserve():
        try:
            write_manifest(run.manifest, head, items())
            return
        except OSError as exc:
            failure = exc
    if head["status"] == "running":
        raise output_error(run.manifest, failure) from failure
    log.error("%s: cannot write the manifest (%s)", run.manifest, failure.strerror or failure)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest as a dict (validated against the schema); `ValueError` if it is not one."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    Manifest.model_validate(data)
    return data  # type: ignore[no-any-return]


def analysed_images(run_dir: str | Path) -> list[tuple[str, float | None]]:
    """(file, pixel size in µm) of every tile or file a run analysed, from its manifest; [] without one.

    ``file`` is as the run names it: relative to the run directory for scan tiles, absolute otherwise.
    """
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    pixel = (data.get("calibration") or {}).get("transform", {}).get("pixel_size_um")
    return [(i["file"], i.get("pixel_size_um") or pixel) for i in data.get("items", []) if i.get("status") == "done"]
