"""End-to-end scans on the simulator: accuracy against ground truth, resume after kill -9 and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flakehunter.analysis.evaluation import load_truth, match, summarize
from flakehunter.candidates import read_candidates
from flakehunter.scan import Scan


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flakehunter", *args], capture_output=True, text=True, timeout=timeout
    )


def done_tiles(run_dir: Path) -> int:
    db = run_dir / "journal.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM items WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def candidate_rows(run_dir: Path) -> list[tuple]:
    return [
        (c.id, c.x_um, c.y_um, c.layers, c.layer_class, c.score, c.area_um2, c.image)
        for c in read_candidates(run_dir / "candidates.jsonl")
    ]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted small scan, shared by the tests that compare against it."""
    import yaml

    from tests.conftest import SMALL_SCAN

    base = tmp_path_factory.mktemp("reference")
    config = base / "scan.yaml"
    config.write_text(yaml.safe_dump(SMALL_SCAN), encoding="utf-8")
    result = run_cli("scan", str(config), "--out", str(base / "run"))
    assert result.returncode == 0, result.stderr
    return base / "run"


def test_small_scan_matches_ground_truth(reference_run: Path) -> None:
    """Acceptance: ≥90% of 1–2L flakes ≥50 µm² found, ≥80% of 1–3L candidates real, no duplicates."""
    truth = load_truth(reference_run / "truth.json")
    candidates = read_candidates(reference_run)
    m = match(candidates, truth, tolerance_um=3.0)
    recall_12 = summarize(m, layers=(1, 2), min_area_um2=50)
    all_13 = summarize(m, layers=(1, 2, 3), min_area_um2=50)
    assert recall_12["truth_flakes"] >= 25, "the seeded chip must hold enough thin flakes to measure"
    assert recall_12["recall"] >= 0.90, recall_12
    assert all_13["precision"] >= 0.80, all_13
    assert all_13["duplicates"] == 0, all_13
    assert all_13["position_error_um"] < 2.0


