"""End-to-end scan time against the hardware's own time, and memory against the number of tiles.

    python benchmarks/scan_overhead.py overhead [--rows 6 --cols 8] [--threads N]   # realistic timing
    python benchmarks/scan_overhead.py memory [--tiles 100 1000]      # peak RSS for 100 versus 1000 tiles
    python benchmarks/scan_overhead.py startup                         # `scan --dry-run` start-up time

**overhead**: a chip is recorded once (simulator, instant stage), then scanned again through the replay
camera under a stage that moves at 40 mm/s with 62 mm/s² acceleration and settles 50 ms, and a camera
that exposes 20 ms: what a real stop-and-go scan costs, without the simulator's rendering. The hardware
time is the sum over tiles of the planned move, the settle and the exposure; the overhead is how much
longer the whole scan takes, start (devices, calibration) and end (the last tile's analysis) included.

**memory**: scans of ``N`` small tiles with an instant stage; the process's peak RSS (VmHWM) per N, and what
generating that simulated chip alone adds to a process (the simulator keeps its chip in the scanning process);
then the same tiles scanned again through the replay camera, which reads them from the first run's folder, so
that the peak is flakehunter's own, as with a real camera.
Each prints one summary line and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
FLAKEHUNTER = [sys.executable, "-m", "flakehunter"]
SHAPE = [1392, 2048]
PIXEL_UM = 1.15
REALISTIC_STAGE = {"speed_um_s": 40000.0, "acceleration_um_s2": 62000.0, "settle_s": 0.05}
EXPOSURE_MS = 20.0


def config(rows: int, cols: int, shape: list[int], stage: dict[str, Any], camera: dict[str, Any]) -> dict[str, Any]:
    fov = (shape[1] * PIXEL_UM, shape[0] * PIXEL_UM)
    size = (cols * fov[0] * 0.9 + 0.1 * fov[0], rows * fov[1] * 0.9 + 0.1 * fov[1])
    return {
        "name": "overhead",
        "seed": 5,
        "stage": {"plugin": "simulator", "limits_um": {"x_um": [-5000, 60000], "y_um": [-5000, 60000]},
                  "options": stage},
        "camera": camera,
        "optics": {"pixel_size_um": PIXEL_UM},
        "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": list(size)}},
        "overlap_percent": 10,
        "material": {"name": "graphene", "oxide_nm": 90},
        "budget": {"max_tiles": 100_000},
    }


def simulated_camera(shape: list[int], size_um: tuple[float, float], density: float) -> dict[str, Any]:
    area_mm2 = size_um[0] * size_um[1] / 1e6
    return {"plugin": "simulator", "options": {"shape": shape, "chip": {
        "origin_um": [0, 0], "size_um": list(size_um), "thin_flakes": int(density * area_mm2),
        "thick_flakes": int(density * area_mm2 / 4), "dust": int(density * area_mm2), "residue_blobs": 4}}}


def scan(data: dict[str, Any], work: Path, name: str) -> tuple[Path, float, float]:
    """Run ``flakehunter scan``; returns the run directory, its wall time and the process's peak RSS (MiB)."""
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    run_dir = work / name
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *FLAKEHUNTER, "scan", str(path), "--out", str(run_dir),
                           "--no-progress"], capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"scan {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
    rss_mib = int(proc.stderr.strip().splitlines()[-1]) / 1024
    return run_dir, wall, rss_mib


def hardware_s(run_dir: Path) -> float:
    """Σ planned move + settle + exposure, from the manifest's plan and the stage's motion model."""
    import math

    manifest = json.loads((run_dir / "manifest.json").read_text())
    items = manifest["items"]
    speed, accel = REALISTIC_STAGE["speed_um_s"], REALISTIC_STAGE["acceleration_um_s2"]

    def axis(d: float) -> float:
        d = abs(d)
        if d == 0:
            return 0.0
        ramp = speed * speed / accel
        return 2 * math.sqrt(d / accel) if d <= ramp else 2 * speed / accel + (d - ramp) / speed

    total, here = 0.0, (0.0, 0.0)
    for item in items:
        there = (item["x_um"], item["y_um"])
        total += max(axis(there[0] - here[0]), axis(there[1] - here[1])) + REALISTIC_STAGE["settle_s"]
        total += EXPOSURE_MS / 1000
        here = there
    return total


