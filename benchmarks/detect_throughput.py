"""Detection throughput on 2048 x 1392 RGB tiles: `flakehunter detect` over a folder, as a user runs it.

    python benchmarks/detect_throughput.py [--tiles 16] [--repeat 3] [--python OTHER/.venv/bin/python ...]

Renders ``--tiles`` seeded tiles of a dense simulated graphene chip once (OME-TIFF with stage positions),
then times ``python -m flakehunter detect`` over them, calibration included, with each given Python (a
checkout's venv: compare two versions side by side, alternating runs so that the machine's load hits both
alike). Prints tiles/s and megapixels/s per interpreter (median of the repeats) and writes JSON.
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

SHAPE = (1392, 2048)
PIXEL_UM = 1.15


def render(folder: Path, count: int, seed: int) -> None:
    from flakehunter.geometry import PixelTransform
    from flakehunter.hardware.simulator.chip import ChipSpec
    from flakehunter.hardware.simulator.generate import generate_chip
    from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
    from flakehunter.registry import get_registry
    from flakehunter.tiles import write_tile

    fov = (SHAPE[1] * PIXEL_UM, SHAPE[0] * PIXEL_UM)
    cols = 4
    rows = -(-count // cols)
    spec = ChipSpec(origin_um=(0, 0), size_um=(cols * fov[0], rows * fov[1]), thin_flakes=40 * count,
                    thick_flakes=8 * count, multilayer_flakes=2 * count, residue_blobs=count, dust=5 * count)
    layout = generate_chip(spec, get_registry().material("graphene"), 90.0, seed=seed)
    scope = SimulatedMicroscope(layout, seed=seed, transform=PixelTransform(PIXEL_UM), shape=SHAPE)
    for n in range(count):
        x, y = (n % cols + 0.5) * fov[0], (n // cols + 0.5) * fov[1]
        write_tile(folder / f"tile_{n:03d}.ome.tif", scope.snap_at(x, y), pixel_size_um=PIXEL_UM, x_um=x, y_um=y,
                   z_um=0.0, provenance={"benchmark": "detect_throughput"})


def time_detect(python: str, tiles: Path, out: Path) -> float:
    start = time.perf_counter()
    # From a neutral folder: `python -m` puts the working directory first on the path.
    subprocess.run([python, "-m", "flakehunter", "detect", str(tiles), "--material", "graphene", "--oxide-nm", "90",
                    "--out", str(out)], check=True, capture_output=True, text=True, cwd=out.parent)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--python", nargs="+", default=[sys.executable], help="interpreters (checkouts) to compare")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tiles"
        folder.mkdir()
        render(folder, args.tiles, args.seed)
        seconds: dict[str, list[float]] = {p: [] for p in args.python}
        for r in range(args.repeat):
            for python in args.python:  # alternate, so that load changes hit every interpreter alike
                seconds[python].append(time_detect(python, folder, Path(tmp) / f"out-{r}-{len(seconds[python])}-"
                                                   f"{abs(hash(python))}"))
    megapixels = args.tiles * SHAPE[0] * SHAPE[1] / 1e6
    result = {}
    for python, times in seconds.items():
        median = statistics.median(times)
        result[python] = {"seconds": [round(t, 2) for t in times], "tiles_per_s": round(args.tiles / median, 2),
                          "megapixels_per_s": round(megapixels / median, 1)}
        print(f"{python}: {args.tiles} tiles of {SHAPE[1]}x{SHAPE[0]} in {median:.1f} s (median of {len(times)}): "
              f"{args.tiles / median:.2f} tiles/s, {megapixels / median:.1f} MP/s (calibration and start-up included)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
