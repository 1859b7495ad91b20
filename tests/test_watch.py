"""The watch folder: real watchdog observers, real files written slowly, real processes killed with SIGKILL."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile

from flakehunter.candidates import Candidate, read_candidates
from flakehunter.config import DetectConfig, MaterialConfig, WatchOptions
from flakehunter.errors import InputError
from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.chip import ChipSpec
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
from flakehunter.journal import DONE, QUARANTINED, Journal
from flakehunter.logs import JsonLineFormatter, read_log
from flakehunter.registry import get_registry
from flakehunter.run.candidate_writer import CandidateWriter
from flakehunter.testing.files import ome_tiff_bytes, write_slowly
from flakehunter.watch import Watcher
from flakehunter.watch.observer import EventInbox

PIXEL_UM = 1.15
SHAPE = (200, 300)

#: Fast timing for tests: a file is read 0.4 s after its last change; 6 failed parses of unchanged
#: content (0.2 + 0.4 + 0.8 + 1.6 + 3.2 s of patience) before it is quarantined.
FAST = WatchOptions(settle_s=0.4, poll_interval_s=0.2, retry_initial_s=0.2, retry_max_s=5, max_attempts=6,
                    rescan_s=30, status_interval_s=1)
CONFIG = DetectConfig(material=MaterialConfig(name="graphene", oxide_nm=90), watch=FAST)


@pytest.fixture(scope="module")
def frames() -> list[tuple[float, float, np.ndarray]]:
    """Twenty 200 x 300 px frames of a dense simulated graphene chip, with their stage positions."""
    spec = ChipSpec(origin_um=(0, 0), size_um=(1400, 1000), thin_flakes=60, thick_flakes=12, multilayer_flakes=3,
                    residue_blobs=2, dust=10, min_spacing_um=10)
    layout = generate_chip(spec, get_registry().material("graphene"), 90.0, seed=21)
    scope = SimulatedMicroscope(layout, seed=21, transform=PixelTransform(PIXEL_UM), shape=SHAPE)
    positions = [(180 + j * 345 * 0.8, 120 + i * 230 * 0.8) for i in range(4) for j in range(5)]
    return [(x, y, scope.snap_at(x, y)) for x, y in positions]


def tiff_bytes(frame: tuple[float, float, np.ndarray], tmp: Path) -> bytes:
    """A frame as the OME-TIFF bytes an acquisition program would write (position and pixel size in µm)."""
    x, y, image = frame
    return ome_tiff_bytes(image, pixel_size_um=PIXEL_UM, x_um=x, y_um=y)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class ThreadedWatcher:
    """A `Watcher` running in a thread of the test process; `stop()` re-raises its error, if any."""

    def __init__(self, watch_dir: Path, out: Path, **kwargs: Any) -> None:
        self.watcher = Watcher(watch_dir, out, kwargs.pop("config", CONFIG), **kwargs)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        # The JSON log the CLI would write, without touching the root logger that pytest owns.
        (out / "logs").mkdir(parents=True, exist_ok=True)
        self.log_handler = logging.FileHandler(out / "logs" / "watch.log", encoding="utf-8")
        self.log_handler.setFormatter(JsonLineFormatter())
        self.logger = logging.getLogger("flakehunter.watch")
        self.level = self.logger.level

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Watcher:
        self.logger.addHandler(self.log_handler)
        self.logger.setLevel(logging.INFO)
        self.thread.start()
        # Up once its observer runs: the tests' own observer checks need it, and files come after it.
        wait_for(lambda: self.watcher.started.is_set() or self.error is not None, 30, "the watcher to start")
        return self.watcher

    def __exit__(self, *exc: object) -> None:
        self.watcher.request_stop()
        self.thread.join(30)
        self.logger.removeHandler(self.log_handler)
        self.logger.setLevel(self.level)
        self.log_handler.close()
        assert not self.thread.is_alive(), "the watcher did not stop"
        if self.error is not None:
            raise self.error


def journal_items(out: Path) -> dict[str, Any]:
    with Journal(out / "journal.sqlite") as journal:
        return {i.key: i for i in journal.items()}


def status_of(out: Path, key: str) -> str | None:
    item = journal_items(out).get(key)
    return item.status if item else None


def done_events(out: Path) -> Counter[str]:
    return Counter(r["file"] for r in read_log(out / "logs" / "watch.log") if r.get("event") == "file_done")


def check_candidates_match_journal(out: Path) -> None:
    """Every done file's candidates are in candidates.jsonl exactly as many times as the journal says."""
    items = journal_items(out)
    per_image = Counter(c.image for c in read_candidates(out))
    ids = [c.id for c in read_candidates(out)]
    assert len(ids) == len(set(ids)), "candidate ids are unique"
    for key, item in items.items():
        if item.status == DONE:
            assert per_image.get(key, 0) == item.data["candidates"], key
    assert set(per_image) <= {k for k, i in items.items() if i.status == DONE}


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_files_written_slowly_in_chunks_are_analysed_once_complete(frames, tmp_path: Path, polling: bool) -> None:
    """A file is never analysed half-written: a writer pausing less than settle_s is waited for, one pausing
    longer is read too early, found truncated, retried, and analysed once complete - never quarantined."""
    watch_dir, out = tmp_path / "in", tmp_path / "out"
    watch_dir.mkdir()
    brisk, slow = tiff_bytes(frames[6], tmp_path), tiff_bytes(frames[12], tmp_path)
    with ThreadedWatcher(watch_dir, out, polling=polling) as watcher:
        # A first file warms the detector up (its first call takes seconds), so that the watcher is idle,
        # not busy, while the slow writer pauses.
        (watch_dir / "warm-up.ome.tif").write_bytes(tiff_bytes(frames[0], tmp_path))
        wait_for(lambda: watcher.counts.analysed == 1, 30, "the warm-up file")
        write_slowly(watch_dir / "brisk.ome.tif", brisk, chunks=6, pause_s=0.1)
        write_slowly(watch_dir / "slow.ome.tif", slow, chunks=3, pause_s=1.2)
        keys = [str((watch_dir / n).resolve()) for n in ("brisk.ome.tif", "slow.ome.tif")]
        wait_for(lambda: all(status_of(out, k) == DONE for k in keys), 30, "both files analysed")
        assert watcher.quarantine.count == 0
    items = journal_items(out)
    for key, data in zip(keys, (brisk, slow), strict=True):
        assert items[key].data["size"] == len(data)
        assert items[key].data["sha256"] == hashlib.sha256(data).hexdigest(), "analysed the complete file"
    assert items[keys[1]].data["candidates"] > 0, "the frame holds flakes; a cut-off read would lose them"
    retries = Counter(r["file"] for r in read_log(out / "logs" / "watch.log") if r.get("event") == "file_retry")
    assert retries[keys[0]] == 0, "a writer pausing less than settle_s is never read early"
    # The slow writer pauses 1.2 s: the watcher looks at least once in between and finds it truncated.
    assert retries[keys[1]] >= 1
    assert done_events(out) == Counter([*keys, str((watch_dir / "warm-up.ome.tif").resolve())])
    check_candidates_match_journal(out)


