"""The scan-job daemon: real scan processes on the simulator, a hung stage, kill -9 and resume, the queue CLI."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from flakehunter.candidates import read_candidates
from flakehunter.jobqueue import QUEUE_DB
from flakehunter.journal import DONE, Journal
from flakehunter.logs import read_log
from tests.conftest import SMALL_SCAN, deep_update

#: Four 200 x 300 px tiles of a small chip: a job that takes about a second.
TINY: dict[str, Any] = deep_update(SMALL_SCAN, {
    "camera": {"options": {"shape": [200, 300], "chip": {
        "size_um": [700, 500], "thin_flakes": 12, "thick_flakes": 4, "multilayer_flakes": 1, "residue_blobs": 1,
        "dust": 4,
    }}},
    "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [600, 400]}},
})

#: Twelve tiles, each move taking 0.3 s: long enough to be killed or cancelled part-way. The detector calibrates
#: on the first three, so the others are analysed (and counted done) one by one as they are taken.
SLOW: dict[str, Any] = deep_update(TINY, {
    "stage": {"options": {"time_scale": 1, "speed_um_s": 0, "settle_s": 0.3}},
    "camera": {"options": {"chip": {"size_um": [1300, 700]}}},
    "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [1200, 600]}},
    "detectors": [{"name": "contrast", "options": {"calibration_images": 3}}],
})


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flakehunter", *args], capture_output=True, text=True,
                          timeout=timeout)


def write_job(folder: Path, name: str, config: dict[str, Any]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start_daemon(queue: Path, console: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(console, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "flakehunter", "daemon", "--queue", str(queue), "--settle-s", "0", *extra],
            stdout=fh, stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    try:
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        proc.kill()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def jobs(queue: Path) -> dict[str, Any]:
    if not (queue / QUEUE_DB).exists():
        return {}
    with Journal(queue / QUEUE_DB) as journal:
        return {i.key: i for i in journal.items()}


def job_record(queue: Path, state: str, job_id: str) -> dict[str, Any]:
    return json.loads((queue / state / job_id / "job.json").read_text())


def test_jobs_run_in_arrival_order_and_failures_do_not_stop_the_queue(tmp_path: Path) -> None:
    """Four jobs queued out of alphabetical order: a good one, one whose region lies outside the stage's travel,
    one whose stage hangs (the stall watchdog kills it), another good one. They run one at a time in the order
    they arrived; the good ones end in done/ with their run manifest, the bad ones in failed/ with the reason;
    the daemon keeps running, and the watch folder in the same process analyses an image meanwhile."""
    queue, sources, watch_dir, out = tmp_path / "queue", tmp_path / "src", tmp_path / "incoming", tmp_path / "out"
    sources.mkdir()
    watch_dir.mkdir()
    specs = [
        ("zeta", TINY),
        ("outside", deep_update(TINY, {"region": {"rectangle": {"corner2_um": [9000, 9000]}}})),
        ("hung", deep_update(TINY, {"stage": {"options": {"time_scale": 1, "speed_um_s": 1, "settle_s": 0}}})),
        ("alpha", deep_update(TINY, {"seed": 12})),
    ]
    for name, config in specs:
        added = cli("queue", "add", str(write_job(sources, name, config)), "--queue", str(queue))
        assert added.returncode == 0, added.stderr
    console = tmp_path / "daemon.txt"
    proc = start_daemon(queue, console, "--stall-timeout-s", "6", "--kill-grace-s", "1",
                        "--watch", str(watch_dir), "--out", str(out), "--material", "graphene")
    try:
        wait_for(lambda: sum(i.data.get("finalized", False) for i in jobs(queue).values()) == 4, 90, "4 jobs ended")
        ids = sorted(jobs(queue))
        assert [i.split("-", 1)[1] for i in ids] == ["zeta", "outside", "hung", "alpha"], "arrival order"
        # An image arrives in the watch folder while the daemon is up: the same process analyses it.
        tile = sorted((queue / "done" / ids[0] / "run" / "tiles").glob("*.tif"))[0]
        shutil.copy(tile, watch_dir / "from-microscope.ome.tif")
        wait_for(lambda: (out / "journal.sqlite").exists() and DONE in _statuses(out), 30, "the watched image")
        assert proc.poll() is None, "the daemon is still running"
    finally:
        rc = stop(proc)
    assert rc == 0, console.read_text()
    states = {i: item.status for i, item in jobs(queue).items()}
    assert states == {ids[0]: "done", ids[1]: "failed", ids[2]: "failed", ids[3]: "done"}
    for job_id in (ids[0], ids[3]):
        folder = queue / "done" / job_id
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["summary"]["counts"]["done"] == 4
        assert (folder / "job.yaml").exists() and (folder / "run" / "candidates.csv").exists()
        assert job_record(queue, "done", job_id)["exit_code"] == 0
    outside = job_record(queue, "failed", ids[1])
    assert outside["exit_code"] == 2 and "outside the stage's travel" in outside["error"]
    hung = job_record(queue, "failed", ids[2])
    assert "no progress" in hung["error"] and "hung" in hung["error"]
    assert json.loads((queue / "failed" / ids[2] / "manifest.json").read_text())["summary"]["counts"]["done"] == 0
    started = [r["job"] for r in read_log(queue / "logs" / "daemon.log") if r.get("event") == "job_started"]
    assert started == ids, "one at a time, in arrival order"
    assert not list(queue.glob("*.yaml")) and not list((queue / "running").iterdir())


def _statuses(out: Path) -> set[str]:
    with Journal(out / "journal.sqlite") as journal:
        return {i.status for i in journal.items()}


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks the scan process through /proc (Linux)")
def test_a_job_interrupted_by_kill9_of_the_daemon_resumes_on_restart(tmp_path: Path) -> None:
    """kill -9 of the daemon mid-scan takes its scan process down too (no orphan racing the next daemon);
    the restarted daemon resumes the job with scan --resume, which finishes it without redoing tiles."""
    queue = tmp_path / "queue"
    queue.mkdir()
    write_job(queue, "wafer", SLOW)
    console = tmp_path / "daemon.txt"
    proc = start_daemon(queue, console)
    run_journal = queue / "running" / "0001-wafer" / "run" / "journal.sqlite"

    def tiles_done() -> int:
        if not run_journal.exists():
            return 0
        with Journal(run_journal) as journal:
            return journal.counts().get(DONE, 0)

    try:
        wait_for(lambda: tiles_done() >= 3, 60, "3 tiles done")
        scan_pid = jobs(queue)["0001-wafer"].data["pid"]
        assert _pid_alive(scan_pid)
    finally:
        stop(proc, signal.SIGKILL)
    wait_for(lambda: not _pid_alive(scan_pid), 5, "the scan process to die with the daemon")
    done_before = tiles_done()
    assert 3 <= done_before < 12
    proc = start_daemon(queue, console)
    try:
        wait_for(lambda: (queue / "done" / "0001-wafer" / "job.json").exists(), 60, "the resumed job to finish")
    finally:
        assert stop(proc) == 0
    record = job_record(queue, "done", "0001-wafer")
    assert record["starts"] == 2 and record["resumed"] is True
    manifest = json.loads((queue / "done" / "0001-wafer" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["summary"]["counts"]["done"] == 12
    log = (queue / "done" / "0001-wafer" / "scan.log").read_text()
    assert "scan --resume" in log
    candidates = read_candidates(queue / "done" / "0001-wafer" / "run")
    assert len({c.id for c in candidates}) == len(candidates)


def test_queue_add_list_cancel(tmp_path: Path) -> None:
    """queue add validates (exit 2 with file and field) and never overwrites; cancel works with and without a
    daemon: a queued job moves to cancelled/, a running one stops at a tile boundary with its run kept."""
    queue, sources = tmp_path / "queue", tmp_path / "src"
    sources.mkdir()
    bad = write_job(sources, "typo", {**TINY, "overlap_procent": 10})
    result = cli("queue", "add", str(bad), "--queue", str(queue))
    assert result.returncode == 2 and "typo.yaml" in result.stderr and "overlap_procent" in result.stderr
    mistyped = cli("queue", "list", "--queue", str(tmp_path / "qeueu"))
    assert mistyped.returncode == 2 and "qeueu" in mistyped.stderr, "a mistyped queue is not an empty one"
    assert not list(queue.glob("*.yaml")) if queue.exists() else True
    slow = write_job(sources, "slow", SLOW)
    for _ in range(2):
        assert cli("queue", "add", str(slow), "--queue", str(queue)).returncode == 0
    assert sorted(p.name for p in queue.glob("*.yaml")) == ["slow-2.yaml", "slow.yaml"]
    listed = json.loads(cli("queue", "list", "--queue", str(queue), "--json").stdout)
    assert [(j["status"], j["file"]) for j in listed] == [("waiting", "slow.yaml"), ("waiting", "slow-2.yaml")]

    # No daemon: cancel takes the queue's lock and acts at once.
    cancelled = cli("queue", "cancel", "slow-2", "--queue", str(queue))
    assert cancelled.returncode == 0, cancelled.stderr
    assert (queue / "cancelled" / "0002-slow-2" / "job.yaml").exists() and not (queue / "slow-2.yaml").exists()

    # With a daemon: the running job is asked to stop and its partial run is kept for a later --resume.
    console = tmp_path / "daemon.txt"
    proc = start_daemon(queue, console)
    try:
        wait_for(lambda: (queue / "running" / "0001-slow" / "run" / "manifest.json").exists(), 30, "the job running")
        result = cli("queue", "cancel", "1", "--queue", str(queue))
        assert result.returncode == 0 and "cancelled" in result.stdout, result.stderr
        status = json.loads(cli("status", str(queue), "--json").stdout)
        assert status["running"] is True and status["cancelled"] == 2 and status["pending"] == 0
    finally:
        assert stop(proc) == 0, console.read_text()
    folder = queue / "cancelled" / "0001-slow"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["summary"]["counts"]["done"] < 12
    listed = json.loads(cli("queue", "list", "--queue", str(queue), "--json").stdout)
    assert [(j["id"], j["status"]) for j in listed] == [("0001-slow", "cancelled"), ("0002-slow-2", "cancelled")]
