"""A folder of scan jobs: wafer.yaml files dropped into ``QUEUE/`` run one at a time, in arrival order.

Layout of a queue folder::

    QUEUE/chipA.yaml            a job waiting or running (it stays where the user put it until it ends,
                                so relative paths inside it keep their meaning)
    QUEUE/running/ID/           the job in progress: run/ (the scan's run directory) and scan.log
    QUEUE/done/ID/              finished: job.yaml, job.json, manifest.json (the run's), run/, scan.log
    QUEUE/failed/ID/            the same for a job that failed, with the reason in job.json
    QUEUE/cancelled/ID/         cancelled before or while running
    QUEUE/queue.sqlite          the queue's journal: every job, its order, state and result
    QUEUE/logs/daemon.log       the daemon's structured log

``ID`` is ``NNNN-name``: the arrival number and the file's name. A file is taken into the queue
once its size and mtime have settled (``flakehunter queue add`` writes atomically, so there is no
wait) and once it validates as a scan config; a file that does not is moved to ``failed/`` at once
with the one-line reason. State changes are committed to the journal first and the folders follow,
so a crash between the two is completed on the next start (`JobQueue.recover`).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flakehunter.atomic import fsync_dir, is_temp_name, write_json_atomic, write_text_atomic
from flakehunter.errors import InputError
from flakehunter.journal import DONE, FAILED, Journal
from flakehunter.locks import DirectoryLock, is_locked, lock_holder
from flakehunter.run.layout import RunDirectory

QUEUED, RUNNING, CANCELLED = "queued", "running", "cancelled"
FINAL_STATES = (DONE, FAILED, CANCELLED)
JOB_SUFFIXES = (".yaml", ".yml")
QUEUE_DB = "queue.sqlite"
LOCK_NAME = ".daemon.lock"
CONTROL_DIR = ".control"
SUBFOLDERS = ("running", DONE, FAILED, CANCELLED)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Job:
    """One scan job as the journal knows it."""

    id: str
    status: str
    data: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.data["seq"])

    @property
    def file(self) -> str:
        """The job file's name in the queue folder."""
        return str(self.data["file"])


def is_queue_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / QUEUE_DB).exists() or (folder / LOCK_NAME).exists()


def _safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:60] or "job"


