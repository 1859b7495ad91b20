"""The watch folder: analyse every image that acquisition software writes into a folder, exactly once.

``flakehunter watch DIR --out OUT`` first sweeps the images already in ``DIR``, then follows new ones
through a watchdog observer (inotify close-write events on Linux; ``--polling`` for network shares,
where no events arrive). For each file:

1. **Complete?** A file is read only once its size and mtime have stayed unchanged for ``settle_s``
   (or right after the writer closed it, where the OS says so), and then it must parse:
   `flakehunter.tiles.read_image` rejects a truncated TIFF, PNG or JPEG. A file that does not parse is
   retried with exponential backoff; a file that changes meanwhile starts counting again, so a slow
   writer is waited for and never punished.
2. **Bad files** that stay unreadable through ``max_attempts`` tries, or whose analysis raises, are
   quarantined: the reason goes to ``OUT/quarantine.jsonl`` (appended and fsynced) and the journal.
   The file itself is left where it is: it belongs to the user.
3. **Exactly once.** The journal (``OUT/journal.sqlite``, SQLite with ``synchronous=FULL``) records each
   file by path with its size, mtime and SHA-256. `flakehunter.detect.FileAnalyzer` appends the
   candidates durably before it marks the file done, and the candidate sink drops, on restart, the
   records of a file that was not marked done. So a restart, also after ``kill -9`` or a power cut,
   neither repeats nor skips a file. The content hash makes a touched, copied or renamed image count
   as already analysed, and a done file whose content later changes is reported, not silently mixed.
4. **Memory stays flat:** what is finished lives in the journal on disk; in memory are only the files
   still in flight and a bounded index of recent candidates for de-duplication (`RecentCandidateSink`).

An error in the event handler is logged and never reaches the observer thread; an observer that dies
anyway is restarted, followed by a rescan. The folder is also rescanned every ``rescan_s`` in case an
event was lost (inotify queue overflow, a share that hiccupped). SIGTERM or Ctrl-C finishes the file in
hand and stops. A status line is logged every ``status_interval_s`` and written to ``OUT/status.json``;
``flakehunter status OUT`` summarises the journal from another process.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import os
import platform
import queue
import resource
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flakehunter import __version__
from flakehunter.atomic import atomic_write, fsync_dir, is_temp_name, write_json_atomic
from flakehunter.candidates import Candidate, CandidateSink
from flakehunter.config import DetectConfig
from flakehunter.errors import InputError, RuntimeFailure
from flakehunter.journal import DONE, FAILED, PENDING, QUARANTINED, Journal
from flakehunter.locks import DirectoryLock, is_locked, lock_holder

log = logging.getLogger(__name__)

QUARANTINE_FILE = "quarantine.jsonl"
STATUS_FILE = "status.json"
CONFIG_RECORD = "watch-config.json"
LOCK_NAME = ".watch.lock"
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")  # what flakehunter.tiles.read_image reads


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def rss_mb() -> float:
    """Resident memory of this process in MiB (current on Linux, peak elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    On Linux the process's own high-water mark (VmHWM): ``ru_maxrss`` would also count the peak of
    the parent that spawned it (vfork + exec charges the parent's memory to the child).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileStat:
    """What says whether a file changed: its size and modification time (ns)."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(int(st.st_size), int(st.st_mtime_ns))

    def matches(self, data: dict[str, Any]) -> bool:
        return data.get("size") == self.size and data.get("mtime_ns") == self.mtime_ns


@dataclass
class PendingFile:
    """A file in flight: seen, not yet analysed or quarantined."""

    path: Path
    key: str
    due: float  # monotonic time of the next check
    stat: FileStat | None = None
    stable_since: float = 0.0
    closed: bool = False  # the writer closed the file since we last looked (inotify close-write)
    attempts: int = 0  # failed parses of the current content
    last_error: str = ""


@dataclass
class WatchCounts:
    """Counters of this process's run, for the status line."""

    analysed: int = 0
    quarantined: int = 0
    skipped: int = 0
    retracted: int = 0
    retries: int = 0
    candidates: int = 0
    started: float = field(default_factory=time.monotonic)


class RecentCandidateSink(CandidateSink):
    """`CandidateSink` whose de-duplication index holds only the most recent ``capacity`` candidates.

    The base sink keeps every positioned candidate in memory to compare new ones against, which
    grows without bound over a night of images. A watch folder's overlapping images (neighbouring
    tiles of one acquisition) arrive close together in time, so comparing against the last
    ``capacity`` candidates (20 000: a few thousand images) keeps the same duplicates out, with the
    same rule as the base sink, in a fixed ring of numpy arrays (~30 bytes a candidate, allocated once).
    """

    def __init__(self, run_dir: str | Path, *, capacity: int = 20_000, **kwargs: Any) -> None:
        import numpy as np

        self.capacity = capacity
        self._x = np.zeros(capacity)
        self._y = np.zeros(capacity)
        self._diameter = np.zeros(capacity, np.float32)
        self._class = np.zeros(capacity, np.int16)
        self._image = np.zeros(capacity, np.int64)
        self._class_ids: dict[str, int] = {}  # a handful of layer classes
        self._added = 0
        super().__init__(run_dir, **kwargs)

    def _recover(self, done: set[str]) -> list[Candidate]:
        """The base class's recovery, streamed: keep the records of finished images, line by line.

        The base class reads every record into memory first, which over a night of images makes each
        restart's peak memory grow with the night. Kept candidates are indexed here, so nothing is
        returned for the caller to index.
        """
        import csv
        import io

        from flakehunter.candidates import COLUMNS

        count, last_id = 0, 0
        row = io.StringIO()
        writer = csv.writer(row, lineterminator="\n")
        with atomic_write(self.jsonl_path) as jsonl, atomic_write(self.csv_path) as table:
            table.write(",".join(COLUMNS) + "\n")
            if self.jsonl_path.exists():
                with open(self.jsonl_path, encoding="utf-8") as source:
                    for line in source:
                        try:
                            c = Candidate.from_record(json.loads(line))
                        except (json.JSONDecodeError, TypeError):
                            continue  # a torn last line
                        if c.image not in done:
                            continue
                        record = c.to_record()
                        jsonl.write(json.dumps(record) + "\n")
                        row.seek(0)
                        row.truncate()
                        writer.writerow(["" if record[k] is None else record[k] for k in COLUMNS])
                        table.write(row.getvalue())
                        count += 1
                        last_id = max(last_id, c.id)
                        if c.positioned:
                            self._index(c)
        self.count = count
        self._next_id = last_id + 1
        return []

    @property
    def indexed(self) -> int:
        """How many candidates the index holds (at most ``capacity``)."""
        return min(self._added, self.capacity)

    def _class_id(self, layer_class: str) -> int:
        return self._class_ids.setdefault(layer_class, len(self._class_ids))

    def _index(self, c: Candidate) -> None:
        slot = self._added % self.capacity
        self._x[slot], self._y[slot] = c.x_um, c.y_um
        self._diameter[slot] = c.equivalent_diameter_um
        self._class[slot] = self._class_id(c.layer_class)
        self._image[slot] = hash(c.image)  # only compared for equality, within this process
        self._added += 1

    def is_duplicate(self, c: Candidate) -> bool:
        import numpy as np

        n = self.indexed
        if not self.deduplicate or n == 0:
            return False
        distance = np.hypot(self._x[:n] - c.x_um, self._y[:n] - c.y_um)
        limit = np.maximum(self.min_distance_um, 0.5 * np.maximum(self._diameter[:n], c.equivalent_diameter_um))
        same = (self._class[:n] == self._class_id(c.layer_class)) & (self._image[:n] != hash(c.image))
        return bool(np.any(same & (distance < limit)))


class _EventInbox:
    """The watchdog handler: turns events into (kind, path) items on a queue and never raises.

    Anything it does happens on the observer's thread, so it only queues; the watcher's own thread
    decides. An exception here would end watchdog's dispatch loop, so every one is caught and logged.
    """

    def __init__(self, inbox: queue.SimpleQueue[tuple[str, str]]) -> None:
        self.inbox = inbox
        self.errors = 0

    def dispatch(self, event: Any) -> None:
        try:
            kind = event.event_type  # created, modified, closed, moved, deleted, ...
            if event.is_directory:
                if kind in ("created", "moved"):
                    self.inbox.put(("dir", os.fsdecode(event.dest_path or event.src_path)))
                return
            if kind == "moved":
                self.inbox.put(("deleted", os.fsdecode(event.src_path)))
                if event.dest_path:
                    self.inbox.put(("created", os.fsdecode(event.dest_path)))
            elif kind in ("created", "modified", "closed", "deleted"):
                self.inbox.put((kind, os.fsdecode(event.src_path)))
            elif kind == "attrib":  # touch: a new mtime, maybe the same bytes
                self.inbox.put(("modified", os.fsdecode(event.src_path)))
        except Exception:  # never let one odd event end the observer
            self.errors += 1
            log.exception("watch: event handler error (ignored)", extra={"event": "handler_error"})


class Watcher:
    """Watches one folder and analyses its images into one output folder.

    Args:
        watch_dir: the folder acquisition software writes into.
        out: the output folder (candidates, journal, quarantine, manifest, status).
        config: material, detectors, pixel-size fallback and the timing options (``config.watch``).
        config_path: where ``config`` came from, for error messages.
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
        self.out = Path(out).resolve()
        self.config = config
        self.options = config.watch
        self.config_path = Path(config_path) if config_path else None
        self.recursive = recursive
        self.polling = polling
        self.stop_event = stop or threading.Event()
        self.counts = WatchCounts()
        self._inbox: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._pending: dict[str, PendingFile] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._new_rows: dict[str, dict[str, Any]] = {}
        self._observer: Any = None
        self._observer_kind = ""
        self._handler = _EventInbox(self._inbox)
        self._calibration: list[dict[str, Any]] = []

    # -- control ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the file in hand and stop (safe from a signal handler or another thread)."""
        self.stop_event.set()
        self._inbox.put(("wake", ""))

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Sweep, then follow the folder until stopped. Returns the final counts.

        Raises `InputError` for a bad folder or a config that differs from the one ``out`` was
        started with, and `RuntimeFailure` when the output cannot be written (disk full): the
        candidate files are then left for the next start to recover, never appended twice.
        """
        from flakehunter.detect import FileAnalyzer

        if not self.watch_dir.is_dir():
            raise InputError(f"{self.watch_dir}: watch folder does not exist or is not a folder")
        self.out.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(self.out, LOCK_NAME, "watcher")
        lock.acquire()
        try:
            self._check_config_record()
            pipeline = self._build_pipeline()
            with Journal(self.out / "journal.sqlite") as journal:
                self.journal = journal
                saved = journal.get_state("pipeline")
                if saved:
                    pipeline.load_state(saved)
                self.sink = RecentCandidateSink(self.out, done_images=journal.keys(DONE))
                try:  # not a `with`: _retract replaces the sink
                    self.analyzer = FileAnalyzer(
                        self.out, pipeline, journal, self.sink, pixel_size_um=self.config.pixel_size_um
                    )
                    self._reconcile_quarantine()
                    self._calibration = pipeline.calibration_report()
                    self._write_manifest("running")
                    try:
                        self._loop()
                    finally:
                        self._stop_observer()
                        summary = self.summary()
                        self._write_manifest("stopped", with_files=True)
                        self._write_status("stopped", summary)
                finally:
                    self.sink.close()
            return summary
        finally:
            lock.release()

    def _build_pipeline(self) -> Any:
        from flakehunter.detection.base import DetectionContext
        from flakehunter.detection.pipeline import DetectionPipeline
        from flakehunter.errors import ConfigError
        from flakehunter.registry import get_registry

        registry = get_registry()
        try:
            material = registry.material(self.config.material.name)
        except InputError as exc:
            raise ConfigError(self.config_path, "material.name", str(exc)) from None
        context = DetectionContext(
            material=material, oxide_nm=self.config.material.oxide_nm, pixel_size_um=self.config.pixel_size_um,
            device=self.config.device, run_dir=self.out,
        )
        return DetectionPipeline.from_sections(self.config.detectors, registry, context, self.config_path)

    def _check_config_record(self) -> None:
        """Refuse to mix candidates of different detection settings in one output folder."""
        record = {
            "material": self.config.material.model_dump(mode="json"),
            "pixel_size_um": self.config.pixel_size_um,
            "detectors": [d.model_dump(mode="json") for d in self.config.detectors],
        }
        path = self.out / CONFIG_RECORD
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
        write_json_atomic(path, {**record, "watch_dir": str(self.watch_dir), "recursive": self.recursive})

    def _loop(self) -> None:
        self._start_observer()
        self.sweep()  # after the observer starts, so that nothing written meanwhile is missed
        self._drop_vanished()
        self._status_line()
        next_status = time.monotonic() + self.options.status_interval_s
        next_rescan = time.monotonic() + self.options.rescan_s
        while not self.stop_event.is_set():
            self._drain_inbox()
            self._process_due()
            now = time.monotonic()
            if self._observer is not None and not self._observer.is_alive():
                log.error("watch: the %s observer stopped; restarting it and rescanning", self._observer_kind,
                          extra={"event": "observer_restart"})
                self._stop_observer()
                self._start_observer()
                self.sweep()
            if now >= next_rescan:
                self.sweep()
                next_rescan = now + self.options.rescan_s
            if now >= next_status:
                self._status_line()
                next_status = now + self.options.status_interval_s
            self._wait(min(next_status, next_rescan))
        self._flush_new_rows()
        self._status_line()

    def _wait(self, until: float) -> None:
        """Sleep until the next due file, the next periodic task, or an event."""
        if self.stop_event.is_set():
            return
        due = self._heap[0][0] if self._heap else until
        timeout = max(0.0, min(due, until) - time.monotonic())
        if timeout <= 0:
            return
        try:
            item = self._inbox.get(timeout=min(timeout, 1.0))
        except queue.Empty:
            return
        self._on_event(*item)

    # -- observer -----------------------------------------------------------------------------
    def _start_observer(self) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        observer: Any
        try:
            if self.polling:
                observer, kind = PollingObserver(timeout=self.options.poll_interval_s), "polling"
            else:
                observer, kind = Observer(), "native"
            observer.schedule(self._handler, str(self.watch_dir), recursive=self.recursive)
            observer.start()
        except OSError as exc:  # e.g. the inotify instance or watch limit; polling still works
            if self.polling:
                raise RuntimeFailure(f"{self.watch_dir}: cannot watch the folder: {exc}") from exc
            log.warning("watch: OS events unavailable (%s); polling every %g s instead", exc,
                        self.options.poll_interval_s, extra={"event": "observer_fallback"})
            observer, kind = PollingObserver(timeout=self.options.poll_interval_s), "polling"
            observer.schedule(self._handler, str(self.watch_dir), recursive=self.recursive)
            observer.start()
        self._observer, self._observer_kind = observer, kind

    def _stop_observer(self) -> None:
        if self._observer is None:
            return
        with contextlib.suppress(Exception):
            self._observer.stop()
            self._observer.join(timeout=10)
        self._observer = None

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
            if key in self._pending:
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
            if item.key not in self._pending and (not path.exists() or not self.accepts(path)):
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
        pf = self._pending.get(key)
        if pf is not None:
            if kind == "closed":
                pf.closed = True
                self._schedule(pf, time.monotonic())
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
            self._new_rows[key] = {"first_seen": _now_iso()}
        elif item.status in (PENDING, FAILED):
            pf.attempts = int(item.data.get("attempts", 0))  # a restart continues the backoff
        self._pending[key] = pf
        self._schedule(pf, pf.due)

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
        self._pending.pop(key, None)
        self._new_rows.pop(key, None)
        item = self.journal.get(key)
        if item is not None and item.status in (PENDING, FAILED):
            self.journal.delete(key)

    def _schedule(self, pf: PendingFile, due: float) -> None:
        pf.due = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, pf.key))

    # -- checking and analysing ----------------------------------------------------------------
    def _process_due(self, budget_s: float = 1.0) -> None:
        """Check the files whose time has come, in arrival order, for about ``budget_s``.

        Events are drained between files; the budget returns control to the loop's periodic tasks
        (status line, rescan, observer health) while a backlog is worked off.
        """
        end = time.monotonic() + budget_s
        while self._heap and not self.stop_event.is_set() and time.monotonic() < end:
            due, _, key = self._heap[0]
            if due > time.monotonic():
                return
            heapq.heappop(self._heap)
            pf = self._pending.get(key)
            if pf is None or pf.due != due:
                continue  # finished, forgotten or rescheduled since
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
                self._schedule(pf, now + self.options.settle_s)
                return
        elif not pf.closed and now - pf.stable_since < self.options.settle_s:
            self._schedule(pf, pf.stable_since + self.options.settle_s)
            return
        pf.closed = False
        self._settled(pf, st)

    def _settled(self, pf: PendingFile, st: FileStat) -> None:
        item = self.journal.get(pf.key)
        if item is not None and item.status in (DONE, QUARANTINED) and st.matches(item.data):
            self._finish(pf)
            return
        try:
            sha = sha256_file(pf.path)
        except FileNotFoundError:
            self._forget(pf.key)
            return
        except OSError as exc:
            self._retry(pf, f"cannot read: {exc}")
            return
        if self._changed_since(pf, st):  # written to while we hashed it: still in progress
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
            self._finish(pf)
            return
        self._analyse(pf, st, sha)

    def _done_file_changed(self, pf: PendingFile, st: FileStat, sha: str, data: dict[str, Any]) -> None:
        if sha == data.get("sha256"):  # touched or copied over with the same bytes: nothing new
            self.journal.set(pf.key, DONE, size=st.size, mtime_ns=st.mtime_ns)
            self._finish(pf)
            return
        # New content under a name already analysed: report it once, keep the first analysis.
        key = f"{pf.key}#changed-{sha[:12]}"
        if self.journal.get(key) is None:
            reason = (
                f"content changed after it was analysed (sha256 {str(data.get('sha256'))[:12]}... -> {sha[:12]}...); "
                "the first analysis stands; save new images under new names"
            )
            self._quarantine(pf, reason, key=key, stat=st, sha=sha)
        self._finish(pf)

    def _analyse(self, pf: PendingFile, st: FileStat, sha: str) -> None:
        # Size, mtime and hash go in first; FileAnalyzer's 'done' merges into this row.
        self.journal.set(pf.key, PENDING, size=st.size, mtime_ns=st.mtime_ns, sha256=sha, attempts=pf.attempts,
                         error=None)
        try:
            result = self.analyzer.analyse(pf.path)
        except InputError as exc:
            self._retry(pf, str(exc).removeprefix(f"{pf.path}: ").removeprefix(f"{pf.key}: "))
            return
        except (OSError, sqlite3.Error) as exc:
            # The output, not the file, failed (disk full, ...). Stop: the next start recovers the
            # candidate files from the journal, where a retry now could append a file twice.
            raise RuntimeFailure(f"{self.out}: cannot write results ({type(exc).__name__}: {exc})") from exc
        except Exception as exc:  # a detector that cannot cope with this image
            log.exception("watch: analysing %s failed", pf.path, extra={"event": "analysis_error", "file": pf.key})
            self._retry(pf, f"analysis failed: {type(exc).__name__}: {exc}")
            return
        if self._changed_since(pf, st):
            # Written to between our hash and the detector's read: what was analysed is not what was
            # hashed. Take the analysis back (as a restart would) and look again once it settles.
            self._retract(pf)
            return
        self.counts.analysed += 1
        self.counts.candidates += len(result.candidates)
        log.info("watch: %s: %d candidate(s) in %.2f s%s", pf.path.name, len(result.candidates), result.seconds,
                 "".join(f"; {w}" for w in result.warnings),
                 extra={"event": "file_done", "file": pf.key, "candidates": len(result.candidates),
                        "seconds": round(result.seconds, 4), "sha256": sha, "warnings": result.warnings})
        self._note_calibration()
        self._finish(pf)

    def _note_calibration(self) -> None:
        """Detectors calibrate themselves on the first images that arrive: say so once they have."""
        report = self.analyzer.pipeline.calibration_report()
        if report == self._calibration:
            return
        self._calibration = report
        for entry in report:
            log.info("watch: %s detector: %s, oxide %.1f nm%s", entry["detector"], entry["method"],
                     entry["oxide_nm"], f" ({entry['note']})" if entry.get("note") else "",
                     extra={"event": "calibrated", **entry})
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
        self._schedule(pf, time.monotonic() + self.options.settle_s)
        return True

    def _retract(self, pf: PendingFile) -> None:
        """Undo a finished analysis: the journal row goes back to pending and the candidate files are
        rewritten without the file's records, exactly what a restart after a crash would do."""
        self.journal.set(pf.key, PENDING, sha256=None, size=None, mtime_ns=None, candidates=None,
                         error="changed while it was analysed")
        self.sink.close()
        self.sink = RecentCandidateSink(self.out, done_images=self.journal.keys(DONE))
        self.analyzer.sink = self.sink
        self.counts.retracted += 1
        log.warning("watch: %s changed while it was analysed; analysing it again once it settles", pf.path,
                    extra={"event": "file_retracted", "file": pf.key})

    def _retry(self, pf: PendingFile, reason: str) -> None:
        pf.attempts += 1
        pf.last_error = reason
        if pf.attempts >= self.options.max_attempts:
            self._quarantine(pf, reason)
            self._finish(pf)
            return
        delay = min(self.options.retry_initial_s * 2 ** (pf.attempts - 1), self.options.retry_max_s)
        self.counts.retries += 1
        self.journal.set(pf.key, PENDING, attempts=pf.attempts, error=reason)
        log.info("watch: %s not ready (attempt %d of %d, again in %.1f s): %s", pf.path.name, pf.attempts,
                 self.options.max_attempts, delay, reason,
                 extra={"event": "file_retry", "file": pf.key, "attempt": pf.attempts})
        self._schedule(pf, time.monotonic() + delay)

    def _finish(self, pf: PendingFile) -> None:
        self._pending.pop(pf.key, None)

    # -- quarantine -----------------------------------------------------------------------------
    def _quarantine(
        self, pf: PendingFile, reason: str, *, key: str | None = None, stat: FileStat | None = None,
        sha: str | None = None,
    ) -> None:
        """Journal first, then the line in quarantine.jsonl; a start re-adds a line a crash lost."""
        key = key or pf.key
        st = stat or pf.stat
        data = {
            "file": str(pf.path), "reason": reason, "attempts": pf.attempts, "quarantined_at": _now_iso(),
            "size": st.size if st else None, "mtime_ns": st.mtime_ns if st else None,
        }
        if sha:
            data["sha256"] = sha
        self.journal.set(key, QUARANTINED, **data)
        self._append_quarantine_line({"key": key, **data})
        self.counts.quarantined += 1
        log.warning("watch: quarantined %s: %s", pf.path, reason,
                    extra={"event": "file_quarantined", "file": key, "reason": reason})

    def _append_quarantine_line(self, record: dict[str, Any]) -> None:
        path = self.out / QUARANTINE_FILE
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _reconcile_quarantine(self) -> None:
        """Cut a torn last line (kill -9 mid-write) and re-add lines the journal has but the file lacks."""
        path = self.out / QUARANTINE_FILE
        listed: set[tuple[str, Any, Any]] = set()
        if path.exists():
            with open(path, "rb+") as fh:
                data = fh.read()
                end = data.rfind(b"\n") + 1
                if end != len(data):
                    fh.truncate(end)
                    fh.flush()
                    os.fsync(fh.fileno())
                    log.warning("watch: dropped a torn last line of %s", path, extra={"event": "quarantine_repair"})
            for line in data[:end].splitlines():
                with contextlib.suppress(json.JSONDecodeError, AttributeError):
                    r = json.loads(line)
                    listed.add((r.get("key"), r.get("size"), r.get("mtime_ns")))
        for item in self.journal.items(QUARANTINED):
            if (item.key, item.data.get("size"), item.data.get("mtime_ns")) not in listed:
                self._append_quarantine_line({"key": item.key, **item.data})
        fsync_dir(self.out)

    # -- reporting ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        counts = journal_counts(self.journal)
        elapsed = time.monotonic() - self.counts.started
        return {
            **counts,
            "in_flight": len(self._pending),
            "analysed_this_run": self.counts.analysed,
            "quarantined_this_run": self.counts.quarantined,
            "retracted_this_run": self.counts.retracted,
            "candidates": self.sink.count,
            "files_per_s": round(self.counts.analysed / elapsed, 3) if elapsed > 0 else 0.0,
            "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }

    def _status_line(self) -> None:
        s = self.summary()
        log.info(
            "watch: %d processed, %d quarantined, %d pending; this run %d analysed (%.2f files/s); "
            "%d candidates; RSS %.0f MiB",
            s["processed"], s["quarantined"], s["pending"], s["analysed_this_run"], s["files_per_s"],
            s["candidates"], s["rss_mb"], extra={"event": "status", **s},
        )
        self._write_status("running", s)

    def _write_status(self, state: str, summary: dict[str, Any] | None = None) -> None:
        with contextlib.suppress(OSError):
            write_json_atomic(self.out / STATUS_FILE, {
                "state": state, "pid": os.getpid(), "host": platform.node(), "updated": _now_iso(),
                "watch_dir": str(self.watch_dir), "observer": self._observer_kind,
                **(summary or self.summary()),
            })

    def _write_manifest(self, state: str, *, with_files: bool = False) -> None:
        import tifffile

        manifest: dict[str, Any] = {
            "flakehunter_version": __version__,
            "command": "watch",
            "status": state,
            "updated": _now_iso(),
            "watch_dir": str(self.watch_dir),
            "recursive": self.recursive,
            "observer": "polling" if self.polling else "native",
            "config_file": str(self.config_path) if self.config_path else None,
            "config": self.config.model_dump(mode="json"),
            "versions": {"python": platform.python_version(), "tifffile": tifffile.__version__},
            # What the detectors use now: nominal until they have calibrated on the first images.
            "calibration": {"nominal_oxide_nm": self.config.material.oxide_nm, "detectors": self._calibration},
            "summary": self.summary(),
        }
        if not with_files:
            write_json_atomic(self.out / "manifest.json", manifest)
            return
        # Per-file status streamed from the journal: a night's worth of files never sits in memory.
        head = json.dumps(manifest, indent=2, default=str)
        with atomic_write(self.out / "manifest.json") as fh:
            fh.write(head[: head.rindex("}")].rstrip() + ',\n  "files": [')
            for n, item in enumerate(self.journal.iter_items()):
                entry = {"file": item.key, "status": item.status, **item.data}
                fh.write(("," if n else "") + "\n    " + json.dumps(entry, default=str))
            fh.write("\n  ]\n}\n")


def file_key(path: Path) -> str:
    """The journal key of an image: its absolute, resolved path (as `FileAnalyzer` keys it)."""
    from flakehunter.detect import FileAnalyzer

    return FileAnalyzer.key(path)


def journal_counts(journal: Journal) -> dict[str, int]:
    """processed / quarantined / pending counts of a watch journal."""
    raw = journal.counts()
    return {
        "processed": raw.get(DONE, 0),
        "quarantined": raw.get(QUARANTINED, 0),
        # FAILED rows exist only for an instant (FileAnalyzer's mark before the watcher decides).
        "pending": raw.get(PENDING, 0) + raw.get(FAILED, 0),
    }


def read_status(out: str | Path) -> dict[str, Any]:
    """What ``flakehunter status OUT`` prints: journal counts, liveness and the last status line.

    Works for a watch output folder and, with the same keys, for a scan or detect run directory.
    """
    from flakehunter.journal import ACQUIRED, PLANNED

    out = Path(out)
    db = out / "journal.sqlite"
    if not db.is_file():
        raise InputError(f"{out}: no journal.sqlite here; not a watch output folder or run directory")
    with Journal(db) as journal:
        raw = journal.counts()
    is_watch = (out / CONFIG_RECORD).exists()
    if is_watch:
        counts: dict[str, Any] = {
            "processed": raw.get(DONE, 0), "quarantined": raw.get(QUARANTINED, 0),
            "pending": raw.get(PENDING, 0) + raw.get(FAILED, 0), "failed": 0,
        }
    else:
        counts = {
            "processed": raw.get(DONE, 0), "quarantined": raw.get(QUARANTINED, 0),
            "pending": raw.get(PLANNED, 0) + raw.get(ACQUIRED, 0) + raw.get(PENDING, 0), "failed": raw.get(FAILED, 0),
        }
    last: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        last = json.loads((out / STATUS_FILE).read_text(encoding="utf-8"))
    running = is_locked(out, LOCK_NAME)
    result: dict[str, Any] = {
        "out": str(out),
        "kind": "watch" if is_watch else "run",
        **counts,
        "running": running,
        "pid": lock_holder(out, LOCK_NAME) if running else None,
        "candidates": _count_lines(out / "candidates.jsonl"),
        "quarantine_file": str(out / QUARANTINE_FILE) if (out / QUARANTINE_FILE).exists() else None,
    }
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
