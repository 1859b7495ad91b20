"""Hardware commands: ``calibrate-stage``, ``goto`` and ``hardware check``.

* ``flakehunter calibrate-stage CONFIG`` moves the stage around a spot with structure, registers the
  frames by phase correlation, and writes the measured pixel size, rotation and flips into the
  config's ``optics:`` section (the rest of the file is kept as it is; the write is atomic).
* ``flakehunter goto RUN_DIR [CANDIDATE_ID]`` drives the stage of that run's config to a candidate (by id,
  or the best one passing the filters ``export`` takes too), optionally shifted by the offset between the
  scan objective and the one you look through.
* ``flakehunter hardware check CONFIG`` connects the stage and the camera, reports identity,
  position and limits, and saves a test image.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from flakehunter.cli._common import reports_errors
from flakehunter.cli.report import LayerClassOpt, MaxAreaOpt, MinAreaOpt, MinScoreOpt, ReviewedOpt
from flakehunter.errors import InputError

hardware_app = typer.Typer(help="Check the stage and camera of a config.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("calibrate-stage")(calibrate_stage)
    app.command("goto")(goto)
    hardware_app.command("check")(check)
    app.add_typer(hardware_app, name="hardware")


def _numbers(text: str, option: str, count: tuple[int, ...]) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in count:
        expected = " or ".join(str(n) for n in count)
        raise InputError(f"{option}: expected {expected} comma-separated numbers, got {text!r}")
    return values


def _plan(config_path: Path) -> Any:
    """The config's devices (unconnected), built exactly as a scan builds them."""
    from flakehunter.acquisition.plan import make_plan
    from flakehunter.config import load_config
    from flakehunter.registry import get_registry

    config = load_config(config_path)
    return make_plan(config, config_path, get_registry())


def _close(*devices: Any) -> None:
    for device in devices:
        with contextlib.suppress(Exception):  # teardown must not hide what went wrong before it
            device.close()


# -- calibrate-stage ------------------------------------------------------------------------------------


