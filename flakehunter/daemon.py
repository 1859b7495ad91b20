"""The overnight daemon: a queue of scan jobs and, optionally, a watch folder, in one process.

Each job runs as its own ``python -m flakehunter scan`` process. That is what makes the daemon hard
to kill by its jobs: a hung device (a stage that never reports idle, a camera that never returns a
frame) stops the scan's progress, the daemon's watchdog sees no new tile for ``stall_timeout_s`` and
kills the scan's process group, the job fails, and the next one starts; serial ports and camera
handles are released when that process exits, between every two jobs. The scan process dies with
the daemon (Linux ``PR_SET_PDEATHSIG``), so that after a crash, ``kill -9`` or a power cut the next
daemon resumes the interrupted job with ``scan --resume`` instead of racing an orphan.

The watch folder, when configured, runs in a thread beside the queue (`flakehunter.watch.Watcher`)
and is restarted with backoff if it fails (a share not mounted yet at boot, a full disk). SIGTERM or
Ctrl-C stops both: the running scan finishes its tile and exits, the job stays ``running`` in the
journal and resumes on the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flakehunter.atomic import write_json_atomic
from flakehunter.config import DetectConfig
from flakehunter.errors import InputError
from flakehunter.jobqueue import CANCELLED, LOCK_NAME, QUEUED, RUNNING, Job, JobQueue, now_iso
from flakehunter.journal import DONE, FAILED
from flakehunter.locks import DirectoryLock
from flakehunter.run import layout

log = logging.getLogger(__name__)

#: Runs in the job's process before the scan: die with the daemon, then become ``flakehunter``.
_CHILD_SHIM = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    os._exit(75)  # the daemon died before we were armed
os.execv(sys.executable, [sys.executable, "-m", "flakehunter", *sys.argv[2:]])
"""

#: Files a scan touches as it makes progress (journal commits, new tiles, the manifest).
_PROGRESS_FILES = (layout.JOURNAL, f"{layout.JOURNAL}-wal", layout.TILES, layout.MANIFEST, layout.CANDIDATES_JSONL)

EXIT_INTERRUPTED = 130


@dataclass
class DaemonOptions:
    """How the daemon runs jobs.

    Attributes:
        stall_timeout_s: a job whose scan makes no progress (no tile acquired or analysed) this long
            is killed and failed: the device is taken as hung.
        job_timeout_s: a hard limit on one job's wall time (None: none).
        max_starts: a job interrupted this many times (daemon crashes) is failed instead of resumed.
        poll_s: how often the queue folder and the running job are looked at.
        settle_s: a dropped job file must stay unchanged this long before it is taken.
        shutdown_grace_s: on SIGTERM, how long the running scan may take to finish its tile.
        kill_grace_s: after SIGTERM to a hung scan, how long before SIGKILL.
        device: compute device passed to every scan.
        status_interval_s: period of the daemon's status line.
    """

    stall_timeout_s: float = 600.0
    job_timeout_s: float | None = None
    max_starts: int = 5
    poll_s: float = 1.0
    settle_s: float = 1.0
    shutdown_grace_s: float = 60.0
    kill_grace_s: float = 10.0
    device: str = "auto"
    status_interval_s: float = 60.0


@dataclass
class WatchSpec:
    """The watch folder a daemon runs beside its queue."""

    directory: Path
    out: Path
    config: DetectConfig
    config_path: Path | None = None
    recursive: bool = False
    polling: bool = False


@dataclass
class JobOutcome:
    status: str  # done, failed, cancelled, or running (interrupted by the daemon's own shutdown)
    exit_code: int | None
    error: str | None = None