def test_truncated_and_non_image_files_are_quarantined_with_a_reason(frames, tmp_path: Path) -> None:
    """Unreadable files end in quarantine.jsonl with the reason, stay where they are, and the good file is
    analysed; a file the detector cannot cope with is quarantined too and the watcher goes on."""
    watch_dir, out = tmp_path / "in", tmp_path / "out"
    watch_dir.mkdir()
    good = tiff_bytes(frames[0], tmp_path)
    ok, png = cv2.imencode(".png", cv2.cvtColor(frames[1][2], cv2.COLOR_RGB2BGR))
    assert ok
    bad = {
        "cut.ome.tif": (good[: len(good) // 2], "truncated TIFF"),
        "cut.png": (png.tobytes()[:-300], "truncated PNG"),
        "notes.tif": (b"exposure=20ms\ngain=1\n", "not TIFF, PNG or JPEG data"),
        "empty.jpg": (b"", "file is empty"),
    }
    for name, (data, _) in bad.items():
        (watch_dir / name).write_bytes(data)
    tifffile.imwrite(watch_dir / "nan.tif", np.full((40, 40, 3), np.nan, np.float32), photometric="rgb")
    (watch_dir / "good.ome.tif").write_bytes(good)
    (watch_dir / "readme.txt").write_text("not an image suffix: ignored, not quarantined")
    config = CONFIG.model_copy(update={"pixel_size_um": PIXEL_UM})
    with ThreadedWatcher(watch_dir, out, config=config):
        wait_for(lambda: journal_items(out) and sum(i.status == QUARANTINED for i in journal_items(out).values()) == 5,
                 40, "five files quarantined")
        # Still watching: a good file written after the bad ones is analysed.
        (watch_dir / "later.ome.tif").write_bytes(tiff_bytes(frames[2], tmp_path))
        wait_for(lambda: status_of(out, str((watch_dir / "later.ome.tif").resolve())) == DONE, 20, "a later file")
    lines = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    reasons = {Path(r["file"]).name: r["reason"] for r in lines}
    assert len(lines) == 5 and set(reasons) == {*bad, "nan.tif"}
    for name, (_, words) in bad.items():
        assert words in reasons[name], reasons[name]
        assert (watch_dir / name).exists(), "a user's file is never deleted"
    assert "no finite pixel" in reasons["nan.tif"], reasons["nan.tif"]
    status = subprocess.run([sys.executable, "-m", "flakehunter", "status", str(out), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["processed"], counts["quarantined"], counts["pending"], counts["running"]) == (2, 5, 0, False)
    assert str((watch_dir / "readme.txt").resolve()) not in journal_items(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and manifest["summary"]["counts"]["quarantined"] == 5
    assert sorted((Path(f["file"]).name, f["status"]) for f in manifest["items"]) == sorted(
        [("good.ome.tif", DONE), ("later.ome.tif", DONE), *((n, QUARANTINED) for n in [*bad, "nan.tif"])]
    )


def _start_cli(watch_dir: Path, out: Path, config: Path, console: Path) -> subprocess.Popen[bytes]:
    """``flakehunter watch`` as its own process; its console output goes to ``console`` (no pipe to fill)."""
    with open(console, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "flakehunter", "watch", str(watch_dir), "--out", str(out), "--config", str(config)],
            stdout=fh, stderr=subprocess.STDOUT,
        )


def test_restart_after_kill9_neither_reprocesses_nor_skips(frames, tmp_path: Path) -> None:
    """kill -9 in the middle of a backlog, files arriving (and one pending file removed) while it is down, a
    restart: every file analysed exactly once (files finished before the kill are not touched again),
    candidates neither lost nor doubled, nothing left pending; SIGTERM stops it cleanly with exit 0 and a
    further restart analyses nothing."""
    watch_dir, out = tmp_path / "in", tmp_path / "out"
    watch_dir.mkdir()
    config = tmp_path / "watch.yaml"
    config.write_text(json.dumps({"material": {"name": "graphene", "oxide_nm": 90},
                                  "watch": FAST.model_dump() | {"settle_s": 0.2}}))
    blobs = [tiff_bytes(f, tmp_path) for f in frames]
    for k in range(14):
        (watch_dir / f"img{k:02d}.ome.tif").write_bytes(blobs[k])
    console = tmp_path / "console.txt"
    proc = _start_cli(watch_dir, out, config, console)
    try:
        wait_for(lambda: (out / "journal.sqlite").exists()
                 and sum(i.status == DONE for i in journal_items(out).values()) >= 4, 60, "4 files done")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    before = {k: i.updated for k, i in journal_items(out).items() if i.status == DONE}
    assert 4 <= len(before) < 14, "killed in the middle of the backlog"
    for k in range(14, 20):  # arrive while the watcher is down
        (watch_dir / f"img{k:02d}.ome.tif").write_bytes(blobs[k])
    removed = next(p for p in sorted(watch_dir.iterdir()) if str(p.resolve()) not in before)
    assert status_of(out, str(removed.resolve())) == "pending"
    removed.unlink()  # a file not yet analysed is taken away while the watcher is down
    console.write_text("")
    proc = _start_cli(watch_dir, out, config, console)
    try:
        keys = {str(p.resolve()) for p in watch_dir.iterdir()}
        wait_for(lambda: all(status_of(out, k) == DONE for k in keys), 60, "all 19 files done")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    output = console.read_text()
    assert proc.returncode == 0, output
    assert "Watch stopped: 19 processed, 0 quarantined, 0 pending" in output, "the removed file is forgotten"
    items = journal_items(out)
    assert {k for k, i in items.items() if i.status == DONE} == keys, "nothing skipped"
    assert all(items[k].updated == t for k, t in before.items()), "files done before the kill were not redone"
    events = done_events(out)
    assert max(events.values()) == 1, "no file analysed to completion twice"
    check_candidates_match_journal(out)
    # The detector calibrated itself on the first images and kept that across the kill; the manifest says so.
    (calibration,) = json.loads((out / "manifest.json").read_text())["calibration"]["detectors"]
    assert calibration["method"] == "self-calibrated" and abs(calibration["oxide_nm"] - 90) < 3
    # A third start over the finished folder analyses nothing.
    proc = _start_cli(watch_dir, out, config, console)
    try:
        wait_for(lambda: json.loads((out / "status.json").read_text()).get("state") == "running"
                 if (out / "status.json").exists() else False, 30, "the third start")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert done_events(out) == events


def test_renamed_touched_and_rewritten_files(frames, tmp_path: Path) -> None:
    """The content hash: a renamed or touched image is not analysed again; new content under a finished
    name is reported in the quarantine (the first analysis stands) rather than silently mixed in."""
    watch_dir, out = tmp_path / "in", tmp_path / "out"
    watch_dir.mkdir()
    first = watch_dir / "a.ome.tif"
    first.write_bytes(tiff_bytes(frames[3], tmp_path))
    with ThreadedWatcher(watch_dir, out) as watcher:
        key = str(first.resolve())
        wait_for(lambda: status_of(out, key) == DONE, 20, "a.ome.tif analysed")
        renamed = watch_dir / "b.ome.tif"
        first.rename(renamed)
        wait_for(lambda: status_of(out, str(renamed.resolve())) == DONE, 20, "the renamed file recorded")
        os.utime(renamed, (time.time() + 5, time.time() + 5))
        touched = renamed.stat().st_mtime_ns
        wait_for(lambda: journal_items(out)[str(renamed.resolve())].data["mtime_ns"] == touched, 20,
                 "the touched file checked by its hash")
        renamed.write_bytes(tiff_bytes(frames[4], tmp_path))
        wait_for(lambda: watcher.quarantine.count == 1, 20, "the rewritten file reported")
        assert watcher.counts.analysed == 1
    items = journal_items(out)
    assert items[str(renamed.resolve())].data["duplicate_of"] == key
    line = json.loads((out / "quarantine.jsonl").read_text())
    assert line["file"] == str(renamed.resolve()) and "content changed after it was analysed" in line["reason"]
    assert done_events(out) == Counter([key])


def test_a_file_changed_while_it_is_analysed_is_analysed_again(frames, tmp_path: Path) -> None:
    """A writer that adds to a file just as the detector reads it: the analysis is taken back (journal row and
    candidates, as a restart would) and the file analysed again once it settles, so the journal's hash is
    always that of the bytes analysed. The concurrent write is injected at the exact moment by wrapping
    the detectors; the soak benchmark meets the same race with a real producer."""
    watch_dir, out = tmp_path / "in", tmp_path / "out"
    watch_dir.mkdir()
    target = watch_dir / "grows.ome.tif"
    with ThreadedWatcher(watch_dir, out) as watcher:
        real = watcher.step.pipeline.run_batch
        calls: list[int] = []

        def detect_while_written(images: Any, metas: Any) -> Any:
            result = real(images, metas)
            if not calls:  # the first time only: a trailer lands while the detector reads
                with open(target, "ab") as fh:
                    fh.write(b"\0" * 4096)
            calls.append(target.stat().st_size)
            return result

        watcher.step.pipeline.run_batch = detect_while_written  # type: ignore[method-assign]
        target.write_bytes(tiff_bytes(frames[12], tmp_path))
        key = str(target.resolve())
        wait_for(lambda: len(calls) == 2 and status_of(out, key) == DONE, 20, "the second analysis")
        assert watcher.counts.retracted == 1 and watcher.counts.analysed == 1
    item = journal_items(out)[key]
    final = target.read_bytes()
    assert item.data["size"] == len(final) and item.data["sha256"] == hashlib.sha256(final).hexdigest()
    assert done_events(out) == Counter([key])
    assert item.data["candidates"] > 0, "with candidates, a first analysis left behind would show as doubles"
    check_candidates_match_journal(out)


def test_a_bad_event_or_a_dead_observer_does_not_stop_the_watcher(frames, tmp_path: Path) -> None:
    """The event handler swallows and logs whatever it cannot handle (watchdog would otherwise end its
    dispatch thread), and an observer thread that stops anyway is restarted, with a rescan."""
    import queue

    inbox: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
    handler = EventInbox(inbox)
    handler.dispatch(object())  # not an event at all
    assert handler.errors == 1 and inbox.empty()

    watch_dir, out = tmp_path / "in", tmp_path / "out"
    watch_dir.mkdir()
    with ThreadedWatcher(watch_dir, out) as watcher:
        dead = watcher.observer._observer
        dead.stop()  # the observer thread ends, as it would after an unexpected error inside watchdog
        dead.join(5)
        (watch_dir / "after.ome.tif").write_bytes(tiff_bytes(frames[5], tmp_path))
        wait_for(lambda: status_of(out, str((watch_dir / "after.ome.tif").resolve())) == DONE, 20, "a new file")
        assert watcher.observer._observer is not dead and watcher.observer.alive
    assert any(r.get("event") == "observer_restart" for r in read_log(out / "logs" / "watch.log"))


def test_one_watcher_per_output_folder_and_settings_cannot_change(tmp_path: Path) -> None:
    """A second watcher on the same OUT is refused (exit 2), and so is a restart with another material."""
    watch_dir, out = tmp_path / "in", tmp_path / "out"
    watch_dir.mkdir()
    with ThreadedWatcher(watch_dir, out):
        second = subprocess.run(
            [sys.executable, "-m", "flakehunter", "watch", str(watch_dir), "--out", str(out), "--material", "graphene"],
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 2 and "already running" in second.stderr, second.stderr
    other = DetectConfig(material=MaterialConfig(name="hbn", oxide_nm=90), watch=FAST)
    with pytest.raises(InputError, match="was started with material"), ThreadedWatcher(watch_dir, out, config=other):
        pass


def _overlapping_images(seed: int) -> list[list[Candidate]]:
    """Forty images along a strip, each overlapping the next by half: flakes in the overlap are seen twice."""
    rng = np.random.default_rng(seed)
    flakes = np.column_stack([rng.uniform(0, 4100, 300), rng.uniform(0, 200, 300)])
    images = []
    for k in range(40):
        x0 = k * 100.0
        seen = flakes[(flakes[:, 0] >= x0) & (flakes[:, 0] < x0 + 200)]
        images.append([
            Candidate(id=0, x_um=float(x + rng.normal(0, 0.5)), y_um=float(y + rng.normal(0, 0.5)), material="graphene",
                      layers=1, layer_class="1L", score=0.9, area_um2=80.0, orientation_deg=None, image=f"img{k}",
                      row=0.0, col=0.0)
            for x, y in seen
        ])
    return images


def test_candidate_writer_index_is_bounded_and_deduplicates_within_it(tmp_path: Path) -> None:
    """With an index that covers the overlaps the writer drops exactly the duplicates an unbounded one drops,
    and its index never holds more than its capacity (memory flat overnight)."""
    full_dir, recent_dir, small_dir = tmp_path / "full", tmp_path / "recent", tmp_path / "small"
    for d in (full_dir, recent_dir, small_dir):
        d.mkdir()
    with CandidateWriter(full_dir, index_capacity=10**9) as full, \
            CandidateWriter(recent_dir, index_capacity=100) as recent, \
            CandidateWriter(small_dir, index_capacity=10) as small:
        for image in _overlapping_images(5):
            full.add(copy.deepcopy(image))
            recent.add(copy.deepcopy(image))
            small.add(copy.deepcopy(image))
            assert recent.indexed <= 100
        assert full.duplicates_dropped > 50, "the strip has overlaps to de-duplicate"
        assert recent.duplicates_dropped == full.duplicates_dropped
        assert small.indexed == 10, "the index never grows past its capacity"
        assert small.duplicates_dropped < full.duplicates_dropped, "a too-small index forgets the overlap"
    key = [(c.x_um, c.y_um, c.image) for c in read_candidates(full_dir)]
    assert [(c.x_um, c.y_um, c.image) for c in read_candidates(recent_dir)] == key


def test_candidate_writer_recovers_the_records_of_finished_images(tmp_path: Path) -> None:
    """After a crash the writer keeps the records of images the journal says are done, in both files, drops a
    torn last line and the records of unfinished images, re-indexes what it keeps, and ids continue."""
    first = tmp_path / "a"
    first.mkdir()
    images = _overlapping_images(9)
    with CandidateWriter(first) as writer:
        for image in images[:6]:
            writer.add(copy.deepcopy(image))
        written = read_candidates(first)
    with open(first / "candidates.jsonl", "a") as fh:
        fh.write('{"id": 999, "x_um": 1')  # kill -9 in the middle of a line
    done = {f"img{k}" for k in (0, 1, 3, 4)}  # img2 and img5 were not marked done
    with CandidateWriter(first, done_images=done) as writer:
        kept = [c for c in written if c.image in done]
        assert writer.count == len(kept) == writer.indexed
        assert writer._next_id == max(c.id for c in kept) + 1
        copies = copy.deepcopy(images[1])
        for c in copies:
            c.image = "img1-again"  # the same flakes seen in another image
        assert writer.add(copies) == [], "what was kept is indexed: the same flakes again are duplicates"
    assert [c.to_record() for c in read_candidates(first)] == [c.to_record() for c in kept]
    rows = (first / "candidates.csv").read_text().splitlines()
    assert len(rows) == len(kept) + 1 and rows[0].startswith("id,x_um,y_um")


def test_detectors_on_the_command_line_set_the_chain_and_keep_the_configs_options(tmp_path: Path) -> None:
    """`watch --detectors contrast,cnn-axis`: the chain as given, the config's contrast options kept."""
    from flakehunter.cli.watch import detect_config
    from flakehunter.errors import InputError

    config = tmp_path / "watch.yaml"
    config.write_text("material: {name: graphene, oxide_nm: 90}\n"
                      "detectors:\n  - {name: contrast, options: {min_area_um2: 40}}\n", encoding="utf-8")
    cfg = detect_config(config, None, None, None, None, ["contrast,cnn-axis"])
    assert [(d.name, d.options) for d in cfg.detectors] == [("contrast", {"min_area_um2": 40}), ("cnn-axis", {})]
    assert [d.name for d in detect_config(config, None, None, None, None, None).detectors] == ["contrast"]
    with pytest.raises(InputError, match="--detectors: expected at least one detector name"):
        detect_config(config, None, None, None, None, [" , "])