@reports_errors
def calibrate_stage(
    config: Annotated[Path, typer.Argument(help="The scan config whose stage, camera and optics to calibrate.")],
    at: Annotated[str | None, typer.Option("--at", help="X,Y (µm) of a spot with structure; default: the "
                                                           "most textured of 3 x 3 fields around the region's "
                                                           "centre.")] = None,
    step_um: Annotated[float | None, typer.Option("--step-um", help="Largest move (µm); default: a quarter "
                                                                    "of the field of view.")] = None,
    z_um: Annotated[float | None, typer.Option("--z-um", help="Focus height to calibrate at; default: "
                                                              "leave z alone.")] = None,
    write: Annotated[bool, typer.Option("--write/--no-write", help="Write the result into CONFIG.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Measure pixel size and camera rotation/flip by moving the stage, and write them into CONFIG."""
    from flakehunter.geometry import region_polygon
    from flakehunter.stage_calibration import calibrate_stage as run_calibration
    from flakehunter.stage_calibration import find_structure, write_optics

    plan = _plan(config)
    step = step_um if step_um is not None else 0.25 * min(plan.fov_um)
    if step <= 0:
        raise InputError(f"--step-um: expected a positive distance, got {step:g}")
    stage, camera = plan.stage, plan.camera
    try:
        stage.connect()
        camera.connect()
        if at is not None:
            centre = _numbers(at, "--at", (2,))
        else:  # the region's centre, or a neighbouring field with more to register on
            c = region_polygon(plan.config.region).centroid
            centre = find_structure(stage, camera, (c.x, c.y), max(plan.fov_um), z_um=z_um)
        result = run_calibration(stage, camera, (centre[0], centre[1]), step, z_um=z_um)
    finally:
        _close(camera, stage)
    before = plan.config.optics
    values = result.optics()
    if as_json:
        typer.echo(json.dumps({"config": str(config), "at_um": list(centre), "step_um": step, **values,
                               "residual_px": round(result.residual_px, 4), "aspect": round(result.aspect, 5),
                               "skew_deg": round(result.skew_deg, 4), "moves": result.moves,
                               "written": write}, indent=2))
    else:
        typer.echo(f"Stage calibration at ({centre[0]:.0f}, {centre[1]:.0f}) µm, moves up to {step:.0f} µm:")
        typer.echo(f"  pixel size  {values['pixel_size_um']} µm  (config had {before.pixel_size_um})")
        typer.echo(f"  rotation    {values['rotation_deg']}°  (config had {before.rotation_deg})")
        typer.echo(f"  flips       rows {values['flip_rows']}, cols {values['flip_cols']}  "
                   f"(config had {before.flip_rows}, {before.flip_cols})")
        typer.echo(f"  fit         {result.residual_px:.3f} px RMS, aspect {result.aspect:.4f}, "
                   f"skew {result.skew_deg:.3f}°")
    if write:
        write_optics(config, values)
        if not as_json:
            typer.echo(f"  written to  {config} (optics:)")


# -- goto -----------------------------------------------------------------------------------------------


@reports_errors
def goto(
    run_dir: Annotated[Path, typer.Argument(help="A scan's run directory.")],
    candidate_id: Annotated[int | None, typer.Argument(
        help="The candidate's id (candidates.csv, column id); without it, the best-scoring candidate that passes "
             "the filters (--rank N for the N-th).", show_default=False)] = None,
    objective_offset: Annotated[str | None, typer.Option(
        "--objective-offset", help="DX,DY[,DZ] (µm) from the scan objective's centre to the one you look through.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Take the stage from this config instead of "
                                                                  "the run's.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the target; move nothing.")] = False,
    layer_class: LayerClassOpt = None,
    min_area_um2: MinAreaOpt = None,
    max_area_um2: MaxAreaOpt = None,
    min_score: MinScoreOpt = None,
    reviewed: ReviewedOpt = None,
    rank: Annotated[int, typer.Option("--rank", help="Without CANDIDATE_ID: the N-th best candidate that passes "
                                                     "the filters.")] = 1,
    list_only: Annotated[bool, typer.Option("--list", help="List the candidates that pass the filters, best "
                                                           "first, with their rank; move nothing.")] = False,
) -> None:
    """Drive the stage to a candidate flake of a finished (or interrupted) scan, by id or by filters."""
    from flakehunter.candidates import read_candidates
    from flakehunter.cli.report import candidate_filter
    from flakehunter.report.verdicts import read_verdicts
    from flakehunter.run.layout import RunDirectory

    run = RunDirectory(run_dir)
    records = run.candidates_jsonl
    if not records.exists():
        raise InputError(f"{run_dir}: no {records.name}; is this a scan run directory?")
    flt = candidate_filter(layer_class, min_area_um2, max_area_um2, min_score, reviewed)
    candidates = read_candidates(records)
    verdicts = read_verdicts(run.review) if flt.needs_review else {}
    ranked = [c for c in flt.apply(candidates, verdicts) if c.positioned]
    if list_only:
        typer.echo(f"{len(ranked)} candidates with a stage position pass the filters ({flt.describe()}):")
        for n, c in enumerate(ranked, start=1):
            typer.echo(f"  {n:4d}  id {c.id:<6d} {c.layer_class:<5s} score {c.score:.2f}  {c.area_um2:8.0f} µm²  "
                       f"x={c.x_um:.1f} y={c.y_um:.1f} µm")
        return
    if candidate_id is not None:
        found = [c for c in candidates if c.id == candidate_id]
        if not found:
            raise InputError(f"{records}: no candidate with id {candidate_id}")
        cand = found[0]
        if not flt.passes(cand, verdicts.get(cand.id)):
            raise InputError(f"{records}: candidate {candidate_id} does not pass the filters ({flt.describe()})")
        if not cand.positioned:
            raise InputError(f"{records}: candidate {candidate_id} has no stage position (its image carried none)")
    else:
        if rank < 1:
            raise InputError(f"--rank: expected 1 or more, got {rank}")
        if len(ranked) < rank:
            raise InputError(f"{records}: {len(ranked)} candidates with a stage position pass the filters "
                             f"({flt.describe()}); there is no rank {rank}")
        cand = ranked[rank - 1]
    offset = _numbers(objective_offset, "--objective-offset", (2, 3)) if objective_offset else (0.0, 0.0)
    x = cand.x_um + offset[0]
    y = cand.y_um + offset[1]
    z = None if cand.z_um is None else cand.z_um + (offset[2] if len(offset) == 3 else 0.0)
    config_path = config or run.config_copy
    plan = _plan(config_path)
    stage = plan.stage
    stage.limits.check(x, y, z, device=f"{plan.config.stage.plugin} stage")  # refuse before connecting
    layers = f"{cand.layer_class} " if cand.layer_class else ""
    what = f"candidate {cand.id} ({layers}{cand.material}, {cand.area_um2:.0f} µm², in {cand.image})"
    target = f"x={x:.2f} y={y:.2f}" + ("" if z is None else f" z={z:.2f}") + " µm"
    if dry_run:
        typer.echo(f"Would move to {what}: {target}")
        return
    try:
        stage.connect()
        stage.move_to_um(x, y, z)
        here = stage.position_um()
    finally:
        _close(stage)
    typer.echo(f"At {what}: x={here.x_um:.2f} y={here.y_um:.2f} z={here.z_um:.2f} µm")


# -- hardware check -------------------------------------------------------------------------------------


@reports_errors
def check(
    config: Annotated[Path, typer.Argument(help="The config whose stage and camera to check.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the test image.")] = Path("hardware-check"),
    home: Annotated[bool, typer.Option("--home", help="Home the stage first (drives to its limit switches).")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Connect, report identity, position and limits, and save a test image."""
    import numpy as np

    from flakehunter.tiles import write_tile

    plan = _plan(config)
    stage, camera = plan.stage, plan.camera
    cfg = plan.config
    lim = stage.limits
    report: dict[str, Any] = {"config": str(config)}
    try:
        t0 = time.perf_counter()
        stage.connect()
        report["stage"] = {
            "plugin": cfg.stage.plugin,
            "identity": getattr(stage, "identity", "") or "",
            "connect_s": round(time.perf_counter() - t0, 3),
            **({k: v for k, v in stage.describe().items() if k != "plugin"} if hasattr(stage, "describe") else {}),
        }
        if home:
            if not hasattr(stage, "home"):
                raise InputError(f"--home: the {cfg.stage.plugin} stage cannot home")
            stage.home()
        pos = stage.position_um()
        inside = all(getattr(lim, a).contains(v) for a, v in (("x", pos.x_um), ("y", pos.y_um), ("z", pos.z_um)))
        report["position_um"] = {"x": round(pos.x_um, 3), "y": round(pos.y_um, 3), "z": round(pos.z_um, 3)}
        report["limits_um"] = {a: [getattr(lim, a).min_um, getattr(lim, a).max_um] for a in ("x", "y", "z")}
        report["inside_limits"] = inside
        t0 = time.perf_counter()
        camera.connect()
        image = camera.snap()
        snap_s = time.perf_counter() - t0
    finally:
        _close(camera, stage)
    full = 255 if image.dtype == np.uint8 else 65535
    path = out / f"hardware-check-{time.strftime('%Y%m%d-%H%M%S')}.ome.tif"
    write_tile(path, image, pixel_size_um=plan.transform.pixel_size_um, x_um=pos.x_um, y_um=pos.y_um, z_um=pos.z_um,
               provenance={"command": "hardware check", "stage": cfg.stage.plugin, "camera": cfg.camera.plugin})
    report["camera"] = {
        "plugin": cfg.camera.plugin,
        "shape": list(image.shape),
        "dtype": str(image.dtype),
        "first_frame_s": round(snap_s, 3),
        "mean": round(float(image.mean()), 2),
        "min": int(image.min()),
        "max": int(image.max()),
        "saturated_fraction": round(float((image >= full).mean()), 5),
        "test_image": str(path),
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    s, c, p = report["stage"], report["camera"], report["position_um"]
    typer.echo(f"Stage   {s['plugin']}: {s['identity'] or '(no identity reported)'}")
    if "port" in s:
        typer.echo(f"        port {s['port']}, connected in {s['connect_s']} s")
    typer.echo(f"        position x={p['x']} y={p['y']} z={p['z']} µm "
               f"({'inside' if inside else 'OUTSIDE'} the soft limits)")
    for a, (lo, hi) in report["limits_um"].items():
        typer.echo(f"        limits {a}: [{lo:g}, {hi:g}] µm")
    typer.echo(f"Camera  {c['plugin']}: {c['shape']} {c['dtype']}, mean {c['mean']}, range {c['min']}..{c['max']}, "
               f"{100 * c['saturated_fraction']:.2f}% saturated, first frame in {c['first_frame_s']} s")
    typer.echo(f"        test image: {path}")
    if not inside:
        typer.secho("warning: the stage is outside the config's soft limits; scans will refuse to move it there",
                    fg=typer.colors.YELLOW, err=True)