def test_run_directory_follows_the_contract(reference_run: Path) -> None:
    """candidates.csv/jsonl share records with the contract columns; manifest, tiles and truth exist."""
    import csv

    with open(reference_run / "candidates.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0].keys())
    assert header[:12] == [
        "id", "x_um", "y_um", "material", "layers", "layer_class", "score",
        "area_um2", "orientation_deg", "image", "row", "col",
    ]
    jsonl = read_candidates(reference_run)
    assert [int(r["id"]) for r in rows] == [c.id for c in jsonl]
    assert all(0.0 <= c.score <= 1.0 for c in jsonl)
    assert all((reference_run / c.image).exists() for c in jsonl)
    manifest = json.loads((reference_run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["summary"]["counts"]["done"] == manifest["inputs"]["plan"]["tiles"] == len(manifest["items"])
    assert len(list((reference_run / "tiles").glob("*.ome.tif"))) == manifest["inputs"]["plan"]["tiles"]
    assert not list((reference_run / "tiles").glob(".*")), "no temporary files left behind"
    assert (reference_run / "truth.json").exists()


def test_candidate_positions_point_at_the_flake_in_its_tile(reference_run: Path) -> None:
    """The stage coordinates of a candidate and its (row, col) in its tile describe the same spot."""
    from flakehunter.geometry import PixelTransform
    from flakehunter.tiles import read_image

    transform = PixelTransform(1.15)
    for c in read_candidates(reference_run)[:10]:
        image, meta = read_image(reference_run / c.image)
        x, y = transform.pixel_to_stage(c.row, c.col, (meta.x_um, meta.y_um), image.shape[:2])
        # Both are written rounded to 0.001 (µm and px): up to 0.0005 µm + 0.0005 px x 1.15 µm/px apart.
        assert abs(x - c.x_um) < 1.2e-3 and abs(y - c.y_um) < 1.2e-3


def test_kill_9_then_resume_equals_uninterrupted(write_config, tmp_path: Path, reference_run: Path) -> None:
    """Acceptance: kill -9 mid-scan, then --resume: same tiles and candidates, nothing re-acquired."""
    # Slow the stage down so the scan is still running when it is killed.
    config = write_config({"stage": {"options": {"time_scale": 1, "settle_s": 0.15, "speed_um_s": 0}}})
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flakehunter", "scan", str(config), "--out", str(run_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while done_tiles(run_dir) < 6:
        assert proc.poll() is None, "the scan ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = done_tiles(run_dir)
    total = json.loads((run_dir / "manifest.json").read_text())["inputs"]["plan"]["tiles"]
    assert 6 <= killed_at < total
    finished_before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "tiles").glob("*.ome.tif")}

    result = run_cli("scan", "--resume", str(run_dir))
    assert result.returncode == 0, result.stderr

    after = {p.name: p.stat().st_mtime_ns for p in (run_dir / "tiles").glob("*.ome.tif")}
    assert all(after[name] == mtime for name, mtime in finished_before.items()), "a finished tile was re-acquired"
    assert sorted(after) == sorted(p.name for p in (reference_run / "tiles").glob("*.ome.tif"))
    assert candidate_rows(run_dir) == candidate_rows(reference_run)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"


def test_ctrl_c_finishes_the_tile_and_resume_completes(write_config, tmp_path: Path, reference_run: Path) -> None:
    """SIGINT stops at a tile boundary with exit 130 and a resumable, consistent run directory."""
    config = write_config({"stage": {"options": {"time_scale": 1, "settle_s": 0.15, "speed_um_s": 0}}})
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flakehunter", "scan", str(config), "--out", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while done_tiles(run_dir) < 3:
        assert proc.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    done = done_tiles(run_dir)
    assert {c.image for c in read_candidates(run_dir)} <= {
        t["file"] for t in manifest["items"] if t["status"] == "done"
    }, "only finished tiles have candidates"
    assert done < manifest["inputs"]["plan"]["tiles"]

    result = run_cli("scan", "--resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert candidate_rows(run_dir) == candidate_rows(reference_run)


def test_dry_run_moves_nothing_and_writes_nothing(write_config, tmp_path: Path) -> None:
    """--dry-run prints the plan with tile count, area and time, and creates no run directory."""
    config = write_config()
    run_dir = tmp_path / "never"
    result = run_cli("scan", str(config), "--out", str(run_dir), "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["tiles"] == len(plan["tile_positions_um"]) > 10
    assert plan["region_area_mm2"] == pytest.approx(4.0)
    assert plan["estimated_s"] >= 0
    assert not run_dir.exists()


def test_existing_run_directory_is_not_overwritten(write_config, reference_run: Path) -> None:
    """Scanning into a directory that already holds a run is refused (exit 2) and changes nothing."""
    before = (reference_run / "candidates.csv").read_bytes()
    result = run_cli("scan", str(write_config()), "--out", str(reference_run))
    assert result.returncode == 2
    assert "--resume" in result.stderr
    assert (reference_run / "candidates.csv").read_bytes() == before


def test_resume_refuses_a_changed_config(reference_run: Path, tmp_path: Path) -> None:
    """A run whose saved config was edited is not resumed against different settings."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_run, copy)
    (copy / "config.yaml").write_text((copy / "config.yaml").read_text() + "\n# edited\n")
    result = run_cli("scan", "--resume", str(copy))
    assert result.returncode == 2
    assert "changed" in result.stderr


def test_lifecycle_hooks_see_the_scan(write_config, tmp_path: Path) -> None:
    """scan_started, tile_acquired, candidate_found and scan_finished reach an in-process plugin."""
    import flakehunter.registry
    from flakehunter.hookspecs import hookimpl

    seen: dict[str, int] = {"started": 0, "tiles": 0, "candidates": 0, "finished": 0}

    class Recorder:
        @hookimpl
        def scan_started(self, scan) -> None:
            seen["started"] += 1

        @hookimpl
        def tile_acquired(self, scan, tile) -> None:
            seen["tiles"] += 1

        @hookimpl
        def candidate_found(self, scan, candidate) -> None:
            seen["candidates"] += 1

        @hookimpl
        def scan_finished(self, scan, summary) -> None:
            seen["finished"] += 1
            assert summary["status"] == "completed"

    flakehunter.registry.add_plugin(Recorder(), name="recorder")
    summary = Scan(write_config(), tmp_path / "run").run()
    assert seen["started"] == 1 and seen["finished"] == 1
    assert seen["tiles"] == summary["items_total"]
    assert seen["candidates"] == summary["candidates"] > 0


@pytest.mark.skipif(os.cpu_count() is None, reason="needs a CPU count")
def test_memory_stays_flat_with_many_tiles(write_config, tmp_path: Path) -> None:
    """Peak RSS does not grow with the number of tiles (bounded queue, images dropped after use)."""
    import psutil

    def peak_rss(size_um: int) -> int:
        config = write_config(
            {
                "camera": {"options": {"chip": {"size_um": [size_um, size_um], "thin_flakes": 5, "dust": 5}}},
                "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [size_um, size_um]}},
            },
            name=f"scan{size_um}.yaml",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "flakehunter", "scan", str(config), "--out", str(tmp_path / f"r{size_um}")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        assert proc.returncode == 0
        return peak

    small, large = peak_rss(1000), peak_rss(3000)  # about 9x the tiles
    assert large < small * 1.3 + 30e6
