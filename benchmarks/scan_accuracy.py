"""Accuracy and speed of the demo scan against the simulator's ground truth.

    python benchmarks/scan_accuracy.py                         # the demo chip (configs/demo.yaml)
    python benchmarks/scan_accuracy.py CONFIG [--seeds 7 8 9]  # other configs or chips

Each seed runs ``flakehunter scan`` into a fresh run directory (the config's seed is replaced) and
scores it with ``flakehunter evaluate``: recall of 1–2L and 1–3L flakes of at least 50 µm²,
precision of reported 1–3L candidates (within 3 µm of a real 1–3L flake), layer accuracy among
matched candidates, duplicates, position error, crystal-axis error; and the scan's speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import yaml
from _simulated_scan import FLAKEHUNTER, REPO, print_table, scan_and_evaluate


def run_one(config: Path, seed: int, work: Path) -> dict:
    data = yaml.safe_load(config.read_text())
    data["seed"] = seed
    metrics, manifest = scan_and_evaluate(data, work, f"seed{seed}")
    recall_12 = json.loads(subprocess.run(
        [*FLAKEHUNTER, "evaluate", str(work / f"seed{seed}"), "--layers", "1,2", "--json", "--out",
         str(work / f"seed{seed}-12")], check=True, capture_output=True, text=True, cwd=REPO).stdout)
    tiles = manifest["summary"]["items_total"]
    return {
        "seed": f"seed {seed}",
        "tiles": tiles,
        "flakes_1_2L": recall_12["truth_flakes"],
        "flakes_1_3L": metrics["truth_flakes"],
        "recall_1_2L": recall_12["recall"],
        "recall_1_3L": metrics["recall"],
        "precision_1_3L": metrics["precision"],
        "layer_accuracy": metrics["layer_accuracy"],
        "duplicates": metrics["duplicates"],
        "position_error_um": metrics["position_error_um"],
        "axis_rms_deg": metrics["orientation_rms_deg"],
        "axis_reported": f"{metrics['orientation_reported']}/{metrics['orientation_flakes']}",
        "wall_s": manifest["summary"]["wall_s"],
        "tiles_per_s": tiles / manifest["summary"]["wall_s"],
        "detect_tiles_per_s": tiles / manifest["summary"]["timings"]["detect_s"],
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
    print_table(rows, "seed")


if __name__ == "__main__":
    main()
