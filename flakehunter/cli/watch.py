"""``flakehunter watch`` (analyse images as they arrive in a folder) and ``flakehunter status``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flakehunter.cli._common import (
    DETECTORS_OPTION,
    REPORT_OPTION,
    detector_names,
    positive_option,
    report_after_run,
    reports_errors,
    state,
    stop_on_signals,
)

if TYPE_CHECKING:
    from flakehunter.config import DetectConfig


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
    app.command("status")(status)


def detect_config(
    config: Path | None, material: str | None, oxide_nm: float | None, pixel_size_um: float | None,
    device: str | None, detectors: list[str] | None = None,
) -> DetectConfig:
    """The watch config from ``--config`` with command-line overrides; one-line errors for bad values."""
    from flakehunter.compute import check_device_choice
    from flakehunter.config import DetectConfig, DetectorSection, MaterialConfig, load_detect_config
    from flakehunter.errors import InputError

    positive_option(oxide_nm, "--oxide-nm", "a positive thickness in nm")
    positive_option(pixel_size_um, "--pixel-size-um", "a positive pixel size in µm")
    if config is not None:
        cfg = load_detect_config(config)
    elif material is not None:
        cfg = DetectConfig(material=MaterialConfig(name=material, oxide_nm=oxide_nm or 90.0))
    else:
        raise InputError("watch: give --config FILE (see configs/watch.yaml) or --material NAME")
    changes: dict[str, Any] = {}
    if material is not None or oxide_nm is not None:
        changes["material"] = MaterialConfig(
            name=material or cfg.material.name, oxide_nm=oxide_nm or cfg.material.oxide_nm
        )
    if pixel_size_um is not None:
        changes["pixel_size_um"] = pixel_size_um
    if device is not None:
        check_device_choice(device)
        changes["device"] = device
    names = detector_names(detectors)
    if names is not None:  # the chain as given; a detector the config names keeps its options
        configured = {d.name: d for d in cfg.detectors}
        changes["detectors"] = [configured.get(n, DetectorSection(name=n)) for n in names]
    return cfg.model_copy(update=changes) if changes else cfg


@reports_errors
def watch(
    directory: Annotated[Path, typer.Argument(help="Folder the acquisition software writes images into.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: candidates, journal, quarantine, logs.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Detect config (material, detectors, timing).")
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Also watch sub-folders.")] = False,
    polling: Annotated[
        bool, typer.Option("--polling", help="Poll instead of OS events (network shares: SMB, NFS).")
    ] = False,
    material: Annotated[str | None, typer.Option("--material", "-m", help="Material; overrides the config.")] = None,
    oxide_nm: Annotated[float | None, typer.Option("--oxide-nm", help="Nominal SiO2 thickness in nm.")] = None,
    pixel_size_um: Annotated[
        float | None, typer.Option("--pixel-size-um", help="Pixel size where a file's metadata has none.")
    ] = None,
    detectors: Annotated[list[str] | None, DETECTORS_OPTION] = None,
    device: Annotated[str | None, typer.Option("--device", help="Compute device: auto, cpu or cuda.")] = None,
    log_file: Annotated[
        Path | None, typer.Option("--log-file", help="JSON-lines log, rotated (default: OUT/logs/watch.log).")
    ] = None,
    report: Annotated[bool, REPORT_OPTION] = True,
) -> None:
    """Analyse every image written into DIRECTORY exactly once; runs until Ctrl-C or SIGTERM."""
    from flakehunter.errors import InputError
    from flakehunter.logs import configure_logging
    from flakehunter.watch import Watcher

    cfg = detect_config(config, material, oxide_nm, pixel_size_um, device, detectors)
    if not directory.is_dir():  # before anything is created under OUT
        raise InputError(f"{directory}: watch folder does not exist or is not a folder")
    configure_logging(log_file or out / "logs" / "watch.log", debug=state.debug)
    watcher = Watcher(directory, out, cfg, config_path=config, recursive=recursive, polling=polling)
    with stop_on_signals(watcher.request_stop, "file"):
        summary = watcher.run()
    typer.echo(
        f"Watch stopped: {summary['processed']} processed, {summary['quarantined']} quarantined, "
        f"{summary['pending']} pending; {summary['candidates']} candidates"
    )
    typer.echo(f"  candidates: {out / 'candidates.csv'} (and candidates.jsonl)")
    if summary["quarantined"]:
        typer.echo(f"  quarantine: {out / 'quarantine.jsonl'}")
    report_after_run(out, report)


@reports_errors
def status(
    folder: Annotated[Path, typer.Argument(help="A watch output folder, a run directory or a job queue folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts of processed, quarantined and pending files (or jobs), and whether it is running."""
    from flakehunter.jobqueue import is_queue_folder, queue_status
    from flakehunter.run.status import read_status

    info = queue_status(folder) if is_queue_folder(folder) else read_status(folder)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    running = f"running (pid {info['pid']})" if info.get("running") else "not running"
    if info["kind"] == "queue":
        typer.echo(f"{folder}: job queue, daemon {running}")
        typer.echo(f"  {info['queued']} queued, {info['running_jobs']} running, {info['done']} done, "
                   f"{info['failed']} failed, {info['cancelled']} cancelled")
        return
    state_note = f" (manifest: {info['state']})" if info.get("state") not in (None, "running", "unknown") else ""
    typer.echo(f"{folder}: {info['kind']} run, {running}{state_note}")
    typer.echo(f"  processed {info['processed']}, quarantined {info['quarantined']}, pending {info['pending']}"
               + (f", failed {info['failed']}" if info.get("failed") else "")
               + f"; {info['candidates']} candidates")
    last = info.get("last_status")
    if last:
        typer.echo(
            f"  last status {last.get('updated')}: {last.get('files_per_s')} files/s, RSS {last.get('rss_mb')} MiB"
        )
    if info.get("quarantine_file"):
        typer.echo(f"  quarantine: {info['quarantine_file']}")
