"""The scan runner: decides *when* — tile order, pause and cancel at tile boundaries, resume, retakes.

In the manner of pymmcore-plus's MDA runner: it drives an engine (`flakehunter.acquisition.engine`,
which knows *how* to take one tile) and hands every tile to the analysis through a bounded queue, so the
stage moves to the next tile while earlier ones are analysed and memory stays flat. Acquisition runs on
the calling thread, analysis on one worker thread.

Resume: a tile the journal marks done is skipped; one acquired but not analysed (the process died in
between) is analysed from its file, never taken again. Retakes: when the analysis defers a tile as out
of focus, the runner refocuses and takes it once more at the next tile boundary; the second take is
analysed whatever its focus (and named in the manifest when it stays soft).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Protocol

from flakehunter.acquisition.engine import TileRecord
from flakehunter.analysis.step import AnalysisResult
from flakehunter.geometry import TilePlan
from flakehunter.journal import ACQUIRED, DONE, Journal

log = logging.getLogger(__name__)

QUEUE_TILES = 3  # tiles held in memory between acquisition and analysis


class Engine(Protocol):
    """What the runner needs of an acquisition engine."""

    def setup(self) -> None: ...

    def teardown(self) -> None: ...

    def key(self, tile: TilePlan) -> str: ...

    def acquire(self, tile: TilePlan, *, refocus: bool = False) -> TileRecord: ...

    def load(self, tile: TilePlan) -> TileRecord | None: ...


class TileAnalysis(Protocol):
    """What the runner hands tiles to (an `AnalysisStep` behind an adapter that knows tiles)."""

    def submit(self, record: TileRecord, *, retake_allowed: bool) -> list[AnalysisResult]: ...

    def flush(self) -> list[AnalysisResult]: ...


@dataclass
class RunnerCounts:
    """What happened in this run of the runner."""

    acquired: int = 0
    analysed: int = 0
    failed: int = 0
    retaken: int = 0
    loaded_from_disk: int = 0
    acquire_s: float = 0.0
    soft_after_retake: list[str] = field(default_factory=list)


class _Signal(Enum):
    """What the acquisition thread tells the analysis worker besides tiles."""

    FLUSH = auto()  # analyse whatever is held (calibration, a partial batch), then say so
    END = auto()  # stop


_Work = tuple[TileRecord, bool] | _Signal


class ScanRunner:
    """Runs the tiles of a plan through an engine and an analysis; `run` may be called once.

    Args:
        engine: takes tiles.
        tiles: the plan, in acquisition order.
        journal: the run's journal (which tiles are done or acquired).
        analysis: where tiles go to be analysed.
        retake: refocus and retake a tile the analysis finds out of focus (once).
        on_acquired: called with every tile once its file is written (on the analysis thread; lifecycle hook).
        on_progress: called with (tiles done, tiles total, tiles acquired) after each tile.
        on_started: called once the devices are connected, before the first tile.
    """

    def __init__(
        self,
        engine: Engine,
        tiles: Sequence[TilePlan],
        journal: Journal,
        analysis: TileAnalysis,
        *,
        retake: bool = True,
        on_acquired: Callable[[TileRecord], None] | None = None,
        on_progress: Callable[[int, int, int], None] | None = None,
        on_started: Callable[[], None] | None = None,
        queue_tiles: int = QUEUE_TILES,
    ) -> None:
        self.engine = engine
        self.tiles = list(tiles)
        self.journal = journal
        self.analysis = analysis
        self.retake = retake
        self.on_acquired = on_acquired
        self.on_progress = on_progress
        self.on_started = on_started
        self.counts = RunnerCounts()
        self._work: queue.Queue[_Work] = queue.Queue(maxsize=queue_tiles)
        self._retakes: queue.Queue[TilePlan] = queue.Queue()
        self._flushed = threading.Event()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._worker_error: BaseException | None = None
        self._progress_lock = threading.Lock()
        self._done = 0
        self._done_before = 0

    # -- control (any thread, signal handlers included) ------------------------------------------------
    def request_stop(self) -> None:
        """Finish the tile in hand and stop; queued tiles stay acquired for --resume."""
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        """Hold before the next tile (the stage stays where it is)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> RunnerCounts:
        """Acquire and analyse every tile not yet done; returns the counts. Raises what the worker raised."""
        self._done = self._done_before = len([t for t in self.tiles if self._status(t) == DONE])
        worker = threading.Thread(target=self._analyse_forever, name="flakehunter-analysis", daemon=True)
        try:
            self.engine.setup()
            if self.on_started is not None:
                self.on_started()
            worker.start()
            self._report()
            for tile in self.tiles:
                if not self._boundary():
                    break
                self._retake_pending()
                self._take(tile)
            while not self._stop.is_set() and self._worker_error is None:
                # Let the analysis finish what it holds (calibration, a batch); it may ask for retakes.
                self._flushed.clear()
                self._put(_Signal.FLUSH)
                while not self._flushed.wait(0.05):
                    if self._worker_error is not None or not worker.is_alive():
                        break
                if self._retakes.empty():
                    break
                self._retake_pending()
        finally:
            if worker.is_alive():
                self._put(_Signal.END, force=True)
                worker.join()
            self.engine.teardown()
        if self._worker_error is not None:
            raise self._worker_error
        return self.counts

    def _status(self, tile: TilePlan) -> str | None:
        item = self.journal.get(self.engine.key(tile))
        return item.status if item else None

    def _boundary(self) -> bool:
        """At a tile boundary: wait while paused; False once stopped (or the analysis failed)."""
        while not self._running.wait(0.1):
            if self._stop.is_set():
                break
        return not self._stop.is_set() and self._worker_error is None

    def _take(self, tile: TilePlan) -> None:
        item = self.journal.get(self.engine.key(tile))
        if item is not None and item.status == DONE:
            return
        if item is not None and item.status == ACQUIRED:
            record = self.engine.load(tile)
            if record is not None:  # acquired before an interruption: analyse the file, do not take it again
                self.counts.loaded_from_disk += 1
                self._put((record, not item.data.get("retaken")))
                return
        self._acquire(tile, refocus=False)

    def _acquire(self, tile: TilePlan, *, refocus: bool) -> None:
        t0 = time.perf_counter()
        record = self.engine.acquire(tile, refocus=refocus)
        self.counts.acquire_s += time.perf_counter() - t0
        self.counts.acquired += 1
        if record.written is None:
            self._journal_acquired(record)
        else:  # journaled the moment its file is on disk, on the writer thread, so a resume never takes it again
            # The worker waits for the journal entry, not just the file: a waiter on the write's own future can
            # wake before its callbacks run, analyse the tile and mark it done, and then be overwritten.
            journaled: Future[None] = Future()

            def written(done: Future[None]) -> None:
                try:
                    done.result()
                    self._journal_acquired(record)
                except BaseException as exc:
                    journaled.set_exception(exc)
                else:
                    journaled.set_result(None)

            record.written.add_done_callback(written)
            record.written = journaled
        self._put((record, self.retake and not refocus))

    def _journal_acquired(self, record: TileRecord) -> None:
        data = {k: round(v, 4) for k, v in record.timings.items()}
        if record.position is not None:
            p = record.position
            data.update(x_um=p.x_um, y_um=p.y_um, z_um=p.z_um)
        if record.retake:
            data["retaken"] = True
        self.journal.set(record.key, ACQUIRED, **data)

    def _stored(self, record: TileRecord) -> None:
        """Before a new tile is analysed: its file must be on disk (a failed write, e.g. a full disk, ends the
        scan here, naming the file); then the hooks hear of it (worker thread)."""
        if record.image is None:
            return  # loaded from its file for a resume
        if record.written is not None:
            record.written.result()
        if self.on_acquired is not None:
            self.on_acquired(record)
        self._report()

    def _retake_pending(self) -> None:
        while self._boundary():
            try:
                tile = self._retakes.get_nowait()
            except queue.Empty:
                return
            log.warning("tile %d: out of focus; refocusing and taking it again", tile.index)
            self.counts.retaken += 1
            self._acquire(tile, refocus=True)

    def _put(self, item: _Work, *, force: bool = False) -> None:
        """Queue for the worker, waking up for a stop or a dead worker instead of blocking forever."""
        while True:
            try:
                self._work.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._worker_error is not None and not force:
                    return
                if force:  # the worker is gone or stuck: make room for the end marker
                    with contextlib.suppress(queue.Empty):
                        self._work.get_nowait()

    # -- the worker ----------------------------------------------------------------------------------
    def _analyse_forever(self) -> None:
        try:
            while True:
                item = self._work.get()
                if item is _Signal.END:
                    return
                if item is _Signal.FLUSH:
                    if not self._stop.is_set():
                        self._handle(self.analysis.flush())
                    self._flushed.set()
                    continue
                record, retake_allowed = item
                self._stored(record)
                if self._stop.is_set():
                    continue  # leave it acquired; --resume analyses it from disk
                self._handle(self.analysis.submit(record, retake_allowed=retake_allowed))
        except BaseException as exc:
            self._worker_error = exc
            self._stop.set()
            self._flushed.set()

    def _handle(self, results: list[AnalysisResult]) -> None:
        for result in results:
            if result.status == "deferred":
                tile = next(t for t in self.tiles if self.engine.key(t) == result.key)
                self._retakes.put(tile)
                continue
            if result.status == "failed":
                self.counts.failed += 1
            else:
                self.counts.analysed += 1
                if "out_of_focus" in result.flags:
                    self.counts.soft_after_retake.append(result.key)
            with self._progress_lock:
                self._done += 1
            self._report()

    def _report(self) -> None:
        if self.on_progress is not None:
            with self._progress_lock:
                taken = self._done_before + self.counts.acquired - self.counts.retaken + self.counts.loaded_from_disk
                self.on_progress(self._done, len(self.tiles), taken)
