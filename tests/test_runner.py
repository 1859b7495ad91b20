"""The scan runner with a fake engine and a fake analysis: order, resume, pause, cancel, retakes, errors.

No devices, no subprocess: the runner only decides *when*; these tests check those decisions.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from flakehunter.acquisition.engine import TileRecord
from flakehunter.acquisition.runner import ScanRunner
from flakehunter.analysis.step import AnalysisResult
from flakehunter.geometry import TilePlan
from flakehunter.journal import ACQUIRED, DONE, FAILED, Journal


def plan(n: int) -> list[TilePlan]:
    return [TilePlan(index=i, grid_row=0, grid_col=i, x_um=100.0 * i, y_um=0.0, z_um=0.0) for i in range(n)]


class FakeEngine:
    """Records what it was asked to do; a tile 'file' exists once acquired."""

    def __init__(self, root: Path, *, gate: threading.Event | None = None) -> None:
        self.root = root
        self.calls: list[tuple[str, int]] = []
        self.gate = gate
        self.on_take: dict[int, object] = {}  # tile index -> called while that tile is taken (a Ctrl-C, a pause)

    def setup(self) -> None:
        self.calls.append(("setup", -1))

    def teardown(self) -> None:
        self.calls.append(("teardown", -1))

    def key(self, tile: TilePlan) -> str:
        return f"tiles/{tile.index:03d}"

    def acquire(self, tile: TilePlan, *, refocus: bool = False) -> TileRecord:
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(("refocus" if refocus else "acquire", tile.index))
        if tile.index in self.on_take:
            self.on_take[tile.index]()  # type: ignore[operator]
        path = self.root / self.key(tile)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("pixels")
        return TileRecord(tile, self.key(tile), path, image=np.zeros((2, 2)), retake=refocus)

    def load(self, tile: TilePlan) -> TileRecord | None:
        path = self.root / self.key(tile)
        if not path.exists():
            return None
        self.calls.append(("load", tile.index))
        return TileRecord(tile, self.key(tile), path)


class FakeAnalysis:
    """Marks tiles done in the journal; can hold the first ``hold`` tiles (calibration), defer soft ones,
    fail some, or raise."""

    def __init__(self, journal: Journal, *, hold: int = 0, soft: set[int] | None = None,
                 failing: set[int] | None = None, explode_at: int | None = None) -> None:
        self.journal = journal
        self.hold = hold
        self.soft = soft or set()
        self.failing = failing or set()
        self.explode_at = explode_at
        self.held: list[tuple[TileRecord, bool]] = []
        self.seen: list[tuple[int, bool, bool]] = []  # (tile, retake_allowed, was a retake)

    def submit(self, record: TileRecord, *, retake_allowed: bool) -> list[AnalysisResult]:
        if self.explode_at is not None and record.plan.index == self.explode_at:
            raise OSError(28, "No space left on device", "candidates.jsonl")
        self.held.append((record, retake_allowed))
        if len(self.held) < self.hold:
            return []
        self.hold = 0
        held, self.held = self.held, []
        return [self._analyse(r, allowed) for r, allowed in held]

    def flush(self) -> list[AnalysisResult]:
        held, self.held = self.held, []
        self.hold = 0
        return [self._analyse(r, allowed) for r, allowed in held]

    def _analyse(self, record: TileRecord, retake_allowed: bool) -> AnalysisResult:
        i = record.plan.index
        self.seen.append((i, retake_allowed, record.retake))
        if i in self.failing:
            self.journal.set(record.key, FAILED, error="bad")
            return AnalysisResult(record.key, "failed", error="bad")
        if i in self.soft and retake_allowed:
            return AnalysisResult(record.key, "deferred", flags={"out_of_focus"})
        flags = {"out_of_focus"} if i in self.soft else set()
        self.journal.set(record.key, DONE, candidates=1)
        return AnalysisResult(record.key, "done", flags=flags)


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "journal.sqlite") as j:
        yield j


def test_tiles_in_plan_order_every_tile_once(tmp_path: Path, journal: Journal) -> None:
    engine = FakeEngine(tmp_path)
    analysis = FakeAnalysis(journal)
    progress: list[tuple[int, int, int]] = []
    counts = ScanRunner(engine, plan(6), journal, analysis, on_progress=lambda *a: progress.append(a)).run()
    assert engine.calls == [("setup", -1), *(("acquire", i) for i in range(6)), ("teardown", -1)]
    assert [s[0] for s in analysis.seen] == list(range(6))
    assert counts.acquired == 6 and counts.analysed == 6 and counts.failed == 0
    assert progress[-1] == (6, 6, 6)
    assert journal.keys(DONE) == {f"tiles/{i:03d}" for i in range(6)}


def test_resume_skips_done_and_analyses_acquired_tiles_from_disk(tmp_path: Path, journal: Journal) -> None:
    engine = FakeEngine(tmp_path)
    for t in plan(5)[:2]:
        journal.set(engine.key(t), DONE)
    engine.acquire(plan(5)[2])  # acquired, then the process died before analysing it
    journal.set(engine.key(plan(5)[2]), ACQUIRED)
    engine.calls.clear()
    analysis = FakeAnalysis(journal)
    counts = ScanRunner(engine, plan(5), journal, analysis).run()
    assert engine.calls == [("setup", -1), ("load", 2), ("acquire", 3), ("acquire", 4), ("teardown", -1)]
    assert counts.loaded_from_disk == 1 and counts.acquired == 2
    assert [s[0] for s in analysis.seen] == [2, 3, 4]


def test_held_tiles_are_flushed_at_the_end(tmp_path: Path, journal: Journal) -> None:
    """The analysis may hold tiles (calibration needs six, the scan has four): the runner flushes it."""
    analysis = FakeAnalysis(journal, hold=6)
    counts = ScanRunner(FakeEngine(tmp_path), plan(4), journal, analysis).run()
    assert counts.analysed == 4 and [s[0] for s in analysis.seen] == [0, 1, 2, 3]


def test_an_out_of_focus_tile_is_refocused_and_retaken_once(tmp_path: Path, journal: Journal) -> None:
    engine = FakeEngine(tmp_path)
    analysis = FakeAnalysis(journal, soft={1, 3})
    counts = ScanRunner(engine, plan(5), journal, analysis).run()
    assert ("refocus", 1) in engine.calls and ("refocus", 3) in engine.calls
    assert [c for c in engine.calls if c[0] == "refocus"].count(("refocus", 1)) == 1
    # The retake is analysed without a second retake; a tile still soft is kept and named.
    assert (1, False, True) in analysis.seen and (3, False, True) in analysis.seen
    assert counts.retaken == 2 and sorted(counts.soft_after_retake) == ["tiles/001", "tiles/003"]
    assert journal.get("tiles/001").data.get("retaken") is True  # type: ignore[union-attr]
    assert journal.keys(DONE) == {f"tiles/{i:03d}" for i in range(5)}


def test_a_retake_found_only_at_the_final_flush_is_taken_too(tmp_path: Path, journal: Journal) -> None:
    """Tiles held for calibration until the end, one of them soft: the retake happens after the flush."""
    engine = FakeEngine(tmp_path)
    analysis = FakeAnalysis(journal, hold=10, soft={0})
    counts = ScanRunner(engine, plan(3), journal, analysis).run()
    assert engine.calls[-2:] == [("refocus", 0), ("teardown", -1)]
    assert counts.retaken == 1 and journal.keys(DONE) == {f"tiles/{i:03d}" for i in range(3)}


def test_a_failed_tile_is_counted_and_the_scan_goes_on(tmp_path: Path, journal: Journal) -> None:
    counts = ScanRunner(FakeEngine(tmp_path), plan(4), journal, FakeAnalysis(journal, failing={2})).run()
    assert counts.failed == 1 and counts.analysed == 3
    assert journal.get("tiles/002").status == FAILED  # type: ignore[union-attr]


def test_stop_finishes_the_tile_in_hand_and_leaves_the_rest(tmp_path: Path, journal: Journal) -> None:
    engine = FakeEngine(tmp_path)
    runner = ScanRunner(engine, plan(6), journal, FakeAnalysis(journal))
    engine.on_take[1] = runner.request_stop  # Ctrl-C while tile 1 is being taken
    runner.run()
    assert [c for c in engine.calls if c[0] == "acquire"] == [("acquire", 0), ("acquire", 1)]
    assert engine.calls[-1] == ("teardown", -1)
    assert runner.stopped and "tiles/005" not in journal.keys(DONE)
    assert journal.get("tiles/001").status in (ACQUIRED, DONE), "the tile in hand is kept"  # type: ignore[union-attr]


def test_pause_holds_at_a_tile_boundary_until_resumed(tmp_path: Path, journal: Journal) -> None:
    engine = FakeEngine(tmp_path)
    runner = ScanRunner(engine, plan(4), journal, FakeAnalysis(journal))
    engine.on_take[1] = runner.pause
    thread = threading.Thread(target=runner.run)
    thread.start()
    time.sleep(0.5)
    assert runner.paused and [c for c in engine.calls if c[0] == "acquire"] == [("acquire", 0), ("acquire", 1)]
    runner.resume()
    thread.join(10)
    assert not thread.is_alive() and len([c for c in engine.calls if c[0] == "acquire"]) == 4


def test_tiles_are_journaled_acquired_only_once_written(tmp_path: Path, journal: Journal) -> None:
    """A tile's file is written while the stage moves on; the journal calls it acquired only once it is on disk,
    and a failed write (a full disk) ends the scan with that error."""
    from concurrent.futures import Future

    class SlowWrites(FakeEngine):
        def acquire(self, tile: TilePlan, *, refocus: bool = False) -> TileRecord:
            record = super().acquire(tile, refocus=refocus)
            record.written = Future()
            seen.append(journal.get(record.key))  # not yet journaled while its write is pending

            def finish() -> None:
                time.sleep(0.05)
                if tile.index == 3:
                    record.written.set_exception(OSError(28, "No space left on device"))  # type: ignore[union-attr]
                else:
                    record.written.set_result(None)  # type: ignore[union-attr]

            threading.Thread(target=finish).start()
            return record

    seen: list[object] = []
    with pytest.raises(OSError, match="No space left"):
        ScanRunner(SlowWrites(tmp_path), plan(6), journal, FakeAnalysis(journal)).run()
    assert seen[:3] == [None, None, None]
    assert {journal.get(f"tiles/{i:03d}").status for i in range(3)} == {DONE}  # type: ignore[union-attr]
    assert journal.get("tiles/003") is None, "a tile whose file failed is not acquired"


def test_an_analysis_error_stops_the_scan_and_is_raised(tmp_path: Path, journal: Journal) -> None:
    """A full disk while writing candidates ends the scan with that error; devices are still closed."""
    engine = FakeEngine(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        ScanRunner(engine, plan(8), journal, FakeAnalysis(journal, explode_at=2), queue_tiles=1).run()
    assert engine.calls[-1] == ("teardown", -1)
    assert len([c for c in engine.calls if c[0] == "acquire"]) < 8, "acquisition stops soon after"