class JobQueue:
    """The queue folder and its journal. Only the daemon (or a CLI holding the daemon's lock) moves jobs.

    Args:
        folder: the queue folder (created if missing).
        settle_s: how long a dropped file's size and mtime must stay unchanged before it is taken.
    """

    def __init__(self, folder: str | Path, *, settle_s: float = 1.0) -> None:
        self.folder = Path(folder).resolve()
        self.settle_s = settle_s
        for name in SUBFOLDERS:
            (self.folder / name).mkdir(parents=True, exist_ok=True)
        (self.folder / CONTROL_DIR).mkdir(exist_ok=True)
        self.journal = Journal(self.folder / QUEUE_DB)
        self._unsettled: dict[str, tuple[tuple[int, int], float]] = {}

    def close(self) -> None:
        self.journal.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths ----------------------------------------------------------------------------------
    def job_file(self, job: Job) -> Path:
        return self.folder / job.file

    def work_dir(self, job: Job) -> Path:
        return self.folder / "running" / job.id

    def run_dir(self, job: Job) -> Path:
        return self.work_dir(job) / "run"

    def final_dir(self, job: Job) -> Path:
        return self.folder / job.status / job.id

    # -- reading --------------------------------------------------------------------------------
    def jobs(self, status: str | None = None) -> list[Job]:
        jobs = [Job(i.key, i.status, i.data) for i in self.journal.items(status)]
        return sorted(jobs, key=lambda j: j.seq)

    def get(self, job_id: str) -> Job | None:
        item = self.journal.get(job_id)
        return Job(item.key, item.status, item.data) if item else None

    def find(self, ref: str) -> Job:
        """A job by id (``0003-chipA``), arrival number (``3``), file name (``chipA.yaml``) or stem.

        Among several jobs of one name, an active (queued or running) one wins, then the newest.
        """
        jobs = self.jobs()
        matches = [
            j for j in jobs
            if ref in (j.id, j.file, Path(j.file).stem) or (ref.isdigit() and int(ref) == j.seq)
        ]
        if not matches:
            raise InputError(f"{self.folder}: no job {ref!r} in the queue (see flakehunter queue list)")
        active = [j for j in matches if j.status in (QUEUED, RUNNING)]
        return (active or matches)[-1]

    def next_queued(self) -> Job | None:
        queued = self.jobs(QUEUED)
        return queued[0] if queued else None

    def waiting_files(self) -> list[Path]:
        """Job files in the folder the journal does not know yet (dropped, not yet taken)."""
        active = {j.file for j in self.jobs() if not j.data.get("finalized")}
        return [p for p in self._root_files() if p.name not in active]

    def _root_files(self) -> list[Path]:
        files = []
        with os.scandir(self.folder) as it:
            for entry in it:
                name = entry.name
                if (
                    entry.is_file()
                    and os.path.splitext(name)[1].lower() in JOB_SUFFIXES
                    and not name.startswith(".")
                    and not is_temp_name(name)
                ):
                    files.append(Path(entry.path))
        return files

    # -- taking new jobs ----------------------------------------------------------------------------
    def discover(self) -> list[Job]:
        """Take settled new files into the queue in arrival order (mtime, then name). Returns them."""
        from flakehunter.config import load_config

        now = time.monotonic()
        ready: list[tuple[int, str, Path]] = []
        for path in self.waiting_files():
            try:
                st = path.stat()
            except OSError:
                continue
            stat = (st.st_size, st.st_mtime_ns)
            seen = self._unsettled.get(path.name)
            if seen is None or seen[0] != stat:
                self._unsettled[path.name] = (stat, now)
                if time.time() - st.st_mtime_ns / 1e9 < self.settle_s:
                    continue  # just written; look again once it has settled
            elif now - seen[1] < self.settle_s:
                continue
            ready.append((st.st_mtime_ns, path.name, path))
        taken = []
        for _, _, path in sorted(ready):
            self._unsettled.pop(path.name, None)
            try:
                config = load_config(path)
            except InputError as exc:
                job = self._register(path, FAILED, error=str(exc), exit_code=2)
                self.finalize(job)
            else:
                job = self._register(path, QUEUED, name=config.name)
            taken.append(job)
        return taken

    def _register(self, path: Path, status: str, **data: Any) -> Job:
        with self.journal.transaction():
            seq = int((self.journal.get_state("queue") or {}).get("next_seq", 1))
            job_id = f"{seq:04d}-{_safe_name(path.stem)}"
            self.journal.set(job_id, status, seq=seq, file=path.name, submitted=now_iso(), starts=0, **data)
            self.journal.put_state("queue", {"next_seq": seq + 1})
        return self.get(job_id)  # type: ignore[return-value]

    # -- state changes --------------------------------------------------------------------------------
    def mark_running(self, job: Job, **data: Any) -> Job:
        self.journal.set(job.id, RUNNING, **data)
        return self.get(job.id)  # type: ignore[return-value]

    def finish(self, job: Job, status: str, **data: Any) -> Job:
        """Record the outcome (journal first), then move the job's files into ``status/ID``."""
        if status not in FINAL_STATES:
            raise ValueError(f"not a final state: {status}")
        self.journal.set(job.id, status, finished=now_iso(), **data)
        job = self.get(job.id)  # type: ignore[assignment]
        self.finalize(job)
        return job

    def finalize(self, job: Job) -> None:
        """Move a finished job's file, record and run into ``done/``, ``failed/`` or ``cancelled/``.

        Idempotent: every step checks what is already there, so a crash part-way is finished later.
        """
        work, final = self.work_dir(job), self.final_dir(job)
        if not final.exists():
            work.mkdir(parents=True, exist_ok=True)
            source = self.job_file(job)
            if source.exists() and not (work / "job.yaml").exists():
                os.replace(source, work / "job.yaml")
            run_manifest = RunDirectory(work / "run").manifest
            if run_manifest.exists():
                write_text_atomic(work / run_manifest.name, run_manifest.read_text(encoding="utf-8"))
            record = {"id": job.id, "status": job.status, **job.data, "folder": str(final)}
            if (work / "run").exists():
                record["run_dir"] = str(final / "run")
            if (work / "scan.log").exists():
                record["scan_log"] = str(final / "scan.log")
            write_json_atomic(work / "job.json", record)
            fsync_dir(work)
            os.replace(work, final)
            fsync_dir(final.parent)
            fsync_dir(work.parent)
        elif self.job_file(job).exists() and not (final / "job.yaml").exists():
            os.replace(self.job_file(job), final / "job.yaml")
        fsync_dir(self.folder)
        if not job.data.get("finalized"):
            self.journal.set(job.id, job.status, finalized=True)

    def recover(self) -> list[Job]:
        """After a (re)start: finish interrupted moves and return the jobs that were running."""
        for job in self.jobs():
            if job.status in FINAL_STATES and not job.data.get("finalized"):
                self.finalize(job)
        return self.jobs(RUNNING)

    def drop_vanished(self) -> list[Job]:
        """Queued jobs whose file the user removed from the folder are cancelled."""
        gone = []
        for job in self.jobs(QUEUED):
            if not self.job_file(job).exists():
                gone.append(self.finish(job, CANCELLED, reason="the job file was removed from the queue folder"))
        return gone

    # -- cancel requests -----------------------------------------------------------------------------
    def request_cancel(self, job: Job) -> Path:
        """Ask the running daemon to cancel ``job`` (a marker file it picks up within a second)."""
        marker = self.folder / CONTROL_DIR / f"cancel-{job.id}"
        write_text_atomic(marker, now_iso() + "\n")
        return marker

    def take_cancel_requests(self) -> list[str]:
        """Job ids with a pending cancel request; the markers are removed."""
        ids = []
        control = self.folder / CONTROL_DIR
        for marker in sorted(control.glob("cancel-*")):
            if is_temp_name(marker):
                continue
            ids.append(marker.name[len("cancel-"):])
            with contextlib.suppress(OSError):
                marker.unlink()
        return ids