class JobRunner:
    """Runs one job's scan process and watches it: progress, timeouts, cancel and shutdown."""

    def __init__(
        self, queue: JobQueue, job: Job, options: DaemonOptions, stop: threading.Event,
        cancelled: Callable[[], bool],
    ) -> None:
        self.queue = queue
        self.job = job
        self.options = options
        self.stop = stop
        self.cancelled = cancelled
        self.run_dir = queue.run_dir(job)
        self.log_path = queue.work_dir(job) / "scan.log"

    def command(self) -> tuple[list[str], bool]:
        """The scan's arguments, and whether this is a resume of an interrupted run."""
        run = layout.RunDirectory(self.run_dir)
        resume = run.manifest.exists() and run.config_copy.exists()
        if resume:
            args = ["scan", "--resume", str(self.run_dir)]
        else:
            args = ["scan", str(self.queue.job_file(self.job)), "--out", str(self.run_dir)]
        return [*args, "--no-progress", "--device", self.options.device], resume

    def run(self) -> JobOutcome:
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        args, resume = self.command()
        starts = int(self.job.data.get("starts", 0)) + 1
        started_wall = time.time()
        with open(self.log_path, "ab") as logfh:
            logfh.write(f"--- {now_iso()} flakehunter {' '.join(args)}\n".encode())
            logfh.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_SHIM, str(os.getpid()), *args],
                stdin=subprocess.DEVNULL, stdout=logfh, stderr=subprocess.STDOUT,
                cwd=str(self.queue.folder), env=env, start_new_session=True,
            )
        self.job = self.queue.mark_running(
            self.job, starts=starts, started=self.job.data.get("started") or now_iso(), pid=proc.pid,
            resumed=resume or starts > 1, run_dir=str(self.run_dir),
        )
        log.info("daemon: job %s %s (pid %d)", self.job.id, "resumed" if resume else "started", proc.pid,
                 extra={"event": "job_started", "job": self.job.id, "resume": resume, "pid": proc.pid})
        return self._supervise(proc, started_wall)

    def _supervise(self, proc: subprocess.Popen[bytes], started_wall: float) -> JobOutcome:
        o = self.options
        while True:
            try:
                rc = proc.wait(timeout=o.poll_s)
            except subprocess.TimeoutExpired:
                rc = None
            if rc is not None:
                return self._outcome(rc)
            now = time.time()
            if self.stop.is_set():
                # Daemon shutdown: let the scan finish its tile; the job resumes on the next start.
                self._terminate(proc, o.shutdown_grace_s)
                rc = proc.returncode
                if rc == 0:
                    return JobOutcome(DONE, 0)
                return JobOutcome(RUNNING, rc, "interrupted by the daemon's shutdown")
            if self.cancelled():
                self._terminate(proc, o.kill_grace_s)
                return JobOutcome(CANCELLED, proc.returncode, "cancelled with flakehunter queue cancel")
            idle = now - max(started_wall, self.last_progress())
            if idle > o.stall_timeout_s:
                self._terminate(proc, o.kill_grace_s)
                return JobOutcome(
                    FAILED, proc.returncode,
                    f"no progress for {idle:.0f} s (stall timeout {o.stall_timeout_s:g} s): a device may be "
                    "hung; the scan was killed",
                )
            if o.job_timeout_s is not None and now - started_wall > o.job_timeout_s:
                self._terminate(proc, o.kill_grace_s)
                return JobOutcome(FAILED, proc.returncode, f"ran longer than the job timeout of {o.job_timeout_s:g} s")

    def last_progress(self) -> float:
        """Newest modification time among the files a scan touches as it goes (0 if none yet)."""
        newest = 0.0
        for name in _PROGRESS_FILES:
            with contextlib.suppress(OSError):
                newest = max(newest, (self.run_dir / name).stat().st_mtime)
        return newest

    def _terminate(self, proc: subprocess.Popen[bytes], grace_s: float) -> None:
        """SIGTERM the scan's process group (it stops at a tile boundary), SIGKILL after ``grace_s``."""
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                log.warning("daemon: job %s did not stop within %g s of %s", self.job.id, wait, sig.name,
                            extra={"event": "job_kill", "job": self.job.id})

    def _outcome(self, rc: int) -> JobOutcome:
        if rc == 0:
            return JobOutcome(DONE, 0)
        if rc < 0:
            return JobOutcome(FAILED, rc, f"the scan process died with signal {-rc} ({signal.Signals(-rc).name})")
        return JobOutcome(FAILED, rc, self._last_error() or f"the scan exited with code {rc}")

    def _last_error(self) -> str | None:
        """The scan's one-line 'error: ...' message from its log, if it printed one."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return None
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        return errors[-1] if errors else None


class Daemon:
    """Runs the job queue and/or a watch folder until stopped.

    Args:
        queue_dir: the job queue folder, or None for a watch-only daemon.
        watch: the watch folder to run beside it, or None.
        options: job running options.
    """

    def __init__(self, queue_dir: Path | None, watch: WatchSpec | None, options: DaemonOptions | None = None) -> None:
        if queue_dir is None and watch is None:
            raise InputError("daemon: give --queue DIR, or --watch DIR --out OUT, or both")
        self.queue_dir = Path(queue_dir).resolve() if queue_dir else None
        self.watch = watch
        self.options = options or DaemonOptions()
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._watcher: Any = None
        self._watch_thread: threading.Thread | None = None
        self._cancel_ids: set[str] = set()
        self.jobs_run = 0

    def request_stop(self) -> None:
        """Stop after the scan's tile in hand and the watcher's file in hand (signal-safe)."""
        self.stop.set()
        self._wake.set()
        watcher = self._watcher
        if watcher is not None:
            watcher.request_stop()

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Blocks until stopped; returns counts. Must run on the main thread of its process when it has
        a queue: the scan processes die with the thread that started them (PR_SET_PDEATHSIG)."""
        if self.watch is not None:
            self._watch_thread = threading.Thread(target=self._watch_forever, name="flakehunter-watch", daemon=True)
            self._watch_thread.start()
        try:
            if self.queue_dir is not None:
                self._queue_forever()
            else:
                while not self.stop.is_set():
                    self._wake.wait(1.0)
        finally:
            self.request_stop()
            if self._watch_thread is not None:
                self._watch_thread.join()
        return {"jobs_run": self.jobs_run}

    def _queue_forever(self) -> None:
        assert self.queue_dir is not None
        lock = DirectoryLock(self.queue_dir, LOCK_NAME, "daemon")
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        try:
            with JobQueue(self.queue_dir, settle_s=self.options.settle_s) as queue:
                for job in queue.recover():
                    log.info("daemon: job %s was interrupted; resuming it", job.id,
                             extra={"event": "job_interrupted", "job": job.id})
                next_status = 0.0
                while not self.stop.is_set():
                    self._tick(queue)
                    if time.monotonic() >= next_status:
                        self._status_line(queue)
                        next_status = time.monotonic() + self.options.status_interval_s
                    next_job = self._next_job(queue)
                    if next_job is not None:
                        self._run_job(queue, next_job)
                        continue
                    self._wake.wait(self.options.poll_s)
                    self._wake.clear()
                self._status_line(queue)
        finally:
            lock.release()

    def _tick(self, queue: JobQueue) -> None:
        """Take new files, honour cancel requests for queued jobs, notice removed files."""
        for job in queue.discover():
            if job.status == QUEUED:
                log.info("daemon: queued %s (%s)", job.id, job.file, extra={"event": "job_queued", "job": job.id})
            else:
                log.warning("daemon: %s rejected: %s", job.file, job.data.get("error"),
                            extra={"event": "job_rejected", "job": job.id, "error": job.data.get("error")})
        self._cancel_ids.update(queue.take_cancel_requests())
        for job_id in list(self._cancel_ids):
            pending = queue.get(job_id)
            if pending is None or pending.status != QUEUED:
                if pending is None or pending.status != RUNNING:
                    self._cancel_ids.discard(job_id)
                continue
            queue.finish(pending, CANCELLED, reason="cancelled with flakehunter queue cancel")
            self._cancel_ids.discard(job_id)
            log.info("daemon: cancelled %s before it started", job_id, extra={"event": "job_cancelled", "job": job_id})
        for job in queue.drop_vanished():
            log.info("daemon: %s removed from the folder; cancelled", job.id,
                     extra={"event": "job_cancelled", "job": job.id})

    def _next_job(self, queue: JobQueue) -> Job | None:
        running = queue.jobs(RUNNING)  # an interrupted job goes first, then arrival order
        return running[0] if running else queue.next_queued()

    def _run_job(self, queue: JobQueue, job: Job) -> None:
        if int(job.data.get("starts", 0)) >= self.options.max_starts:
            queue.finish(job, FAILED, error=f"interrupted {job.data.get('starts')} times; not resumed again")
            return
        if job.status == QUEUED and not queue.job_file(job).exists():
            queue.finish(job, CANCELLED, reason="the job file was removed from the queue folder")
            return
        if job.status == RUNNING:
            _kill_orphan(job, queue.run_dir(job))

        def cancelled() -> bool:
            # Called every poll while the job runs: new files and cancels of waiting jobs are handled
            # meanwhile too, so `queue cancel` of a waiting job never waits for the running one.
            self._tick(queue)
            return job.id in self._cancel_ids

        runner = JobRunner(queue, job, self.options, self.stop, cancelled)
        t0 = time.monotonic()
        try:
            outcome = runner.run()
        except OSError as exc:  # could not start the process at all
            outcome = JobOutcome(FAILED, None, f"could not start the scan: {exc}")
        self._cancel_ids.discard(job.id)
        seconds = round(time.monotonic() - t0, 2)
        if outcome.status == RUNNING:
            queue.mark_running(runner.job, interrupted=now_iso(), exit_code=outcome.exit_code)
            log.info("daemon: job %s interrupted by shutdown; it resumes on the next start", job.id,
                     extra={"event": "job_interrupted", "job": job.id})
            return
        fields: dict[str, Any] = {"exit_code": outcome.exit_code, "last_run_s": seconds}
        fields["error" if outcome.status == FAILED else "reason"] = outcome.error
        finished = queue.finish(runner.job, outcome.status, **fields)
        self.jobs_run += 1
        level = logging.INFO if outcome.status == DONE else logging.WARNING
        log.log(level, "daemon: job %s %s in %.1f s%s", job.id, outcome.status, seconds,
                f": {outcome.error}" if outcome.error else "",
                extra={"event": f"job_{outcome.status}", "job": job.id, "exit_code": outcome.exit_code,
                       "error": outcome.error, "folder": str(queue.final_dir(finished))})

    def _status_line(self, queue: JobQueue) -> None:
        counts = {s: len(queue.jobs(s)) for s in (QUEUED, RUNNING, DONE, FAILED, CANCELLED)}
        log.info("daemon: %d queued, %d running, %d done, %d failed, %d cancelled", counts[QUEUED],
                 counts[RUNNING], counts[DONE], counts[FAILED], counts[CANCELLED],
                 extra={"event": "status", **counts})
        with contextlib.suppress(OSError):
            write_json_atomic(queue.folder / "status.json", {"pid": os.getpid(), "updated": now_iso(), **counts})

    # -- the watch folder -------------------------------------------------------------------------
    def _watch_forever(self) -> None:
        """Run the watcher; restart it with backoff after a failure, until the daemon stops."""
        from flakehunter.watch import Watcher

        assert self.watch is not None
        spec = self.watch
        backoff = 5.0
        while not self.stop.is_set():
            watcher = Watcher(spec.directory, spec.out, spec.config, config_path=spec.config_path,
                              recursive=spec.recursive, polling=spec.polling, stop=self.stop)
            self._watcher = watcher
            started = time.monotonic()
            try:
                watcher.run()
            except Exception as exc:  # the queue must outlive any watch-folder trouble
                if time.monotonic() - started > 600:
                    backoff = 5.0
                log.error("daemon: the watch folder stopped (%s: %s); restarting in %.0f s", type(exc).__name__,
                          exc, backoff, extra={"event": "watch_failed", "error": str(exc)})
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 300.0)
            finally:
                self._watcher = None


def _kill_orphan(job: Job, run_dir: Path) -> None:
    """Kill a scan of ``job`` left running by a daemon that died (where PR_SET_PDEATHSIG is missing).

    Only a process whose command line names the job's run directory is touched.
    """
    pid = job.data.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return  # gone (or no /proc to tell)
    if not any(os.fsencode(str(run_dir)) in part or os.fsencode(job.file) in part for part in cmdline):
        return
    log.warning("daemon: killing the orphaned scan of %s (pid %d) before resuming it", job.id, pid,
                extra={"event": "job_orphan", "job": job.id, "pid": pid})
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
