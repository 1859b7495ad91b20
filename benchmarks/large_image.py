"""Peak memory of `flakehunter detect` on one large RGB TIFF, by side length: it must not grow with the image.

    python benchmarks/large_image.py [--sizes 6000 12000 18000] [--compression none zlib] [--json FILE]

Each image is an N x N RGB TIFF (uint8) made by repeating one simulated 2000 x 2000 px field of a graphene
chip (1.15 µm/px, 90 nm oxide; no vignetting, as in a stitched image of flat-field-corrected fields), written
as most stitching software writes it (uncompressed, one strip) or zlib-compressed in strips.
`flakehunter detect` runs on it in a fresh process (report and overlays on) and `/usr/bin/time` gives its
peak RSS. The candidates must scale with the number of repeats of the field, so the windows do not lose
flakes; each line prints both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

FIELD_PX = 2000
PIXEL_UM = 1.15


def field() -> np.ndarray:
    from flakehunter.geometry import PixelTransform
    from flakehunter.hardware.simulator.chip import ChipSpec
    from flakehunter.hardware.simulator.generate import generate_chip
    from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
    from flakehunter.registry import get_registry

    side_um = FIELD_PX * PIXEL_UM
    spec = ChipSpec(origin_um=(0, 0), size_um=(side_um, side_um), thin_flakes=60, thick_flakes=12, dust=20,
                    residue_blobs=2, min_spacing_um=25)
    layout = generate_chip(spec, get_registry().material("graphene"), 90.0, seed=11)
    # no vignetting: a stitched image is made of flat-field-corrected fields
    scope = SimulatedMicroscope(layout, seed=11, transform=PixelTransform(PIXEL_UM), shape=(FIELD_PX, FIELD_PX),
                                vignetting_a=0.0, vignetting_b=0.0)
    return np.asarray(scope.snap_at(side_um / 2, side_um / 2), np.uint8)


def write_mosaic(path: Path, tile: np.ndarray, side: int, compression: str) -> None:
    """An N x N image of ``tile`` repeated (built in this process; only the detecting process is measured)."""
    reps = -(-side // tile.shape[0])
    image = np.tile(tile, (reps, reps, 1))[:side, :side]
    extra = {} if compression == "none" else {"compression": compression, "rowsperstrip": 64}
    tifffile.imwrite(path, image, photometric="rgb", resolution=(1e4 / PIXEL_UM, 1e4 / PIXEL_UM),
                     resolutionunit="CENTIMETER", **extra)


def detect(path: Path, out: Path) -> tuple[float, float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "flakehunter", "detect", str(path), "--material",
         "graphene", "--oxide-nm", "90", "--pixel-size-um", str(PIXEL_UM), "--out", str(out), "--overlays"],
        capture_output=True, text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"detect {path.name} failed: {proc.stderr.strip().splitlines()[-2:]}")
    rss_mib = int(proc.stderr.strip().splitlines()[-1]) / 1024
    candidates = json.loads((out / "manifest.json").read_text())["summary"]["candidates"]
    return rss_mib, wall, int(candidates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6000, 12000, 18000])
    parser.add_argument("--compression", nargs="+", default=["none"], choices=["none", "zlib"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tile = field()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for compression in args.compression:
            for side in args.sizes:
                path = work / f"mosaic_{side}_{compression}.tif"
                write_mosaic(path, tile, side, compression)
                rss, wall, found = detect(path, work / f"run_{side}_{compression}")
                fields = side * side / FIELD_PX**2
                results.append({"side_px": side, "compression": compression, "megapixels": side * side / 1e6,
                                "peak_rss_mib": round(rss, 1), "wall_s": round(wall, 1), "candidates": found,
                                "candidates_per_field": round(found / fields, 1)})
                path.unlink()
                print(f"{side} x {side} ({compression}): peak RSS {rss:.0f} MiB, {wall:.0f} s, {found} candidates "
                      f"({found / fields:.1f} per {FIELD_PX} px field)", flush=True)
    peaks = [r["peak_rss_mib"] for r in results]
    print(f"summary: peak RSS {min(peaks):.0f}-{max(peaks):.0f} MiB for "
          f"{min(args.sizes)}-{max(args.sizes)} px square RGB TIFFs ({max(peaks) / min(peaks):.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
