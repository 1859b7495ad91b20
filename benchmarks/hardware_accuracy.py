"""Measure what the hardware layer achieves on the simulator and the protocol emulators.

    .venv/bin/python benchmarks/hardware_accuracy.py [--seeds 1 2 3] [--quick]

1. Stage calibration: pixel size and rotation recovered from stage moves, for several true camera
   transforms and chip seeds (errors in % and degrees).
2. Autofocus focus map on tilted chips: |z − true focus| over every tile of a scan, and frames spent.
3. Serial drivers on their emulators: time per move beyond the move itself (protocol overhead).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flakehunter.acquisition.plan import make_plan
from flakehunter.config import parse_config
from flakehunter.errors import HardwareError
from flakehunter.hardware.simulator.chip import ChipLayout
from flakehunter.registry import get_registry
from flakehunter.scan import Scan
from flakehunter.stage_calibration import calibrate_stage, find_structure
from flakehunter.testing.emulators import emulated_stage
from flakehunter.tiles import read_geometry
from tests.conftest import SMALL_SCAN, deep_update

TRUTHS = [
    {"pixel_size_um": 1.17, "rotation_deg": 1.5},
    {"pixel_size_um": 1.13, "rotation_deg": -2.3, "flip_cols": True},
    {"pixel_size_um": 1.20, "rotation_deg": 0.4, "flip_rows": True},
    {"pixel_size_um": 0.58, "rotation_deg": 0.0},
    {"pixel_size_um": 1.15, "rotation_deg": 91.0},
]


def calibration(seeds: list[int]) -> None:
    print("1. stage calibration (300 x 400 px frames, 8 moves of a quarter of the field, as calibrate-stage)")
    print("   seed  true px  true rot  flips   |  px error %  rot error °  residual px  time s")
    for seed in seeds:
        for truth in TRUTHS:
            config = deep_update(SMALL_SCAN, {"seed": seed, "camera": {"options": {"shape": [300, 400], **truth}}})
            with tempfile.TemporaryDirectory() as tmp:
                plan = make_plan(parse_config(config), Path(tmp) / "c.yaml", get_registry())
                plan.stage.connect()
                plan.camera.connect()
                t0 = time.perf_counter()
                step = 0.25 * min(plan.fov_um)  # what calibrate-stage does by default
                spot = find_structure(plan.stage, plan.camera, (1000.0, 1000.0), max(plan.fov_um))
                r = calibrate_stage(plan.stage, plan.camera, spot, step)
                dt = time.perf_counter() - t0
            flips = ("r" if truth.get("flip_rows") else "-") + ("c" if truth.get("flip_cols") else "-")
            got = ("r" if r.flip_rows else "-") + ("c" if r.flip_cols else "-")
            print(f"   {seed:4d}  {truth['pixel_size_um']:7.3f}  {truth['rotation_deg']:8.2f}  {flips}->{got}  |"
                  f"  {100 * (r.pixel_size_um / truth['pixel_size_um'] - 1):+10.3f}"
                  f"  {r.rotation_deg - truth['rotation_deg']:+11.3f}  {r.residual_px:11.3f}  {dt:6.2f}")


def autofocus(seeds: list[int], tilts: list[float]) -> None:
    print("2. focus map (3 x 3 autofocus points, plane) on tilted chips; DOF = λ/NA² = 24.4 µm at NA 0.15")
    print("   seed  tilt µm/mm  metric      |  tiles  max |err| µm  rms µm  without AF max µm  frames  wall s")
    for seed in seeds:
        for tilt in tilts:
            for metric in ("tenengrad", "laplacian", "normalized_variance"):
                config = deep_update(SMALL_SCAN, {
                    "seed": seed,
                    "camera": {"options": {"shape": [200, 300], "chip": {"tilt_um_per_mm": tilt, "focus_z_um": 10}}},
                    "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [1500, 1500]}},
                    "focus": {"mode": "map", "z_um": 0, "range_um": 120, "coarse_step_um": 10, "fine_step_um": 2,
                              "backlash_um": 10, "metric": metric},
                })
                with tempfile.TemporaryDirectory() as tmp:
                    import yaml

                    path = Path(tmp) / "c.yaml"
                    path.write_text(yaml.safe_dump(config), encoding="utf-8")
                    runner = Scan(path, Path(tmp) / "run")
                    t0 = time.perf_counter()
                    try:
                        runner.run()
                    except HardwareError as exc:
                        print(f"   {seed:4d}  {tilt:10.1f}  {metric:10s}  |  refused: {str(exc)[:90]}...")
                        continue
                    dt = time.perf_counter() - t0
                    layout = ChipLayout.load_json(Path(tmp) / "run" / "truth.json")
                    err, without = [], []
                    for f in (Path(tmp) / "run" / "tiles").glob("*.tif"):
                        _, meta = read_geometry(f)
                        focus = float(layout.focus_z_um_at(meta.x_um, meta.y_um))
                        err.append(meta.z_um - focus)
                        without.append(abs(focus))
                    frames = 9 * 24
                e = np.abs(err)
                print(f"   {seed:4d}  {tilt:10.1f}  {metric:10s}  |  {len(e):5d}  {e.max():12.2f}"
                      f"  {np.sqrt(np.mean(np.square(err))):6.2f}  {max(without):17.1f}  {frames:6d}  {dt:6.1f}")


def drivers(moves: int) -> None:
    print(f"3. serial drivers on their emulators: {moves} moves of 200 µm (emulated axes at 200 000 units/s)")
    print("   driver  ms per move  of which motion ms  protocol overhead ms")
    for name in ("prior", "asi", "ludl", "tango"):
        with emulated_stage(name, settle_s=0.0) as (emulator, stage):
            times = []
            for i in range(moves):
                t0 = time.perf_counter()
                stage.move_to_um(200.0 * ((i + 1) % 2), 0.0, 0.0)
                times.append(time.perf_counter() - t0)
            units_per_s = emulator.axes["x"].speed
        mean = 1000 * statistics.mean(times)
        units_per_um = 1.0 if name == "tango" else stage.steps_per_um()[0]  # the Tango emulator counts in µm
        motion = 1000 * 200.0 * units_per_um / units_per_s
        print(f"   {name:6s}  {mean:11.1f}  {motion:18.1f}  {mean - motion:20.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--quick", action="store_true", help="one seed, one tilt, fewer moves")
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.quick else args.seeds
    calibration(seeds)
    autofocus(seeds, [25.0] if args.quick else [5.0, 25.0])
    drivers(20 if args.quick else 100)


if __name__ == "__main__":
    main()