def add_job(folder: str | Path, source: str | Path, name: str | None = None) -> Path:
    """Validate ``source`` as a scan config and copy it atomically into the queue folder.

    The copy gets a fresh mtime, so arrival order is the order of ``add``; a name already waiting in
    the folder gets a ``-2``, ``-3``, ... suffix instead of replacing it. Returns the new path.
    """
    from flakehunter.config import load_config

    source = Path(source)
    load_config(source)  # one-line error, exit 2, before anything is queued
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _safe_name(Path(name).stem if name else source.stem)
    target = folder / f"{stem}.yaml"
    n = 2
    while target.exists():
        target = folder / f"{stem}-{n}.yaml"
        n += 1
    write_text_atomic(target, source.read_text(encoding="utf-8"))
    return target


def queue_status(folder: str | Path) -> dict[str, Any]:
    """Counts per state, whether a daemon holds the queue, and the job in progress."""
    folder = Path(folder)
    running = is_locked(folder, LOCK_NAME)
    counts = {QUEUED: 0, RUNNING: 0, DONE: 0, FAILED: 0, CANCELLED: 0}
    current = None
    waiting = 0
    if (folder / QUEUE_DB).exists():
        with Journal(folder / QUEUE_DB) as journal:
            for status, n in journal.counts().items():
                counts[status] = counts.get(status, 0) + n
            active = journal.items(RUNNING)
            known = {i.data.get("file") for i in journal.items() if not i.data.get("finalized")}
        if active:
            current = {"id": active[0].key, **{k: active[0].data.get(k) for k in ("file", "started", "starts")}}
    else:
        known = set()
    with contextlib.suppress(OSError):
        waiting = sum(
            1 for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in JOB_SUFFIXES and not p.name.startswith(".") and p.name not in known
        )
    return {
        "out": str(folder),
        "kind": "queue",
        "running": running,
        "pid": lock_holder(folder, LOCK_NAME) if running else None,
        "queued": counts[QUEUED] + waiting,
        "running_jobs": counts[RUNNING],
        "done": counts[DONE],
        "failed": counts[FAILED],
        "cancelled": counts[CANCELLED],
        # the generic names `flakehunter status --json` promises
        "processed": counts[DONE],
        "quarantined": counts[FAILED],
        "pending": counts[QUEUED] + counts[RUNNING] + waiting,
        "current": current,
    }


