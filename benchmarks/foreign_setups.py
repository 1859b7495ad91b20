"""Detection on foreign setups: random microscopes, cameras, lamps, oxides and file formats (issue 12).

    python benchmarks/foreign_setups.py [--setups 20] [--seed 0] [--tiles 9] [--shape 1392x2048]
                                        [--detectors contrast] [--control] [--out DIR] [--json FILE]
    python benchmarks/foreign_setups.py --compare "contrast;contrast,cnn-thickness,cnn-axis" [--clutter]
    python benchmarks/foreign_setups.py --oxide stated|unstated    (every setup told its oxide, or none)

For each setup (hardware/simulator/setup.py, drawn from --seed) a small chip is rendered through that
setup's imaging chain (hardware/simulator/imaging.py) and written in its file format (OME-TIFF with
stage positions, or PNG/JPEG without). The detector chain then runs exactly as a user would run it:

    flakehunter detect DIR --material M --pixel-size-um P [--oxide-nm N, only when the setup states it] --out RUN

and its candidates are scored in each image's pixels (benchmarks/_foreign_scoring.py): recall, precision
and layer accuracy of 1-3L flakes of at least --min-area-um2 (and --min-area-px pixels), crystal-axis RMS
modulo the material's edge symmetry on straight-edged flakes. Prints one line per setup, the median and
the worst setup per metric, and writes JSON. ``c1L`` is the setup's true monolayer contrast (linear, the
channel where it is largest): how visible a monolayer physically is there.

``--compare A;B`` scores several detector chains (each NAME[,NAME]) on the same rendered images, side by side,
with pooled numbers besides median and worst (all flakes of all setups together). ``--clutter`` renders every
chip cluttered: four times the tape residue, three times the dust and the thick debris, three scratches, and
70 % of the thin flakes grown as terraces from thick bodies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _foreign_scoring import score

FLAKEHUNTER = [sys.executable, "-m", "flakehunter"]
METRICS = ("recall", "precision", "layer_accuracy", "axis_rms_deg")


def monolayer_contrast(setup: Any) -> float:
    """The setup's true 1L contrast in the channel where it is largest (signed, linear)."""
    from flakehunter.hardware.simulator.imaging import ForeignOptics
    from flakehunter.registry import get_registry

    c = ForeignOptics(setup, get_registry().material(setup.material)).flake_ratio(1, setup.oxide_nm) - 1.0
    return float(c[int(np.argmax(np.abs(c)))])


def told_oxide_nm(setup: Any, oxide: str) -> float | None:
    """The oxide the user states: as the setup was drawn (±15 nm off, or none), always (the drawn value, or the
    true one to the nearest 5 nm where none was drawn), or never."""
    if oxide == "unstated":
        return None
    if oxide == "stated" and setup.stated_oxide_nm is None:
        return 5.0 * round(setup.oxide_nm / 5.0)
    return None if setup.stated_oxide_nm is None else float(setup.stated_oxide_nm)


def detect_command(folder: Path, run: Path, setup: Any, detectors: list[str], oxide: str = "as-drawn") -> list[str]:
    """The command line a user of this setup would type."""
    cmd = [*FLAKEHUNTER, "detect", str(folder), "--material", setup.material,
           "--pixel-size-um", f"{setup.pixel_size_um:g}", "--out", str(run)]
    told = told_oxide_nm(setup, oxide)
    if told is not None:
        cmd += ["--oxide-nm", f"{told:g}"]
    for name in detectors:
        cmd += ["--detector", name]
    return cmd


def cluttered(spec: Any) -> Any:
    """The chip of a setup with much more of what a thin-flake detector must not report."""
    return spec.model_copy(update={
        "residue_blobs": 4 * spec.residue_blobs, "dust": 3 * spec.dust, "thick_flakes": 3 * spec.thick_flakes,
        "scratches": 3, "attached_fraction": 0.7,
    })


