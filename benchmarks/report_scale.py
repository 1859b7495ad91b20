"""How long the report of a large run takes to write, and how big it is.

    python benchmarks/report_scale.py                          # 1,000 tiles, 3 candidates each
    python benchmarks/report_scale.py --tiles 200 --json r.json
    python benchmarks/report_scale.py --tile 1024x1536         # bigger frames (more to read and shrink)

A synthetic scan run is written quickly: ``--tiles`` OME-TIFF tiles on a grid with 10 % overlap (noise
over a smooth vignetting, with a few dark "flakes"), each carrying its stage position and pixel size in
the OME metadata as flakehunter's tiles do, a ``manifest.json`` in the run-manifest schema, and a
``candidates.jsonl`` with ``--per-tile`` candidates per tile at random places. Then ``flakehunter
report RUN_DIR`` runs in a fresh process; its wall time, the size of ``report/`` and the process's peak
RSS (VmHWM) are printed as one summary line (and written as JSON with ``--json``).

The issue's bound: a 1,000-tile run's report in under 30 s and under 50 MB. Exit code 0 when both hold.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PIXEL_UM = 1.15
CLASSES = [("1L", 1), ("2L", 2), ("3L", 3), ("few", None), ("bulk", None)]


def make_run(run: Path, tiles: int, shape: tuple[int, int], per_tile: int, seed: int = 0) -> dict[str, Any]:
    """Write a synthetic scan run directory; returns what was written."""
    import tifffile

    from flakehunter.candidates import Candidate
    from flakehunter.geometry import PixelTransform
    from flakehunter.run import manifest as run_manifest
    from flakehunter.run.layout import RunDirectory

    rng = np.random.default_rng(seed)
    rd = RunDirectory(run)
    rd.tiles.mkdir(parents=True)
    rows, cols = shape
    grid_cols = math.ceil(math.sqrt(tiles * rows / cols))
    step_x, step_y = 0.9 * cols * PIXEL_UM, 0.9 * rows * PIXEL_UM
    transform = PixelTransform(PIXEL_UM)
    r, c = np.mgrid[0:rows, 0:cols]
    vignette = 1 - 0.25 * (((r - rows / 2) / rows) ** 2 + ((c - cols / 2) / cols) ** 2)
    base = (150 * vignette)[:, :, None] * np.array([0.95, 0.9, 1.0])
    noise = [rng.normal(0, 4, (rows, cols, 3)) for _ in range(8)]  # reused: generating noise is the slow part
    items, candidates = [], []
    t0 = time.perf_counter()
    for i in range(tiles):
        gr, gc = divmod(i, grid_cols)
        x, y = 1000 + gc * step_x, 1000 + gr * step_y
        image = base + noise[i % len(noise)]
        spots = []
        for _ in range(per_tile):
            pr, pc = rng.uniform(0.1, 0.9) * rows, rng.uniform(0.1, 0.9) * cols
            radius = rng.uniform(3, 20)
            image[(r - pr) ** 2 + (c - pc) ** 2 <= radius**2] *= 0.85
            spots.append((pr, pc, radius))
        name = f"tile_{i:05d}_r{gr:03d}_c{gc:03d}.ome.tif"
        metadata = {"axes": "YXS", "PhysicalSizeX": PIXEL_UM, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": PIXEL_UM,
                    "PhysicalSizeYUnit": "µm",
                    "Plane": {"PositionX": [x], "PositionXUnit": ["µm"], "PositionY": [y], "PositionYUnit": ["µm"]}}
        tifffile.imwrite(rd.tiles / name, np.clip(image, 0, 255).astype(np.uint8), photometric="rgb",
                         metadata=metadata, ome=True)
        key = f"tiles/{name}"
        items.append({"key": key, "file": key, "status": "done", "index": i, "grid_row": gr, "grid_col": gc,
                      "x_um": x, "y_um": y, "z_um": 0.0, "stage_um": [x, y, 0.0], "pixel_size_um": PIXEL_UM,
                      "candidates": per_tile, "warnings": ["out of focus"] if i % 97 == 5 else None})
        for pr, pc, radius in spots:
            sx, sy = transform.pixel_to_stage(pr, pc, (x, y), shape)
            cls, layers = CLASSES[int(rng.integers(len(CLASSES)))]
            candidates.append(Candidate(
                id=len(candidates) + 1, x_um=float(sx), y_um=float(sy), material="graphene", layers=layers,
                layer_class=cls, score=float(rng.uniform(0.2, 1.0)), area_um2=math.pi * (radius * PIXEL_UM) ** 2,
                orientation_deg=float(rng.uniform(0, 30)) if rng.random() < 0.6 else None, image=key, row=pr,
                col=pc, z_um=0.0, tile=i, contrast_r=-0.15, contrast_g=-0.15, contrast_b=-0.15))
    with open(rd.candidates_jsonl, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(c.to_record()) + "\n" for c in candidates)
    write_s = time.perf_counter() - t0
    summary = run_manifest.summarize(items, items_total=tiles, statuses=("planned", "acquired", "done", "failed"),
                                     candidates=len(candidates), duplicates_dropped=0, wall_s=3600.0,
                                     timings={"acquire_s": 2400.0, "detect_s": 1800.0})
    head = run_manifest.header(
        kind="scan", run_id="benchmark", status="completed", created=run_manifest.now_iso(), config={},
        inputs={"plan": {"tiles": tiles, "camera_shape": list(shape), "pixel_size_um": PIXEL_UM}},
        plugins={}, calibration={"material": "graphene", "nominal_oxide_nm": 90.0,
                                 "transform": {"pixel_size_um": PIXEL_UM, "rotation_deg": 0.0, "flip_rows": False,
                                               "flip_cols": False}, "detectors": []},
        summary=summary, versions=run_manifest.versions())
    run_manifest.write_manifest(rd.manifest, head, items)
    return {"tiles": tiles, "tile_shape": list(shape), "candidates": len(candidates), "write_s": round(write_s, 1)}


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a running process (Linux /proc), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--tile", default="256x384", help="ROWSxCOLS of each tile (default 256x384)")
    parser.add_argument("--per-tile", type=int, default=3, help="candidates per tile")
    parser.add_argument("--max-s", type=float, default=30.0)
    parser.add_argument("--max-mb", type=float, default=50.0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--keep", type=Path, help="build the run here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.tile.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="fh-report-scale-") as tmp:
        run = args.keep or Path(tmp) / "run"
        made = make_run(run, args.tiles, (shape[0], shape[1]), args.per_tile)
        t0 = time.perf_counter()
        with subprocess.Popen([sys.executable, "-m", "flakehunter", "report", str(run)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}) as proc:
            peak_mb = 0.0
            while proc.poll() is None:  # the report process's own peak (VmHWM), read until it is gone
                peak_mb = max(peak_mb, vm_hwm_mb(proc.pid))
                time.sleep(0.05)
            output = proc.stdout.read() if proc.stdout else ""
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(output, file=sys.stderr)
            return 1
        size_mb = folder_bytes(run / "report") / 1e6
        crops = len(list((run / "report" / "crops").glob("*.jpg")))
        overview = json.loads((run / "report" / "overview.json").read_text())["shape"]
    numbers = {**made, "report_s": round(wall, 1), "report_mb": round(size_mb, 1), "crops": crops,
               "overview_px": overview, "peak_rss_mb": round(peak_mb), "cpus": os.cpu_count(),
               "max_s": args.max_s, "max_mb": args.max_mb,
               "ok": wall < args.max_s and size_mb < args.max_mb and crops == made["candidates"]}
    print(f"report of {made['tiles']} tiles ({shape[0]}x{shape[1]} px), {made['candidates']} candidates: "
          f"{wall:.1f} s, {size_mb:.1f} MB ({crops} crops, overview {overview[1]}x{overview[0]} px), "
          f"peak RSS {peak_mb:.0f} MB on {os.cpu_count()} CPUs -> {'OK' if numbers['ok'] else 'OVER BUDGET'} "
          f"(bounds {args.max_s:g} s, {args.max_mb:g} MB)")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    return 0 if numbers["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
