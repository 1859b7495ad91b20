"""The contrast detector on the real micrographs in ../shared/data/real (no ground truth there).

    python benchmarks/real_images.py [--real ../shared/data/real]

RWTH graphene (8 JPEGs, 20x, 0.3844 µm/px, 90 nm SiO2): candidates with the lab's measured contrast
profile (`calibrate --from-gmm`) and with self-calibration alone, and how far the two agree (same image,
centres within 15 px, same layer count). MaskTerial thin hBN (10 JPEGs, ~0.37 µm/px, oxide not given):
what self-calibration concludes and how many candidates are reported. The README's real-image numbers
come from this script.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "flakehunter", *args], check=True, capture_output=True, text=True)


def candidates(out: Path) -> list[dict[str, str]]:
    with open(out / "candidates.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def calibration(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["calibration"]["detectors"][0]


def agreement(reference: list[dict[str, str]], other: list[dict[str, str]], radius_px: float = 15.0) -> tuple[int, int]:
    """(candidates of ``other`` at a reference candidate, of which with the same layer count)."""
    used: set[int] = set()
    matched = same = 0
    for a in reference:
        near = [
            (math.hypot(float(a["row"]) - float(b["row"]), float(a["col"]) - float(b["col"])), j)
            for j, b in enumerate(other) if j not in used and b["image"] == a["image"]
        ]
        near = [(d, j) for d, j in near if d < radius_px]
        if near:
            _, j = min(near)
            used.add(j)
            matched += 1
            same += other[j]["layer_class"] == a["layer_class"]
    return matched, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    args = parser.parse_args()
    real = args.real.resolve()
    if not real.is_dir():
        sys.exit(f"{real}: no real images here (pass --real)")
    with tempfile.TemporaryDirectory(prefix="fh-real-") as tmp:
        work = Path(tmp)
        profile = work / "rwth-graphene.json"
        cli("calibrate", "--material", "graphene", "--from-gmm",
            str(real / "calibration-rwth" / "GMM_Parameters__graphene_90nm.json"), "--out", str(profile))
        graphene = [str(real / "graphene-90nm-20x"), "--material", "graphene", "--pixel-size-um", "0.3844"]
        cli("detect", *graphene, "--profile", str(profile), "--out", str(work / "profile"))
        cli("detect", *graphene, "--out", str(work / "self"))
        cli("detect", str(real / "maskterial-demo" / "hBN_Thin"), "--material", "hbn", "--pixel-size-um", "0.37",
            "--out", str(work / "hbn"))
        with_profile, alone, hbn = (candidates(work / d) for d in ("profile", "self", "hbn"))
        matched, same = agreement(with_profile, alone)
        cal, hbn_cal = calibration(work / "self"), calibration(work / "hbn")
    counts = Counter(c["layer_class"] for c in with_profile)
    print(f"RWTH graphene, RWTH profile:      {len(with_profile)} candidates "
          f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    print(f"RWTH graphene, self-calibration:  {len(alone)} candidates ({cal['method']}, {cal['oxide_nm']} nm); "
          f"{matched} at a profile candidate, {same} of those with the same layer count")
    print(f"MaskTerial thin hBN:              {len(hbn)} candidates; calibration {hbn_cal['method']}"
          f"{': ' + hbn_cal['note'] if hbn_cal.get('note') else ''}")


if __name__ == "__main__":
    main()
