"""Accuracy and speed of a simulated scan against the simulator's ground truth.

    python benchmarks/scan_accuracy.py                       # the demo chip (configs/demo.yaml)
    python benchmarks/scan_accuracy.py CONFIG [--seeds 7 8 9]  # other configs or chips

Each seed runs ``flakehunter scan`` into a fresh run directory (the config's seed is replaced),
then scores candidates against truth.json: recall of 1–2L and 1–3L flakes of at least 50 µm²,
precision of reported 1–3L candidates (within 3 µm of a real 1–3L flake), layer accuracy among
matched candidates, duplicates and position error; and the scan's wall time and tiles/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from flakehunter.candidates import read_candidates
from flakehunter.detection.evaluation import load_truth, match, summarize

REPO = Path(__file__).resolve().parents[1]


def run_one(config: Path, seed: int, work: Path) -> dict:
    data = yaml.safe_load(config.read_text())
    data["seed"] = seed
    cfg = work / f"seed{seed}.yaml"
    cfg.write_text(yaml.safe_dump(data))
    run_dir = work / f"run{seed}"
    subprocess.run(
        [sys.executable, "-m", "flakehunter", "scan", str(cfg), "--out", str(run_dir), "--no-progress"],
        check=True, cwd=REPO, stdout=subprocess.DEVNULL,
    )
    manifest = json.loads((run_dir / "manifest.json").read_text())
    m = match(read_candidates(run_dir), load_truth(run_dir / "truth.json"), tolerance_um=3.0)
    s12 = summarize(m, layers=(1, 2), min_area_um2=50)
    s13 = summarize(m, layers=(1, 2, 3), min_area_um2=50)
    tiles = manifest["summary"]["tiles_total"]
    return {
        "seed": seed,
        "tiles": tiles,
        "flakes_1_2L": s12["truth_flakes"],
        "flakes_1_3L": s13["truth_flakes"],
        "recall_1_2L": s12["recall"],
        "recall_1_3L": s13["recall"],
        "precision_1_3L": s13["precision"],
        "layer_accuracy": s13["layer_accuracy"],
        "duplicates": s13["duplicates"],
        "position_error_um": s13["position_error_um"],
        "wall_s": manifest["summary"]["wall_s"],
        "tiles_per_s": tiles / manifest["summary"]["wall_s"],
        "detect_tiles_per_s": tiles / manifest["summary"]["detect_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows.append(run_one(args.config, seed, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    keys = [k for k in rows[0] if k != "seed"]
    print("\n| metric | " + " | ".join(f"seed {r['seed']}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in keys:
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for r in rows]
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
