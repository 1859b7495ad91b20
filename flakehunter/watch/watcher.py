"""The watch folder: analyse every image that acquisition software writes into a folder, exactly once.

``flakehunter watch DIR --out OUT`` first sweeps the images already in ``DIR``, then follows new ones
through a watchdog observer (`flakehunter.watch.observer`; ``--polling`` for network shares). For each
file:

1. **Complete?** A file is looked at once it has settled (`flakehunter.watch.schedule`). A settled file
   whose first bytes are no TIFF, PNG or JPEG signature is quarantined at once; one that does not parse
   yet is retried with exponential back-off, and a file that changes meanwhile starts counting again,
   so a slow writer is waited for and never punished.
2. **Bad files** that stay unreadable through ``max_attempts`` tries, or whose analysis fails, are
   quarantined (`flakehunter.watch.quarantine`). A quarantined file that later grows or changes is
   examined again.
3. **Exactly once.** The journal records each file by path with its size, mtime and SHA-256; the
   analysis step (`flakehunter.analysis.step`, the same one scan and detect use) appends candidates
   durably before it marks the file done, and the candidate writer drops, on restart, the records of a
   file that was not. The content hash makes a touched, copied or renamed image count as already
   analysed, and a done file whose content later changes is reported, not silently mixed in.
4. **Memory stays flat:** what is finished lives in the journal on disk; in memory are only the files
   in flight and a bounded de-duplication index.

The first images are held until the detectors have calibrated on them (as in scan and detect); when
no new image comes for a while, the step calibrates on what it holds. SIGTERM or Ctrl-C finishes the
file in hand and stops. A status line is logged every ``status_interval_s`` and written to
``OUT/status.json``; ``flakehunter status OUT`` reads the run from another process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flakehunter.analysis.pipeline import PipelineSpec, build_pipeline
from flakehunter.analysis.step import AnalysisInput, AnalysisResult, AnalysisStep, image_megapixel_limit
from flakehunter.atomic import is_temp_name, write_json_atomic
from flakehunter.config import DetectConfig
from flakehunter.detect import file_key
from flakehunter.errors import InputError
from flakehunter.image_decode import image_format
from flakehunter.journal import DONE, FAILED, PENDING, QUARANTINED, Journal
from flakehunter.run import manifest as run_manifest
from flakehunter.run.candidate_writer import CandidateWriter
from flakehunter.run.layout import RunDirectory
from flakehunter.run.status import journal_counts
from flakehunter.tiles import IMAGE_SUFFIXES
from flakehunter.watch.observer import Event, FolderObserver
from flakehunter.watch.quarantine import Quarantine
from flakehunter.watch.report import peak_rss_mb, rss_mb, write_status, write_watch_manifest
from flakehunter.watch.schedule import FileStat, PendingFile, Schedule, backoff_s

log = logging.getLogger(__name__)

#: Positioned candidates the de-duplication index remembers (a few thousand images' worth).
INDEX_CAPACITY = 20_000


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class WatchCounts:
    """Counters of this process's run, for the status line."""

    analysed: int = 0
    skipped: int = 0
    retracted: int = 0
    retries: int = 0
    candidates: int = 0
    started: float = field(default_factory=time.monotonic)


