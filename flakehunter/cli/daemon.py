"""``flakehunter daemon`` (job queue and/or watch folder) and ``flakehunter queue add|list|cancel``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flakehunter.cli._common import reports_errors, state, stop_on_signals

queue_app = typer.Typer(
    name="queue", help="Add, list and cancel scan jobs of a daemon's queue folder.", no_args_is_help=True
)

QueueOption = Annotated[Path, typer.Option("--queue", "-q", help="The job queue folder.")]


def register(app: typer.Typer) -> None:
    app.command("daemon")(daemon)
    app.add_typer(queue_app)


@reports_errors
def daemon(
    queue: Annotated[
        Path | None, typer.Option("--queue", "-q", help="Job queue folder: wafer.yaml files dropped here run in order.")
    ] = None,
    watch: Annotated[Path | None, typer.Option("--watch", help="Also watch this folder for images.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder of the watch folder.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Detect config of the watch folder.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Watch sub-folders too.")] = False,
    polling: Annotated[bool, typer.Option("--polling", help="Poll the watch folder (network shares).")] = False,
    material: Annotated[str | None, typer.Option("--material", "-m", help="Watch folder's material.")] = None,
    oxide_nm: Annotated[float | None, typer.Option("--oxide-nm", help="Watch folder's SiO2 thickness, nm.")] = None,
    pixel_size_um: Annotated[
        float | None, typer.Option("--pixel-size-um", help="Pixel size where images do not say.")
    ] = None,
    stall_timeout_s: Annotated[
        float, typer.Option("--stall-timeout-s", help="Fail a job whose scan makes no progress this long.")
    ] = 600.0,
    job_timeout_s: Annotated[
        float | None, typer.Option("--job-timeout-s", help="Fail a job that runs longer than this.")
    ] = None,
    settle_s: Annotated[float, typer.Option("--settle-s", help="Wait this long after a job file last changed.")] = 1.0,
    kill_grace_s: Annotated[
        float, typer.Option("--kill-grace-s", help="After SIGTERM to a hung or cancelled scan, SIGKILL after this.")
    ] = 10.0,
    shutdown_grace_s: Annotated[
        float, typer.Option("--shutdown-grace-s", help="On SIGTERM, time the running scan gets to finish its tile.")
    ] = 60.0,
    device: Annotated[str, typer.Option("--device", help="Compute device: auto, cpu or cuda.")] = "auto",
    log_file: Annotated[
        Path | None, typer.Option("--log-file", help="JSON-lines log, rotated (default: QUEUE/logs/daemon.log).")
    ] = None,
) -> None:
    """Run scan jobs from a queue folder one at a time, and/or a watch folder, until SIGTERM."""
    from flakehunter.cli.watch import detect_config
    from flakehunter.compute import check_device_choice
    from flakehunter.daemon import Daemon, DaemonOptions, WatchSpec
    from flakehunter.errors import InputError
    from flakehunter.logs import configure_logging

    check_device_choice(device)
    if stall_timeout_s <= 0:
        raise InputError(f"--stall-timeout-s: expected a positive number of seconds, got {stall_timeout_s}")
    if job_timeout_s is not None and job_timeout_s <= 0:
        raise InputError(f"--job-timeout-s: expected a positive number of seconds, got {job_timeout_s}")
    for name, value in (("--settle-s", settle_s), ("--kill-grace-s", kill_grace_s),
                        ("--shutdown-grace-s", shutdown_grace_s)):
        if value < 0:
            raise InputError(f"{name}: expected zero or more seconds, got {value}")
    spec = None
    if watch is not None:
        if out is None:
            raise InputError("--watch needs --out OUT for its candidates")
        cfg = detect_config(config, material, oxide_nm, pixel_size_um, None if device == "auto" else device)
        spec = WatchSpec(watch, out, cfg, config_path=config, recursive=recursive, polling=polling)
    elif out is not None or config is not None:
        raise InputError("--out and --config belong to --watch DIR; give --watch too")
    if queue is None and spec is None:
        raise InputError("daemon: give --queue DIR, or --watch DIR --out OUT, or both")
    log_home = queue if queue is not None else out
    assert log_home is not None  # a watch-only daemon has --out
    configure_logging(log_file or log_home / "logs" / "daemon.log", debug=state.debug)
    options = DaemonOptions(
        stall_timeout_s=stall_timeout_s, job_timeout_s=job_timeout_s, settle_s=settle_s, device=device,
        kill_grace_s=kill_grace_s, shutdown_grace_s=shutdown_grace_s,
    )
    runner = Daemon(queue, spec, options)
    with stop_on_signals(runner.request_stop, "tile or file"):
        summary = runner.run()
    typer.echo(f"Daemon stopped: {summary['jobs_run']} job(s) finished in this run")


@queue_app.command("add")
@reports_errors
def queue_add(
    files: Annotated[list[Path], typer.Argument(help="Scan configs (wafer.yaml) to queue.", show_default=False)],
    queue: QueueOption,
) -> None:
    """Validate scan configs and queue them (atomically; they run in the order added)."""
    from flakehunter.jobqueue import add_job

    for source in files:
        target = add_job(queue, source)
        typer.echo(f"queued {source} as {target}")


@queue_app.command("list")
@reports_errors
def queue_list(
    queue: QueueOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every job of the queue in arrival order, with its state and result."""
    from flakehunter.jobqueue import list_jobs

    jobs = list_jobs(queue)
    if as_json:
        typer.echo(json.dumps(jobs, indent=2))
        return
    if not jobs:
        typer.echo(f"{queue}: no jobs")
        return
    for job in jobs:
        detail = job.get("error") or job.get("reason") or ""
        when = job.get("finished") or job.get("started") or job.get("submitted") or ""
        typer.echo(f"{job['id'] or '(waiting)':<28} {job['status']:<10} {job['file']:<28} {when:<26} {detail}")


@queue_app.command("cancel")
@reports_errors
def queue_cancel(
    job: Annotated[str, typer.Argument(help="Job id (0003-chipA), number (3), file name or name.")],
    queue: QueueOption,
    wait_s: Annotated[float, typer.Option("--wait-s", help="How long to wait for a running daemon to act.")] = 15.0,
) -> None:
    """Cancel a queued job, or stop a running one at its next tile boundary."""
    from flakehunter.jobqueue import cancel_job

    found, what = cancel_job(queue, job, wait_s=wait_s)
    typer.echo(f"{found.id}: {what}")
