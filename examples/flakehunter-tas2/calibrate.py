"""Calibrate the contrast detector for TaS2 two ways, with ``flakehunter calibrate``:

1. from the RWTH 2DMatGMM parameters of TaS2 on 90 nm SiO2 (``--from-gmm``): the profile of *their*
   microscope, for images taken there (needs ``../shared/data/real/calibration-rwth/``; skipped without it);
2. from three labelled images of the simulated microscope (a seeded TaS2 chip rendered by flakehunter's
   simulator, label image = layer count per pixel): the profile for ``scan.yaml``'s simulated scans.

It then prints, per layer count, the RGB contrast of each profile beside the thin-film model of the
material's literature index on 90 nm SiO2, so that the three can be compared. Run it with a Python in which
flakehunter-tas2 is installed::

    pip install -e examples/flakehunter-tas2
    python examples/flakehunter-tas2/calibrate.py --out tas2-calibration

Writes OUT/sim-tas2-90nm.json (and OUT/rwth-tas2-90nm.json), OUT/images/ (the labelled frames) and
OUT/calibration.json (the comparison). The package ships the simulator profile this writes as
``flakehunter_tas2/profiles/sim-tas2-90nm.json`` (copy it there after a change to the simulator).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RWTH = HERE.parents[2] / "shared" / "data" / "real" / "calibration-rwth" / "GMM_Parameters__tas2_90nm.json"
OXIDE_NM = 90.0
CHIP_SEED = 100  # the calibration chip; scan.yaml and the benchmark scan other seeds
SHAPE = (400, 600)


def flakehunter(*args: str, cwd: Path | None = None) -> str:
    """Run ``flakehunter ARGS`` with this Python (in ``cwd``); its output, or SystemExit with its error."""
    result = subprocess.run([sys.executable, "-m", "flakehunter", *args], capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise SystemExit(f"flakehunter {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def labelled_frames(out: Path, count: int = 3) -> tuple[list[Path], list[Path]]:
    """``count`` simulated frames of a seeded TaS2 chip, each with its label image, where thin flakes are many."""
    import numpy as np
    import tifffile

    from flakehunter.testing.simulated import SimulatedScope

    chip = {"size_um": [2000.0, 2000.0], "thin_flakes": 120, "thick_flakes": 25, "multilayer_flakes": 8,
            "residue_blobs": 8, "dust": 40, "min_spacing_um": 12, "thin_layer_weights": {1: 0.4, 2: 0.35, 3: 0.25},
            "oxide_jitter_nm": 0.0}  # a batch of chips cut from one wafer: scan.yaml's chips have this oxide
    scope = SimulatedScope("tas2", oxide_nm=OXIDE_NM, seed=CHIP_SEED, chip=chip, shape=SHAPE)
    half_w, half_h = SHAPE[1] * 1.15 / 2, SHAPE[0] * 1.15 / 2
    centres = [(x, y) for x in np.arange(half_w, 2000 - half_w + 1, 2 * half_w)
               for y in np.arange(half_h, 2000 - half_h + 1, 2 * half_h)]

    def thin_pixels(centre: tuple[float, float]) -> int:
        labels = scope.label_image_at(*centre)
        return int(np.count_nonzero((labels >= 1) & (labels <= 3)))

    best = sorted(centres, key=thin_pixels, reverse=True)[:count]
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for k, (x, y) in enumerate(best):
        images.append(folder / f"sim{k}.tif")
        labels.append(folder / f"sim{k}_label.tif")
        tifffile.imwrite(images[-1], scope.snap_at(x, y), photometric="rgb")
        tifffile.imwrite(labels[-1], scope.label_image_at(x, y))
    return images, labels


def compare(profiles: dict[str, Path]) -> dict[str, Any]:
    """Per layer count: (R, G, B) contrast of each profile and of the thin-film model at 90 nm."""
    from flakehunter.optics import layer_contrast
    from flakehunter.registry import get_registry

    material = get_registry().material("tas2")
    table: dict[str, Any] = {}
    for n in range(1, 5):
        row = {"model_90nm": [round(float(v), 3) for v in layer_contrast(material, n, OXIDE_NM)]}
        for name, path in profiles.items():
            layers = json.loads(path.read_text(encoding="utf-8"))["layers"]
            if str(n) in layers:
                row[name] = [round(v, 3) for v in layers[str(n)]["mean"]]
        table[f"{n}L"] = row
    return table


def literature_vs_rwth(gmm: Path) -> dict[str, Any]:
    """How far the thin-film model of the literature index is from the RWTH classes 1-4 (rms over R, G, B and the
    four classes): at 90 nm and 0.605 nm per layer; at the best oxide (70-110 nm) and layer thickness
    (0.3-3 nm); and, as a control of the camera model, graphene against RWTH's graphene classes."""
    import numpy as np

    from flakehunter.optics import DEFAULT_CAMERA, layer_contrast, rgb_contrast
    from flakehunter.registry import get_registry

    def classes(path: Path) -> np.ndarray:
        data = json.loads(path.read_text(encoding="utf-8"))
        return np.array([[data[n]["contrast"][c] for c in "rgb"] for n in "1234"])

    def rms(a: np.ndarray, b: np.ndarray) -> float:
        return round(float(np.sqrt(np.mean((a - b) ** 2))), 3)

    registry = get_registry()
    measured = classes(gmm)
    tas2 = registry.material("tas2")
    at_90 = np.array([layer_contrast(tas2, n, OXIDE_NM) for n in range(1, 5)])
    index = tas2.index(DEFAULT_CAMERA.wavelengths_nm, 1)
    fits = [(rms(np.array([rgb_contrast([(index, t * n)], ox, DEFAULT_CAMERA) for n in range(1, 5)]), measured), ox, t)
            for ox in np.arange(70.0, 110.5, 2.0) for t in np.arange(0.3, 3.01, 0.1)]
    best = min(fits)
    best_fit = {"rms": best[0], "oxide_nm": float(best[1]), "layer_nm": round(float(best[2]), 2)}
    out: dict[str, Any] = {"tas2_rms_at_90nm": rms(at_90, measured), "tas2_best_fit": best_fit}
    graphene = gmm.with_name("GMM_Parameters__graphene_90nm.json")
    if graphene.is_file():
        model = np.array([layer_contrast(registry.material("graphene"), n, OXIDE_NM) for n in range(1, 5)])
        out["graphene_rms_at_90nm"] = rms(model, classes(graphene))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tas2-calibration"),
                        help="folder for the profiles, the labelled images and calibration.json")
    parser.add_argument("--rwth", type=Path, default=RWTH, help="2DMatGMM parameter file of TaS2 on 90 nm SiO2")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, Path] = {}
    if args.rwth.is_file():
        profiles["rwth"] = out / "rwth-tas2-90nm.json"
        print(flakehunter("calibrate", "--material", "tas2", "--from-gmm", str(args.rwth), "--out",
                          str(profiles["rwth"])))
    else:
        print(f"no RWTH parameters at {args.rwth}: skipping the --from-gmm profile")
    images, labels = labelled_frames(out)
    profiles["simulator"] = out / "sim-tas2-90nm.json"
    relative = [str(p.relative_to(out)) for p in (*images, *labels)]  # the profile records these names
    print(flakehunter("calibrate", "--material", "tas2", *relative[: len(images)], "--labels",
                      *relative[len(images):], "--oxide-nm", str(OXIDE_NM), "--out", profiles["simulator"].name,
                      cwd=out))
    table = compare(profiles)
    print("RGB contrast per layer count (R, G, B):")
    for layers, row in table.items():
        print(f"  {layers}: " + "; ".join(f"{k} {tuple(v)}" for k, v in row.items()))
    if args.rwth.is_file():
        table["literature_vs_rwth"] = literature_vs_rwth(args.rwth)
        print(f"literature index vs RWTH classes 1-4: {table['literature_vs_rwth']}")
    (out / "calibration.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