def render_setup(index: int | str, setup: Any, args: argparse.Namespace, work: Path
                 ) -> tuple[Path, dict[str, Any], float]:
    """Render a setup's chip into its image files; (folder, truth per image key, seconds)."""
    from flakehunter.hardware.simulator.foreign import chip_spec_for, render_foreign_chip, write_tile_file

    folder = work / f"setup{index}" / "images"
    t0 = time.perf_counter()
    spec = chip_spec_for(setup, args.tiles, args.shape)[0]
    chip = render_foreign_chip(setup, tiles=args.tiles, shape=args.shape,
                               spec=cluttered(spec) if args.clutter else None)
    truth = {}
    for tile in chip.tiles:
        path = write_tile_file(tile, folder, setup)
        truth[path.name.split(".")[0]] = tile.flakes
    return folder, truth, time.perf_counter() - t0


def run_setup(index: int | str, setup: Any, args: argparse.Namespace, work: Path,
              rendered: tuple[Path, dict[str, Any], float] | None = None, detectors: list[str] | None = None,
              run_name: str = "run") -> dict[str, Any]:
    from flakehunter.candidates import read_candidates
    from flakehunter.registry import get_registry

    folder, truth, render_s = rendered or render_setup(index, setup, args, work)
    run = work / f"setup{index}" / run_name
    detectors = args.detectors if detectors is None else detectors
    cmd = detect_command(folder, run, setup, detectors, getattr(args, "oxide", "as-drawn"))
    t0 = time.perf_counter()
    env = dict(os.environ)
    if args.python_path:  # run another checkout's detector (its folder first on the import path)
        env["PYTHONPATH"] = os.pathsep.join([str(args.python_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # cwd outside the repository: `python -m` would import the package from the current folder first.
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    cli_s = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"setup {index}: detect exited {proc.returncode}: {proc.stderr.strip()[-500:]}", file=sys.stderr)
    candidates = read_candidates(run) if (run / "candidates.jsonl").exists() else []
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {}
    summary = manifest.get("summary", {})
    p = setup.pixel_size_um
    min_area = max(args.min_area_um2, args.min_area_px * p * p)
    material = get_registry().material(setup.material)
    metrics = score(candidates, truth, p, symmetry_deg=material.edge_symmetry_deg, min_area_um2=min_area)
    detect_s = float(summary.get("wall_s") or cli_s)
    return {
        "index": index,
        "detectors": ",".join(detectors) or "default",
        "seed": setup.seed,
        "summary": setup.summary(),
        "setup": setup.model_dump(mode="json"),
        "c1L": round(monolayer_contrast(setup), 4),
        "min_area_um2": round(min_area, 1),
        "command": " ".join(cmd[2:]),
        "exit_code": proc.returncode,
        "truth_flakes": metrics["truth_flakes"],
        "found": metrics["found"],
        "reported": metrics["reported"],
        "pooled": _counts(metrics),
        "recall": metrics["recall"],
        "precision": metrics["precision"],
        "layer_accuracy": metrics["layer_accuracy"],
        "axis_rms_deg": metrics["orientation_rms_deg"],
        "axis_reported": metrics["orientation_reported"],
        "axis_eligible": metrics["orientation_flakes"],
        "confusion": metrics["confusion"],
        "files_with_warnings": len(summary.get("files_with_warnings", [])),
        "render_s": round(render_s, 2),
        "detect_s": round(detect_s, 2),
        "tiles_per_s": round(args.tiles / detect_s, 2) if detect_s > 0 else math.nan,
        "calibration": manifest.get("calibration"),
    }


def _number(value: Any) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _counts(m: dict[str, Any]) -> dict[str, float]:
    """What pooling over setups needs: true flakes, found, 1-3L reports, correct ones, layer matches, axis errors."""
    found, reported, axis_n = _number(m["found"]), _number(m["reported"]), _number(m["orientation_reported"])
    rms = _number(m["orientation_rms_deg"])
    return {"truth": _number(m["truth_flakes"]), "found": found, "reported": reported,
            "correct": _number(m["precision"]) * reported, "layer_ok": _number(m["layer_accuracy"]) * found,
            "axis_n": axis_n, "axis_sq": rms * rms * axis_n}


def pooled(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Recall, precision, layer accuracy and axis RMS over all setups' flakes together."""
    if not rows:
        return {}
    total = {k: sum(r["pooled"][k] for r in rows) for k in rows[0]["pooled"]}
    return {
        "recall": total["found"] / total["truth"] if total["truth"] else math.nan,
        "precision": total["correct"] / total["reported"] if total["reported"] else math.nan,
        "layer_accuracy": total["layer_ok"] / total["found"] if total["found"] else math.nan,
        "axis_rms_deg": math.sqrt(total["axis_sq"] / total["axis_n"]) if total["axis_n"] else math.nan,
        "axis_given": total["axis_n"],
        "flakes": total["truth"],
    }


def _scored(row: dict[str, Any], metric: str) -> float:
    """A metric for the aggregate: nothing reported (or matched) on a setup that has targets scores 0."""
    value = row[metric]
    if metric == "axis_rms_deg" or not (isinstance(value, float) and math.isnan(value)):
        return value
    return 0.0 if row["truth_flakes"] else math.nan


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in METRICS:
        values = [(_scored(r, metric), r["index"]) for r in rows]
        values = [(v, i) for v, i in values if not math.isnan(v)]
        if not values:
            out[metric] = {"median": math.nan, "worst": math.nan, "worst_setup": None, "setups": 0}
            continue
        worst = max(values) if metric == "axis_rms_deg" else min(values)
        out[metric] = {"median": float(np.median([v for v, _ in values])), "worst": worst[0],
                       "worst_setup": worst[1], "setups": len(values)}
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def print_row(r: dict[str, Any], label: str = "") -> None:
    print(f"{r['index']:>7} {label}{r['summary']:<72} c1L {r['c1L']:+.3f} | truth {r['truth_flakes']:>3} "
          f"rec {_fmt(r['recall'])} prec {_fmt(r['precision'])} layer {_fmt(r['layer_accuracy'])} "
          f"axis {_fmt(r['axis_rms_deg'], 1)}° ({r['axis_reported']}/{r['axis_eligible']}) "
          f"{_fmt(r['tiles_per_s'], 1)} tiles/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="setup i is drawn from seed 1000 * SEED + i")
    parser.add_argument("--tiles", type=int, default=9, help="tiles per setup")
    parser.add_argument("--shape", default="1392x2048", help="tile ROWSxCOLS")
    parser.add_argument("--materials", default="graphene,mos2,wse2,mose2,ws2", help="materials to draw from")
    parser.add_argument("--detectors", default="", help="NAME[,NAME]: passed to detect as --detector NAME")
    parser.add_argument("--compare", default="",
                        help="CHAIN;CHAIN (each NAME[,NAME]): score several detector chains on the same images")
    parser.add_argument("--clutter", action="store_true",
                        help="cluttered chips: 4x residue, 3x dust and thick debris, 3 scratches, 70 %% terraces")
    parser.add_argument("--oxide", choices=("as-drawn", "stated", "unstated"), default="as-drawn",
                        help="the oxide told to detect: as each setup was drawn, always, or never (compare two runs)")
    parser.add_argument("--min-area-um2", type=float, default=50.0)
    parser.add_argument("--min-area-px", type=float, default=40.0, help="also at least this many pixels")
    parser.add_argument("--control", action="store_true",
                        help="first run the detector's own model as a setup (graphene, 90 nm, 1 µm/px); not aggregated")
    parser.add_argument("--python-path", type=Path,
                        help="put this folder first on the detector's import path (e.g. a snapshot of another commit)")
    parser.add_argument("--out", type=Path, help="keep images and runs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write results here (default: OUT/foreign_setups.json, "
                        "or ./foreign_setups.json without --out)")
    args = parser.parse_args()
    rows_cols = args.shape.lower().split("x")
    args.shape = (int(rows_cols[0]), int(rows_cols[1]))
    args.detectors = [d for d in args.detectors.split(",") if d]
    if args.out is not None:  # detect runs in the work folder: its paths must not depend on where that is
        args.out = args.out.resolve()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        from flakehunter.hardware.simulator.setup import control_setup, draw_setup

        control = None
        if args.control:
            control = run_setup("control", control_setup(seed=1000 * args.seed), args, work)
            print_row(control)
        if args.compare:
            compare(args, work, started)
            return
        rows = []
        for i in range(args.setups):
            setup = draw_setup(1000 * args.seed + i, materials=tuple(args.materials.split(",")))
            rows.append(run_setup(i, setup, args, work))
            print_row(rows[-1])
        agg = aggregate(rows)
        print(f"\n{args.setups} setups, {args.tiles} tiles of {args.shape[0]}x{args.shape[1]} px each, "
              f"1-3L flakes >= {args.min_area_um2:g} µm² and >= {args.min_area_px:g} px, "
              f"{time.perf_counter() - started:.0f} s")
        for metric, a in agg.items():
            print(f"  {metric:<15} median {_fmt(a['median'])}  worst {_fmt(a['worst'])} (setup {a['worst_setup']})")
        failed = [r["index"] for r in rows if r["exit_code"] != 0]
        if failed:
            print(f"  detect failed (exit code != 0) on setups {failed}: their metrics count as nothing found")
        result = {"args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                           if k not in ("out", "json")},
                  "aggregate": agg, "setups": rows, "control": control}
        path = args.json or (args.out / "foreign_setups.json" if args.out else Path("foreign_setups.json"))
        path.write_text(json.dumps(result, indent=1, default=str))
        print(f"JSON: {path}")


def compare(args: argparse.Namespace, work: Path, started: float) -> None:
    """Every chain of ``--compare`` on the same rendered setups; side-by-side aggregates and JSON."""
    from flakehunter.hardware.simulator.setup import draw_setup

    chains = [[d for d in chain.split(",") if d] for chain in args.compare.split(";") if chain.strip()]
    names = [",".join(c) for c in chains]
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for i in range(args.setups):
        setup = draw_setup(1000 * args.seed + i, materials=tuple(args.materials.split(",")))
        rendered = render_setup(i, setup, args, work)
        for k, (name, chain) in enumerate(zip(names, chains, strict=True)):
            rows[name].append(run_setup(i, setup, args, work, rendered, chain, run_name=f"run{k}"))
            print_row(rows[name][-1], label=f"[{k}] ")
    print(f"\n{args.setups} setups{' (cluttered)' if args.clutter else ''}, {args.tiles} tiles of "
          f"{args.shape[0]}x{args.shape[1]} px each, 1-3L flakes >= {args.min_area_um2:g} µm² and >= "
          f"{args.min_area_px:g} px, {time.perf_counter() - started:.0f} s")
    for k, n in enumerate(names):
        print(f"  [{k}] {n}")
    aggs = {n: aggregate(rows[n]) for n in names}
    pools = {n: pooled(rows[n]) for n in names}
    width = 12
    print(f"  {'':<24}" + "".join(f"{f'[{k}]':>{width}}" for k in range(len(names))))
    for metric in METRICS:
        for what in ("median", "worst"):
            print(f"  {metric + ' ' + what:<24}" + "".join(f"{_fmt(aggs[n][metric][what]):>{width}}" for n in names))
        print(f"  {metric + ' pooled':<24}" + "".join(f"{_fmt(pools[n][metric]):>{width}}" for n in names))
    print(f"  {'axis given (pooled)':<24}" + "".join(f"{pools[n]['axis_given']:>{width}.0f}" for n in names))
    speeds = {n: statistics.median([r["tiles_per_s"] for r in rows[n]]) for n in names}
    print(f"  {'tiles/s (median)':<24}" + "".join(f"{speeds[n]:>{width}.2f}" for n in names))
    result: dict[str, Any] = {
        "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                 if k not in ("out", "json")},
        "chains": {n: {"aggregate": aggs[n], "pooled": pools[n], "tiles_per_s_median": speeds[n], "setups": rows[n]}
                   for n in names},
    }
    path = args.json or (args.out / "foreign_setups.json" if args.out else Path("foreign_setups.json"))
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
