"""What a watcher tells the world: ``status.json``, ``manifest.json``, and its memory use."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from typing import TYPE_CHECKING, Any

from flakehunter.atomic import write_json_atomic
from flakehunter.journal import DONE, FAILED, PENDING, QUARANTINED
from flakehunter.run import manifest as run_manifest

if TYPE_CHECKING:
    from flakehunter.watch.watcher import Watcher


def rss_mb() -> float:
    """Resident memory of this process in MiB (current on Linux, peak elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux: its own VmHWM, not the parent's)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


def write_status(watcher: Watcher, state: str, summary: dict[str, Any]) -> None:
    """``status.json``: the watcher's last status line, for `flakehunter status` in another process."""
    with contextlib.suppress(OSError):
        write_json_atomic(watcher.directory.status, {
            "state": state, "pid": os.getpid(), "host": platform.node(), "updated": run_manifest.now_iso(),
            "watch_dir": str(watcher.watch_dir), "observer": watcher.observer.kind, **summary,
        })


def write_watch_manifest(watcher: Watcher, status: str) -> None:
    """The watch run's ``manifest.json`` (schema in `flakehunter.run.manifest`), items streamed from the journal."""
    from flakehunter.registry import get_registry

    registry = get_registry()
    raw = watcher.journal.counts()
    summary = run_manifest.summarize(
        [], items_total=sum(raw.values()), statuses=(PENDING, DONE, FAILED, QUARANTINED),
        candidates=watcher.writer.count, duplicates_dropped=watcher.writer.duplicates_dropped,
        wall_s=time.monotonic() - watcher.counts.started, timings={"detect_s": watcher.step.detect_s},
        in_flight=watcher.in_flight,
    )
    summary["counts"].update(raw)
    config = watcher.config
    head = run_manifest.header(
        kind="watch", run_id=watcher.run_id, status=status, created=watcher.created,  # type: ignore[arg-type]
        config=config.model_dump(mode="json"), config_file=str(watcher.config_path) if watcher.config_path else None,
        inputs={"watch_dir": str(watcher.watch_dir), "recursive": watcher.recursive,
                "observer": "polling" if watcher.polling else "native"},
        plugins={"detectors": [registry.source("detector", d.name) for d in config.detectors]},
        # What the detectors use now: nominal until they have calibrated on the first images.
        calibration={"material": config.material.name, "nominal_oxide_nm": config.material.oxide_nm,
                     "detectors": watcher.calibration},
        summary=summary,
        versions=run_manifest.versions(registry.plugin_versions()),
    )
    # Per-file status streamed from the journal: a night's worth of files never sits in memory.
    run_manifest.write_manifest_safely(watcher.directory, head, lambda: (
        {"key": i.key, "file": i.data.get("file", i.key), "status": i.status, **i.data}
        for i in watcher.journal.iter_items()
    ))