def cancel_job(folder: str | Path, ref: str, *, wait_s: float = 15.0) -> tuple[Job, str]:
    """Cancel a queued or running job. Returns the job and what happened, in words.

    With a daemon running, a request is left for it and awaited up to ``wait_s`` (a running scan
    stops at the next tile boundary). Without one, the queue is changed directly under the daemon's
    lock, so a daemon starting meanwhile waits.
    """
    folder = Path(folder).resolve()
    if not is_queue_folder(folder) and not folder.is_dir():
        raise InputError(f"{folder}: not a job queue folder")
    lock = DirectoryLock(folder, LOCK_NAME, "daemon")
    if is_locked(folder, LOCK_NAME):
        with JobQueue(folder, settle_s=0) as queue:
            job = queue.find(ref)
            if job.status not in (QUEUED, RUNNING):
                raise InputError(f"{job.id}: already {job.status}; nothing to cancel")
            queue.request_cancel(job)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                now = queue.get(job.id)
                if now is not None and now.status == CANCELLED:
                    return now, f"cancelled; its files are in {queue.final_dir(now)}"
                time.sleep(0.2)
        return job, "cancel requested; the daemon stops it at the next tile boundary"
    with lock, JobQueue(folder, settle_s=0) as queue:
        queue.discover()
        job = queue.find(ref)
        if job.status not in (QUEUED, RUNNING):
            raise InputError(f"{job.id}: already {job.status}; nothing to cancel")
        job = queue.finish(job, CANCELLED, reason="cancelled with flakehunter queue cancel")
        return job, f"cancelled; its files are in {queue.final_dir(job)}"


def job_summary(job: Job) -> dict[str, Any]:
    """What ``queue list`` shows of a job."""
    keys = ("file", "name", "submitted", "started", "finished", "starts", "exit_code", "error", "reason")
    return {"id": job.id, "status": job.status, **{k: job.data.get(k) for k in keys if job.data.get(k) is not None}}


def list_jobs(folder: str | Path) -> list[dict[str, Any]]:
    """Every job of the queue (journal order), then files waiting to be taken."""
    folder = Path(folder)
    if not folder.is_dir():  # a mistyped --queue must not read as an empty queue
        raise InputError(f"{folder}: no such job queue folder")
    out: list[dict[str, Any]] = []
    known: set[str] = set()
    if (folder / QUEUE_DB).exists():
        with Journal(folder / QUEUE_DB) as journal:
            jobs = sorted((Job(i.key, i.status, i.data) for i in journal.items()), key=lambda j: j.seq)
        out = [job_summary(j) for j in jobs]
        known = {j.file for j in jobs if not j.data.get("finalized")}
    if folder.is_dir():
        waiting = sorted(
            (p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in JOB_SUFFIXES and not p.name.startswith(".")
             and not is_temp_name(p) and p.name not in known),
            key=lambda p: (p.stat().st_mtime_ns, p.name),
        )
        out += [{"id": None, "status": "waiting", "file": p.name} for p in waiting]
    return out
