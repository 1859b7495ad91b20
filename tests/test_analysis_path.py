"""One analysis path: the same tiles through scan, detect and watch give the same candidates, and every run
directory has a manifest of one schema and a status that `flakehunter status --json` reads alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flakehunter.candidates import Candidate, read_candidates
from flakehunter.config import DetectConfig, MaterialConfig, WatchOptions
from flakehunter.journal import DONE, Journal
from flakehunter.run.manifest import Manifest, read_manifest
from flakehunter.scan import Scan
from flakehunter.watch import Watcher

#: Tiles side by side (no overlap), so that which image reports a flake never depends on knowing the
#: neighbours: a watch folder sees its files one at a time.
SIDE_BY_SIDE = {
    "camera": {"options": {"shape": [300, 400], "chip": {"size_um": [900, 700], "thin_flakes": 30}}},
    "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [900, 700]}},
    "overlap_percent": 0,
}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flakehunter", *args], capture_output=True, text=True,
                          timeout=timeout)


def signature(candidates: list[Candidate]) -> list[tuple[Any, ...]]:
    """What must agree across modes: position, layer class, layers, orientation, area, score."""
    return sorted(
        (round(c.x_um, 2), round(c.y_um, 2), c.layer_class, c.layers,
         None if c.orientation_deg is None else round(c.orientation_deg, 2), round(c.area_um2, 1), round(c.score, 3))
        for c in candidates
    )


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A scan, detect over its tiles, and watch over a folder the tiles are copied into (in plan order)."""
    import yaml

    from tests.conftest import SMALL_SCAN, deep_update

    root = tmp_path_factory.mktemp("paths")
    config = root / "scan.yaml"
    config.write_text(yaml.safe_dump(deep_update(SMALL_SCAN, SIDE_BY_SIDE)), encoding="utf-8")
    runs = {"scan": root / "scan", "detect": root / "detect", "watch": root / "watch"}
    summary = Scan(config, runs["scan"], device="cpu").run()
    assert summary["status"] == "completed" and summary["items_total"] >= 6
    tiles = sorted((runs["scan"] / "tiles").glob("*.ome.tif"))

    detect = cli("detect", str(runs["scan"] / "tiles"), "--material", "graphene", "--oxide-nm", "90",
                 "--out", str(runs["detect"]))
    assert detect.returncode == 0, detect.stderr

    inbox = root / "inbox"
    inbox.mkdir()
    now = time.time() - 100
    for n, tile in enumerate(tiles):  # arrival order = plan order, as an acquisition program writes them
        target = inbox / tile.name
        shutil.copyfile(tile, target)
        os.utime(target, (now + n, now + n))
    options = WatchOptions(settle_s=0.2, poll_interval_s=0.2, retry_initial_s=0.2, status_interval_s=1)
    watcher = Watcher(inbox, runs["watch"], DetectConfig(material=MaterialConfig(name="graphene", oxide_nm=90),
                                                          watch=options))
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if runs["watch"].joinpath("journal.sqlite").exists():
            with Journal(runs["watch"] / "journal.sqlite") as journal:
                if len(journal.keys(DONE)) == len(tiles):
                    break
        time.sleep(0.2)
    watcher.request_stop()
    thread.join(30)
    assert not thread.is_alive()
    return runs


def test_scan_detect_and_watch_find_the_same_candidates(three_runs: dict[str, Path]) -> None:
    found = {mode: read_candidates(run) for mode, run in three_runs.items()}
    assert len(found["scan"]) >= 10, "the chip holds enough flakes to compare"
    assert signature(found["detect"]) == signature(found["scan"])
    assert signature(found["watch"]) == signature(found["scan"])
    # And the same calibration, reported the same way.
    reports = {mode: read_manifest(run / "manifest.json")["calibration"]["detectors"]
               for mode, run in three_runs.items()}
    assert reports["detect"] == reports["scan"] == reports["watch"]


def test_every_run_has_a_manifest_of_one_schema(three_runs: dict[str, Path]) -> None:
    for mode, run in three_runs.items():
        data = json.loads((run / "manifest.json").read_text())
        Manifest.model_validate(data)  # raises on any missing or unknown field
        assert data["kind"] == mode
        assert data["status"] in ("completed", "stopped")
        assert data["pid"] is None, "a finished run names no live process"
        assert data["summary"]["candidates"] == len(read_candidates(run))
        done = [i for i in data["items"] if i["status"] == DONE]
        assert len(done) == data["summary"]["counts"]["done"] == len(list((three_runs["scan"] / "tiles").glob("*")))
        assert all(i["pixel_size_um"] == pytest.approx(1.15) for i in done)


def test_status_json_reads_scan_detect_and_watch_alike(three_runs: dict[str, Path]) -> None:
    tiles = len(list((three_runs["scan"] / "tiles").glob("*")))
    for mode, run in three_runs.items():
        result = cli("status", str(run), "--json", timeout=60)
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["kind"] == mode
        assert (info["processed"], info["pending"], info["quarantined"], info["failed"]) == (tiles, 0, 0, 0)
        assert info["running"] is False and info["pid"] is None
        assert info["candidates"] == len(read_candidates(run))
