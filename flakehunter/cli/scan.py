"""``flakehunter scan``: run (or plan, or resume) a scan described by a wafer.yaml."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flakehunter.cli._common import REPORT_OPTION, report_after_run, reports_errors, stop_on_signals
from flakehunter.errors import InputError

if TYPE_CHECKING:  # the scan machinery is imported inside the command, when it runs
    from flakehunter.acquisition.plan import ScanPlan
    from flakehunter.scan import Scan


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)


@reports_errors
def scan(
    config: Annotated[Path | None, typer.Argument(help="The scan's wafer.yaml.", show_default=False)] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: output.directory or runs/NAME-TIME).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; move nothing.")] = False,
    device: Annotated[str, typer.Option("--device", help="Compute device for detectors: auto, cpu or cuda.")] = "auto",
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the interrupted scan in this run directory.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print the plan as JSON.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    report: Annotated[bool, REPORT_OPTION] = True,
) -> None:
    """Tile a chip or wafer, find thin flakes, and write candidates with stage coordinates."""
    from flakehunter.compute import check_device_choice
    from flakehunter.config import load_config
    from flakehunter.scan import Scan, default_run_dir

    if resume is None and config is None:
        raise InputError("scan: give a CONFIG file, or --resume RUN_DIR")
    if resume is not None and (config is not None or out is not None):
        raise InputError("scan --resume RUN_DIR takes the config from the run directory; drop CONFIG and --out")
    check_device_choice(device)  # fail fast on --device cuda without a GPU
    if resume is not None:
        runner = Scan(None, resume, resume=True, device=device)
    else:
        assert config is not None
        run_dir = out if out is not None else default_run_dir(load_config(config))
        runner = Scan(config, run_dir, device=device)

    if dry_run:
        plan = runner.prepare()
        _print_plan(plan, runner.run_dir, as_json)
        return

    summary = _run_with_progress(runner, progress and sys.stderr.isatty())
    _print_summary(runner, summary)
    report_after_run(runner.run_dir, report)
    if summary["status"] == "interrupted":
        raise typer.Exit(130)
    if summary["status"] != "completed":
        raise typer.Exit(1)


def _run_with_progress(runner: Scan, show: bool) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tiles  {task.fields[rate]}  acquired {task.fields[acquired]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        task = bar.add_task("scanning", total=None, rate="", acquired=0)
        start: dict[str, float] = {}

        def on_progress(done: int, total: int, acquired: int) -> None:
            import time

            now = time.monotonic()
            start.setdefault("t", now)
            start.setdefault("done", done)
            elapsed = now - start["t"]
            rate = (done - start["done"]) / elapsed if elapsed > 0 else 0.0
            bar.update(task, completed=done, total=total, rate=f"{rate:.2f} tiles/s", acquired=acquired)

        runner.on_progress = on_progress
        with stop_on_signals(runner.request_stop, "tile"):
            return runner.run()


def _print_plan(plan: ScanPlan, run_dir: Path, as_json: bool) -> None:
    info = plan.describe()
    if as_json:
        info["run_dir"] = str(run_dir)
        info["tile_positions_um"] = [[t.x_um, t.y_um, t.z_um] for t in plan.tiles]
        typer.echo(json.dumps(info, indent=2))
        return
    cfg = plan.config
    typer.echo(f"Plan for {plan.config_path} (dry run: nothing moves)")
    typer.echo(f"  stage {cfg.stage.plugin}, camera {cfg.camera.plugin} {info['camera_shape'][0]}x"
               f"{info['camera_shape'][1]} px at {info['pixel_size_um']} µm/px")
    typer.echo(f"  field of view {info['fov_um'][0]:.0f} x {info['fov_um'][1]:.0f} µm, "
               f"overlap {info['overlap_percent']}%, order {info['order']}")
    typer.echo(f"  {info['tiles']} tiles ({info['grid']}), region {info['region_area_mm2']:.2f} mm², "
               f"imaged {info['imaged_area_mm2']:.2f} mm²")
    typer.echo(f"  x {info['x_range_um'][0]:.0f}..{info['x_range_um'][1]:.0f} µm, "
               f"y {info['y_range_um'][0]:.0f}..{info['y_range_um'][1]:.0f} µm")
    typer.echo(f"  estimated acquisition time {_duration(info['estimated_s'])} (moves, settling, exposures)")
    typer.echo(f"  material {cfg.material.name} on {cfg.material.oxide_nm:g} nm SiO2; "
               f"detectors {', '.join(d.name for d in cfg.detectors)}")
    typer.echo(f"  would write to {run_dir}")


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m {s:02d}s" if hours else f"{m}m {s:02d}s" if m else f"{seconds:.1f} s"


def _print_summary(runner: Scan, summary: dict[str, Any]) -> None:
    from collections import Counter

    from flakehunter.candidates import read_candidates

    run = runner.out
    candidates = read_candidates(run.candidates_jsonl)
    by_class = Counter(c.layer_class for c in candidates)
    classes = ", ".join(f"{k}: {v}" for k, v in sorted(by_class.items())) or "none"
    counts = summary["counts"]
    status = summary["status"].replace("_", " ")
    typer.echo(
        f"Scan {status}: {counts.get('done', 0)}/{summary['items_total']} tiles analysed, "
        f"{summary['candidates']} candidates ({classes}) in {summary['wall_s']:.1f} s"
    )
    typer.echo(f"  candidates: {run.candidates_csv} (and {run.candidates_jsonl.name})")
    typer.echo(f"  tiles:      {run.tiles}")
    typer.echo(f"  manifest:   {run.manifest}")
    if run.truth.exists():
        typer.echo(f"  truth:      {run.truth} (simulator ground truth)")
    if summary.get("items_with_warnings"):
        warned = summary["items_with_warnings"]
        shown = ", ".join(Path(k).name for k in warned[:5]) + (" ..." if len(warned) > 5 else "")
        typer.secho(f"  {len(warned)} tile(s) with warnings (e.g. out of focus after a retake): {shown}; "
                    f"see {run.manifest.name}", fg=typer.colors.YELLOW, err=True)
    if summary["status"] != "completed":
        failed = counts.get("failed", 0)
        if failed:
            typer.secho(f"  {failed} tile(s) failed; see {run.manifest.name}", fg=typer.colors.YELLOW, err=True)
        typer.secho(f"  continue with: flakehunter scan --resume {run.path}", fg=typer.colors.YELLOW, err=True)
