"""The run directory: every file name in one place, and one process at a time.

What ``scan``, ``detect`` and ``watch`` write under ``--out`` (docs/run-directory.md)::

    manifest.json        what ran, with what, how it went (one schema, `flakehunter.run.manifest`)
    candidates.csv/.jsonl  the candidates, appended durably (`flakehunter.run.candidate_writer`)
    journal.sqlite       durable state: which tiles/files are done, detector state (`flakehunter.journal`)
    config.yaml          scan: the config as given, for --resume
    tiles/               scan: the tile TIFFs
    truth.json           simulator scans: the chip's ground truth
    quarantine.jsonl     watch: files that could not be analysed, with the reason
    status.json          watch: the last status line
    watch-config.json    watch: the detection settings the folder was started with
    overlays/            detect --overlays: images with their candidates drawn
    evaluation/          flakehunter evaluate: metrics and plots against truth or annotations
    report/              flakehunter report: overview mosaic, index.html, candidate crops (`flakehunter.report`)
    review.jsonl         flakehunter review: a person's verdicts on candidates, appended, latest wins
    exports/             flakehunter export: position lists and outlines for other software
    .flakehunter.lock    held (flock) by the one process using the directory

A process owns the directory through an exclusive ``flock`` taken before anything else is written and
released by the kernel when the process dies, ``kill -9`` included, so a second ``scan``,
``scan --resume``, ``detect`` or ``watch`` on it is refused with exit 2 naming the holder's pid, and a
crash never leaves it stuck.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from flakehunter.errors import InputError, RuntimeFailure
from flakehunter.locks import DirectoryLock, is_locked, lock_holder

MANIFEST = "manifest.json"
CANDIDATES_CSV = "candidates.csv"
CANDIDATES_JSONL = "candidates.jsonl"
JOURNAL = "journal.sqlite"
CONFIG_COPY = "config.yaml"
TILES = "tiles"
TRUTH = "truth.json"
QUARANTINE = "quarantine.jsonl"
STATUS = "status.json"
WATCH_CONFIG = "watch-config.json"
OVERLAYS = "overlays"
EVALUATION = "evaluation"
REPORT = "report"
REVIEW = "review.jsonl"
EXPORTS = "exports"
LOCK = ".flakehunter.lock"
RESERVE = ".flakehunter.reserve"

#: Space kept aside while a run is active, released when the disk fills so that the final manifest
#: (and the error that stopped the run) can still be written.
RESERVE_BYTES = 1 << 20

#: Kinds of run a directory can hold.
KINDS = ("scan", "detect", "watch")


class RunDirectory:
    """The files of one run directory, and the lock that makes one process its owner."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: DirectoryLock | None = None

    # -- names ----------------------------------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def candidates_csv(self) -> Path:
        return self.path / CANDIDATES_CSV

    @property
    def candidates_jsonl(self) -> Path:
        return self.path / CANDIDATES_JSONL

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    @property
    def config_copy(self) -> Path:
        return self.path / CONFIG_COPY

    @property
    def tiles(self) -> Path:
        return self.path / TILES

    @property
    def truth(self) -> Path:
        return self.path / TRUTH

    @property
    def quarantine(self) -> Path:
        return self.path / QUARANTINE

    @property
    def status(self) -> Path:
        return self.path / STATUS

    @property
    def watch_config(self) -> Path:
        return self.path / WATCH_CONFIG

    @property
    def overlays(self) -> Path:
        return self.path / OVERLAYS

    @property
    def evaluation(self) -> Path:
        return self.path / EVALUATION

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def review(self) -> Path:
        return self.path / REVIEW

    @property
    def exports(self) -> Path:
        return self.path / EXPORTS

    def holds_run(self) -> bool:
        """True when a run has started here: its manifest exists (it is written before the first tile)."""
        return self.manifest.exists()

    def discard_unstarted(self) -> None:
        """Remove what a run that died before it started left (a journal of planned tiles, empty candidate
        files, the config copy), so that the same command can simply be run again. Only without a manifest."""
        if self.holds_run():
            raise InputError(f"{self.path}: holds a run; refusing to discard it")
        for path in (self.journal, self.journal.with_name(JOURNAL + "-wal"), self.journal.with_name(JOURNAL + "-shm"),
                     self.candidates_csv, self.candidates_jsonl, self.config_copy):
            path.unlink(missing_ok=True)

    # -- ownership ------------------------------------------------------------------------------------
    def open(self, what: str) -> RunDirectory:
        """Create the directory if needed and take its lock; `InputError` (exit 2) if another process holds it.

        ``what`` names the command for the refusal message ("scan", "detect", "watch"). Nothing but the
        folder and its lock file is created before the lock is held.
        """
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: --out exists and is not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot create the run directory ({exc.strerror or exc})") from None
        lock = DirectoryLock(self.path, LOCK, f"flakehunter {what}")
        try:
            lock.acquire()
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write to the run directory ({exc.strerror or exc})") from None
        self._lock = lock
        self._remove_abandoned()
        self._reserve()
        return self

    def _remove_abandoned(self) -> None:
        """Delete the temporary files (and report folders) of writes a killed process never finished: with the
        lock held, nothing else is writing here, so every temporary name is abandoned."""
        import shutil

        from flakehunter.atomic import is_temp_name

        for folder in (self.path, self.path / TILES, self.path / OVERLAYS, self.path / EVALUATION, self.path / EXPORTS):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue  # not there (yet)
            for entry in entries:
                if not is_temp_name(entry.name):
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)

    def close(self) -> None:
        """Release the lock (and the space reserve); the kernel does it too if the process dies."""
        with contextlib.suppress(OSError):
            (self.path / RESERVE).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def owned(self) -> bool:
        return self._lock is not None

    def is_active(self) -> bool:
        """True while some process (this one or another) holds the directory's lock."""
        return is_locked(self.path, LOCK)

    def holder_pid(self) -> int | None:
        """The pid of the process holding the lock, if any."""
        return lock_holder(self.path, LOCK) if self.is_active() else None

    # -- space for the last words ---------------------------------------------------------------------
    def _reserve(self) -> None:
        with contextlib.suppress(OSError):
            path = self.path / RESERVE
            if not path.exists() or path.stat().st_size < RESERVE_BYTES:
                with open(path, "wb") as fh:
                    fh.write(b"\0" * RESERVE_BYTES)
                    fh.flush()
                    os.fsync(fh.fileno())

    def release_reserve(self) -> bool:
        """Free the reserved space (the disk is full); True if there was any to free."""
        path = self.path / RESERVE
        try:
            path.unlink()
        except OSError:
            return False
        return True


def output_error(path: Path, exc: OSError) -> RuntimeFailure:
    """An I/O error writing a run's output, as a one-line `RuntimeFailure` that names the file."""
    reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    name = exc.filename if isinstance(exc.filename, str) else str(path)
    return RuntimeFailure(f"{name}: cannot write ({reason})")