def overhead(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    fov = (SHAPE[1] * PIXEL_UM, SHAPE[0] * PIXEL_UM)
    size = (args.cols * fov[0] * 0.9 + 0.1 * fov[0], args.rows * fov[1] * 0.9 + 0.1 * fov[1])
    record = config(args.rows, args.cols, SHAPE, {"time_scale": 0}, simulated_camera(SHAPE, size, 40))
    recorded, _, _ = scan(record, work, "recorded")
    replay = config(args.rows, args.cols, SHAPE, REALISTIC_STAGE, {
        "plugin": "replay", "options": {"source": str(recorded), "exposure_ms": EXPOSURE_MS}})
    if args.threads is not None:  # the contrast detector's `threads:` option (default 1)
        replay["detectors"] = [{"name": "contrast", "options": {"threads": args.threads}}]
    run_dir, wall, rss = scan(replay, work, "replayed")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    hw = hardware_s(run_dir)
    scan_wall = manifest["summary"]["wall_s"]
    return {"tiles": manifest["summary"]["items_total"], "hardware_s": round(hw, 2), "scan_wall_s": scan_wall,
            "process_wall_s": round(wall, 2), "overhead_percent": round(100 * (scan_wall - hw) / hw, 1),
            "process_overhead_percent": round(100 * (wall - hw) / hw, 1), "peak_rss_mib": round(rss, 1),
            "candidates": manifest["summary"]["candidates"], "timings": manifest["summary"]["timings"]}


def memory(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    shape = [240, 320]
    out = {}
    for n in args.tiles:
        cols = max(1, round(n**0.5))
        rows = -(-n // cols)
        fov = (shape[1] * PIXEL_UM, shape[0] * PIXEL_UM)
        size = (cols * fov[0] * 0.9 + 0.1 * fov[0], rows * fov[1] * 0.9 + 0.1 * fov[1])
        data = config(rows, cols, shape, {"time_scale": 0}, simulated_camera(shape, size, 200))
        run_dir, wall, rss = scan(data, work, f"mem{n}")
        tiles = json.loads((run_dir / "manifest.json").read_text())["summary"]["items_total"]
        # The same tiles again through the replay camera: no simulated chip in the process, as with a real camera.
        replay = config(rows, cols, shape, {"time_scale": 0}, {"plugin": "replay", "options": {"source": str(run_dir)}})
        _, replay_wall, replay_rss = scan(replay, work, f"replay{n}")
        out[str(n)] = {"tiles": tiles, "peak_rss_mib": round(rss, 1), "wall_s": round(wall, 1),
                       "simulated_chip_mib": round(chip_mib(data["camera"]["options"]["chip"]), 1),
                       "replayed_peak_rss_mib": round(replay_rss, 1), "replayed_wall_s": round(replay_wall, 1)}
    return out


# The simulated chip lives in the scanning process (a real camera's chip does not): how much of the peak it is.
CHIP_RSS = """
import json, resource, sys
from flakehunter.hardware.simulator.chip import ChipSpec
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.registry import get_registry
material = get_registry().material("graphene")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
generate_chip(ChipSpec(**json.loads(sys.argv[1])), material, 90.0, seed=0)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def chip_mib(chip: dict[str, Any]) -> float:
    """Peak memory that generating the simulated chip alone adds to a process, MiB."""
    proc = subprocess.run([sys.executable, "-c", CHIP_RSS, json.dumps(chip)], capture_output=True, text=True,
                          check=True)
    return float(proc.stdout.strip())


def startup(work: Path) -> dict[str, Any]:
    demo = REPO / "configs" / "demo.yaml"
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([*FLAKEHUNTER, "scan", str(demo), "--dry-run"], check=True, capture_output=True, cwd=work)
        times.append(time.perf_counter() - start)
    return {"dry_run_s_median": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["overhead", "memory", "startup"])
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--tiles", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--threads", type=int, default=None, help="overhead: the contrast detector's threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.what == "overhead":
            result = overhead(args, work)
            print(f"{result['tiles']} tiles: hardware {result['hardware_s']} s, scan {result['scan_wall_s']} s "
                  f"-> overhead {result['overhead_percent']} % ({result['process_overhead_percent']} % with process "
                  f"start-up); peak RSS {result['peak_rss_mib']} MiB")
        elif args.what == "memory":
            result = memory(args, work)
            print("peak RSS: " + ", ".join(f"{v['tiles']} tiles {v['peak_rss_mib']} MiB (the simulated chip alone "
                                           f"{v['simulated_chip_mib']} MiB)" for v in result.values()))
            first, *_, last = result.values()
            print("replayed through the replay camera (no simulator in the process): " + ", ".join(
                f"{v['tiles']} tiles {v['replayed_peak_rss_mib']} MiB" for v in result.values())
                + f" ({100 * (last['replayed_peak_rss_mib'] / first['replayed_peak_rss_mib'] - 1):+.1f} %)")
        else:
            result = startup(work)
            print(f"scan --dry-run of configs/demo.yaml: {result['dry_run_s_median']} s (median of 5)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