class Watcher:
    """Watches one folder and analyses its images into one output folder.

    Args:
        watch_dir: the folder acquisition software writes into.
        out: the output folder (a run directory of kind "watch").
        config: material, detectors, pixel-size fallback and the timing options (``config.watch``).
        config_path: where ``config`` came from (errors name it; relative paths resolve against it).
        recursive: also watch sub-folders.
        polling: poll the folder instead of using OS events (network shares).
        stop: set it to stop; the watcher finishes the file in hand first.
    """

    def __init__(
        self,
        watch_dir: str | Path,
        out: str | Path,
        config: DetectConfig,
        *,
        config_path: str | Path | None = None,
        recursive: bool = False,
        polling: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        self.watch_dir = Path(watch_dir).resolve()
        self.directory = RunDirectory(Path(out).resolve())
        self.out = self.directory.path
        self.config = config
        self.options = config.watch
        self.config_path = Path(config_path) if config_path else None
        self.recursive = recursive
        self.polling = polling
        self.stop_event = stop or threading.Event()
        self.started = threading.Event()  # set once the observer runs
        self.counts = WatchCounts()
        self._inbox: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.schedule = Schedule()
        self._accepted: dict[str, tuple[PendingFile, FileStat, str]] = {}  # held by the step
        self._last_accept = time.monotonic()
        self._new_rows: dict[str, dict[str, Any]] = {}
        self.observer = FolderObserver(self.watch_dir, self._inbox, recursive=recursive, polling=polling,
                                       poll_interval_s=self.options.poll_interval_s)
        self.calibration: list[dict[str, Any]] = []
        self.run_id = uuid.uuid4().hex[:12]
        self.created = run_manifest.now_iso()

    # -- control ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the file in hand and stop (safe from a signal handler or another thread)."""
        self.stop_event.set()
        self._inbox.put(("wake", ""))

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Sweep, then follow the folder until stopped. Returns the final counts.

        Raises `InputError` for a bad folder, a config that differs from the one ``out`` was started
        with, or an ``out`` another process uses; `RuntimeFailure` when the output cannot be written
        (disk full): the candidate files are then left for the next start to recover.
        """
        from flakehunter.registry import get_registry

        if not self.watch_dir.is_dir():
            raise InputError(f"{self.watch_dir}: watch folder does not exist or is not a folder")
        registry = get_registry()
        spec = PipelineSpec.from_detect(self.config, self.config_path)
        pipeline = build_pipeline(spec, registry, self.out)
        image_megapixel_limit()  # a bad FLAKEHUNTER_MAX_IMAGE_MP is refused before anything is written
        self.directory.open("watch")
        try:
            self._check_config_record()
            with Journal(self.directory.journal) as journal:
                self.journal = journal
                self.writer = CandidateWriter(self.out, done_images=journal.keys(DONE), index_capacity=INDEX_CAPACITY)
                try:
                    self.step = AnalysisStep(pipeline, journal, self.writer, pixel_size_um=self.config.pixel_size_um)
                    self.quarantine = Quarantine(journal, self.directory.quarantine)
                    self.quarantine.reconcile()
                    self._previous_run()
                    self.calibration = pipeline.calibration_report()
                    self._write_manifest("running")
                    try:
                        self._loop()
                    finally:
                        self.observer.stop()
                        summary = self.summary()
                        self._write_manifest("stopped")
                        self._write_status("stopped", summary)
                finally:
                    self.writer.close()
            return summary
        finally:
            self.directory.close()

    def _previous_run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.directory.manifest.read_text(encoding="utf-8"))
            if data.get("kind") == "watch":
                self.run_id, self.created = data.get("run_id", self.run_id), data.get("created", self.created)

    def _check_config_record(self) -> None:
        """Refuse to mix candidates of different detection settings in one output folder."""
        record = {
            "material": self.config.material.model_dump(mode="json"),
            "pixel_size_um": self.config.pixel_size_um,
            "detectors": [d.model_dump(mode="json") for d in self.config.detectors],
        }
        path = self.directory.watch_config
        if path.exists():
            try:
                before = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                before = None
            if isinstance(before, dict):
                for key, value in record.items():
                    if before.get(key) != value:
                        raise InputError(
                            f"{self.out}: was started with {key} = {json.dumps(before.get(key))}, now "
                            f"{json.dumps(value)}; use another --out for different detection settings"
                        )
        elif self.directory.holds_run():
            raise InputError(f"{self.out}: holds a scan or detect run; use another --out for watch")
        write_json_atomic(path, {**record, "watch_dir": str(self.watch_dir), "recursive": self.recursive})

    def _loop(self) -> None:
        self.observer.start()
        self.started.set()
        self.sweep()  # after the observer starts, so that nothing written meanwhile is missed
        self._drop_vanished()
        self._status_line()
        next_status = time.monotonic() + self.options.status_interval_s
        next_rescan = time.monotonic() + self.options.rescan_s
        while not self.stop_event.is_set():
            self._drain_inbox()
            self._process_due()
            now = time.monotonic()
            if not self.observer.alive:
                self.observer.restart()
                self.sweep()
            if now >= next_rescan:
                self.sweep()
                next_rescan = now + self.options.rescan_s
            if self.step.pending and now - self._last_accept >= self._idle_flush_s and self.schedule.next_due() is None:
                self._handle(self.step.flush())  # no more images for a while: calibrate on what came
            if now >= next_status:
                self._status_line()
                next_status = now + self.options.status_interval_s
            self._wait(min(next_status, next_rescan))
        self._flush_new_rows()
        self._status_line()

    @property
    def _idle_flush_s(self) -> float:
        return max(1.0, 2 * self.options.settle_s)

    def _wait(self, until: float) -> None:
        """Sleep until the next due file, the next periodic task, or an event."""
        if self.stop_event.is_set():
            return
        due = self.schedule.next_due()
        if self.step.pending:
            until = min(until, self._last_accept + self._idle_flush_s)
        timeout = max(0.0, min(until if due is None else min(due, until), until) - time.monotonic())
        if timeout <= 0:
            return
        try:
            item = self._inbox.get(timeout=min(timeout, 1.0))
        except queue.Empty:
            return
        self._on_event(*item)

    # -- discovery ----------------------------------------------------------------------------
    def accepts(self, path: Path) -> bool:
        """An image of ours: image suffix, not hidden, not a temporary name, inside the folder, not in OUT."""
        if path.suffix.lower() not in IMAGE_SUFFIXES or is_temp_name(path):
            return False
        try:
            rel = path.relative_to(self.watch_dir)
        except ValueError:
            return False
        if any(part.startswith(".") for part in rel.parts):
            return False
        if not self.recursive and len(rel.parts) != 1:
            return False
        return not (path == self.out or self.out in path.parents)

    def iter_images(self, root: Path | None = None) -> Iterator[Path]:
        """Image files under ``root`` (default: the watch folder), streamed folder by folder."""
        root = root or self.watch_dir
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if self.recursive:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and here / d != self.out)
            else:
                dirnames[:] = []
            for name in sorted(filenames):
                path = here / name
                if self.accepts(path):
                    yield path

    def sweep(self, root: Path | None = None) -> int:
        """Queue every image under ``root`` that is not finished, oldest first. Returns how many."""
        found: list[tuple[int, str, Path]] = []
        for path in self.iter_images(root):
            key = file_key(path)
            if key in self.schedule or key in self._accepted:
                continue
            try:
                st = FileStat.of(path.stat())
            except OSError:
                continue
            item = self.journal.get(key)
            if item is not None and item.status in (DONE, QUARANTINED) and st.matches(item.data):
                continue
            found.append((st.mtime_ns, key, path))
        found.sort()
        for _, _, path in found:
            self._track(path, closed=False)
        self._flush_new_rows()
        if found:
            log.info("watch: %d file(s) to analyse found by a sweep", len(found), extra={"event": "sweep"})
        return len(found)

    def _drop_vanished(self) -> None:
        """Forget pending rows of files that went away (or out of this watch's scope) while it was down."""
        for item in [*self.journal.items(PENDING), *self.journal.items(FAILED)]:
            path = Path(item.key)
            if item.key not in self.schedule and (not path.exists() or not self.accepts(path)):
                self.journal.delete(item.key)

    def _drain_inbox(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._on_event(*item)
        self._flush_new_rows()

    def _on_event(self, kind: str, raw: str) -> None:
        if kind == "wake" or not raw:
            return
        path = Path(os.path.abspath(raw))
        if kind == "dir":
            if self.recursive:
                self.sweep(path)
            return
        if not self.accepts(path):
            return
        key = file_key(path)
        if kind == "deleted":
            self._forget(key)
            return
        if key in self._accepted:
            return  # held for calibration; a change is caught when its analysis comes back
        pf = self.schedule.get(key)
        if pf is not None:
            if kind == "closed":
                pf.closed = True
                self.schedule.at(pf, time.monotonic())
            return
        item = self.journal.get(key)
        if item is not None and item.status in (DONE, QUARANTINED):
            with contextlib.suppress(OSError):
                if FileStat.of(path.stat()).matches(item.data):
                    return  # an event about a file we already finished, unchanged
        self._track(path, closed=kind == "closed")

    def _track(self, path: Path, *, closed: bool) -> None:
        key = file_key(path)
        pf = PendingFile(path=path, key=key, due=time.monotonic(), closed=closed)
        item = self.journal.get(key)
        if item is None:
            self._new_rows[key] = {"first_seen": run_manifest.now_iso()}
        elif item.status in (PENDING, FAILED):
            pf.attempts = int(item.data.get("attempts", 0))  # a restart continues the back-off
        self.schedule.add(pf)

    def _flush_new_rows(self) -> None:
        """Record newly seen files as pending, in one transaction (one fsync for a burst)."""
        if not self._new_rows:
            return
        rows, self._new_rows = self._new_rows, {}
        with self.journal.transaction():
            for key, data in rows.items():
                if self.journal.get(key) is None:
                    self.journal.set(key, PENDING, **data)

    def _forget(self, key: str) -> None:
        """A file in flight disappeared (deleted or renamed away) before it was finished."""
        self.schedule.drop(key)
        self._new_rows.pop(key, None)
        item = self.journal.get(key)
        if item is not None and item.status in (PENDING, FAILED) and key not in self._accepted:
            self.journal.delete(key)

    # -- checking and analysing ----------------------------------------------------------------
    def _process_due(self, budget_s: float = 1.0) -> None:
        """Check the files whose time has come, in arrival order, for about ``budget_s``.

        Events are drained between files; the budget returns control to the loop's periodic tasks
        (status line, rescan, observer health) while a backlog is worked off.
        """
        end = time.monotonic() + budget_s
        while not self.stop_event.is_set() and time.monotonic() < end:
            pf = self.schedule.pop_due()
            if pf is None:
                return
            self.check(pf)
            self._drain_inbox()

    def check(self, pf: PendingFile) -> None:
        """One look at a file in flight: wait, retry, skip, analyse or quarantine it."""
        now = time.monotonic()
        try:
            st = FileStat.of(pf.path.stat())
        except FileNotFoundError:
            self._forget(pf.key)
            return
        except OSError as exc:
            self._retry(pf, f"cannot stat: {exc}")
            return
        if st != pf.stat:
            changed_since = pf.stat is not None
            pf.stat, pf.stable_since = st, now
            if changed_since:
                pf.attempts = 0  # still being written: a slow writer is waited for, not punished
            settled = time.time() - st.mtime_ns / 1e9 >= self.options.settle_s
            if not (pf.closed or (not changed_since and settled)):
                self.schedule.at(pf, now + self.options.settle_s)
                return
        elif not pf.closed and now - pf.stable_since < self.options.settle_s:
            self.schedule.at(pf, pf.stable_since + self.options.settle_s)
            return
        pf.closed = False
        self._settled(pf, st)

    def _settled(self, pf: PendingFile, st: FileStat) -> None:
        item = self.journal.get(pf.key)
        if item is not None and item.status in (DONE, QUARANTINED) and st.matches(item.data):
            self.schedule.drop(pf.key)
            return
        try:
            with open(pf.path, "rb") as fh:
                head = fh.read(16)
            sha = sha256_file(pf.path)
        except FileNotFoundError:
            self._forget(pf.key)
            return
        except OSError as exc:
            self._retry(pf, f"cannot read: {exc}")
            return
        if self._changed_since(pf, st):  # written to while we hashed it: still in progress
            return
        if head and image_format(head) is None:
            # No image signature at all: waiting cannot make this an image (a text file named .tif).
            self.quarantine.add(pf.key, pf.path, "not TIFF, PNG or JPEG data (no image signature in its first bytes)",
                                attempts=pf.attempts, stat=st, sha256=sha)
            self.schedule.drop(pf.key)
            return
        if item is not None and item.status == DONE:
            self._done_file_changed(pf, st, sha, item.data)
            return
        twin = next((k for k in self.journal.find("sha256", sha, status=DONE) if k != pf.key), None)
        if twin is not None:
            # The same bytes were analysed under another name (renamed, moved or copied): not again.
            self.journal.set(pf.key, DONE, size=st.size, mtime_ns=st.mtime_ns, sha256=sha, candidates=0,
                             duplicate_of=twin, error=None)
            self.counts.skipped += 1
            log.info("watch: %s has the same content as %s, already analysed", pf.path, twin,
                     extra={"event": "file_duplicate", "file": pf.key, "duplicate_of": twin})
            self.schedule.drop(pf.key)
            return
        self._analyse(pf, st, sha)

    def _done_file_changed(self, pf: PendingFile, st: FileStat, sha: str, data: dict[str, Any]) -> None:
        self.schedule.drop(pf.key)
        if sha == data.get("sha256"):  # touched or copied over with the same bytes: nothing new
            self.journal.set(pf.key, DONE, size=st.size, mtime_ns=st.mtime_ns)
            return
        # New content under a name already analysed: report it once, keep the first analysis.
        key = f"{pf.key}#changed-{sha[:12]}"
        if self.journal.get(key) is None:
            reason = (
                f"content changed after it was analysed (sha256 {str(data.get('sha256'))[:12]}... -> {sha[:12]}...); "
                "the first analysis stands; save new images under new names"
            )
            self.quarantine.add(key, pf.path, reason, attempts=pf.attempts, stat=st, sha256=sha)

    def _analyse(self, pf: PendingFile, st: FileStat, sha: str) -> None:
        # Size, mtime and hash go in first; the step's 'done' merges into this row.
        self.journal.set(pf.key, PENDING, size=st.size, mtime_ns=st.mtime_ns, sha256=sha, attempts=pf.attempts,
                         error=None, reason=None, quarantined_at=None)  # a quarantined file examined again
        self.schedule.drop(pf.key)
        self._accepted[pf.key] = (pf, st, sha)
        self._last_accept = time.monotonic()
        self._handle(self.step.submit(AnalysisInput(pf.key, path=pf.path)))

    def _handle(self, results: list[AnalysisResult]) -> None:
        """What the step finished: done files are checked and logged, failed ones retried."""
        for result in results:
            pf, st, _ = self._accepted.pop(result.key, (None, None, None))
            if pf is None or st is None:
                continue
            if result.status != "done":
                reason = (result.error or "analysis failed").removeprefix(f"{pf.path}: ").removeprefix(f"{pf.key}: ")
                self.schedule.add(pf)
                self._retry(pf, reason)
                continue
            if self._changed_since(pf, st):
                # Written to between our hash and the detector's read: what was analysed is not what was
                # hashed. Take the analysis back (as a restart would) and look again once it settles.
                self._retract(pf)
                continue
            self.counts.analysed += 1
            self.counts.candidates += len(result.candidates)
            log.info("watch: %s: %d candidate(s) in %.2f s%s", pf.path.name, len(result.candidates), result.seconds,
                     "".join(f"; {w}" for w in result.warnings),
                     extra={"event": "file_done", "file": pf.key, "candidates": len(result.candidates),
                            "seconds": round(result.seconds, 4), "warnings": result.warnings})
            self._note_calibration()

    def _note_calibration(self) -> None:
        """Say once that the detectors have calibrated on the first images."""
        report = self.step.pipeline.calibration_report()
        if report == self.calibration:
            return
        self.calibration = report
        for entry in report:
            note = entry.get("note")
            log.info("watch: %s detector: %s%s", entry.get("detector"), entry.get("method"),
                     f" ({note})" if note else "", extra={"event": "calibrated", **entry})
        self._write_manifest("running")

    def _changed_since(self, pf: PendingFile, st: FileStat) -> bool:
        """True (and the file rescheduled) when its size or mtime differ from ``st`` now."""
        try:
            now = FileStat.of(pf.path.stat())
        except OSError:
            return False  # gone: what was read was complete; a deletion event will tidy up
        if now == st:
            return False
        pf.stat, pf.stable_since, pf.attempts, pf.closed = now, time.monotonic(), 0, False
        self.schedule.add(pf)
        self.schedule.at(pf, time.monotonic() + self.options.settle_s)
        return True

    def _retract(self, pf: PendingFile) -> None:
        """Undo a finished analysis: the journal row goes back to pending and the candidate files are
        rewritten without the file's records, exactly what a restart after a crash would do."""
        self.journal.set(pf.key, PENDING, sha256=None, size=None, mtime_ns=None, candidates=None,
                         error="changed while it was analysed")
        self.writer.close()
        self.writer = CandidateWriter(self.out, done_images=self.journal.keys(DONE), index_capacity=INDEX_CAPACITY)
        self.step.writer = self.writer
        self.counts.retracted += 1
        log.warning("watch: %s changed while it was analysed; analysing it again once it settles", pf.path,
                    extra={"event": "file_retracted", "file": pf.key})

    def _retry(self, pf: PendingFile, reason: str) -> None:
        pf.attempts += 1
        pf.last_error = reason
        if pf.attempts >= self.options.max_attempts:
            self.quarantine.add(pf.key, pf.path, reason, attempts=pf.attempts, stat=pf.stat)
            self.schedule.drop(pf.key)
            return
        delay = backoff_s(pf.attempts, self.options.retry_initial_s, self.options.retry_max_s)
        self.counts.retries += 1
        self.journal.set(pf.key, PENDING, attempts=pf.attempts, error=reason)
        log.info("watch: %s not ready (attempt %d of %d, again in %.1f s): %s", pf.path.name, pf.attempts,
                 self.options.max_attempts, delay, reason,
                 extra={"event": "file_retry", "file": pf.key, "attempt": pf.attempts})
        self.schedule.at(pf, time.monotonic() + delay)

    # -- reporting ------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Files seen and not finished: waiting to settle, retrying, or held by the analysis step."""
        return len(self.schedule) + len(self._accepted)

    def summary(self) -> dict[str, Any]:
        counts = journal_counts(self.journal)
        elapsed = time.monotonic() - self.counts.started
        return {
            "processed": counts["processed"],
            "quarantined": counts["quarantined"],
            # FAILED rows exist only for an instant (the step's mark before the watcher decides).
            "pending": counts["pending"] + counts["failed"],
            "in_flight": self.in_flight,
            "analysed_this_run": self.counts.analysed,
            "quarantined_this_run": self.quarantine.count,
            "retracted_this_run": self.counts.retracted,
            "candidates": self.writer.count,
            "files_per_s": round(self.counts.analysed / elapsed, 3) if elapsed > 0 else 0.0,
            "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }

    def _write_status(self, state: str, summary: dict[str, Any] | None = None) -> None:
        write_status(self, state, summary or self.summary())

    def _write_manifest(self, status: str) -> None:
        write_watch_manifest(self, status)

    def _status_line(self) -> None:
        s = self.summary()
        log.info(
            "watch: %d processed, %d quarantined, %d pending; this run %d analysed (%.2f files/s); "
            "%d candidates; RSS %.0f MiB",
            s["processed"], s["quarantined"], s["pending"], s["analysed_this_run"], s["files_per_s"],
            s["candidates"], s["rss_mb"], extra={"event": "status", **s},
        )
        self._write_status("running", s)
