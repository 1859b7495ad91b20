"""Detection quality on hard simulated chips (issue 3), scored by `flakehunter evaluate`.

    python benchmarks/detection_quality.py [--config configs/benchmark-detection.yaml]

Each scenario scans the benchmark chip (250 thin flakes, 25 % vignetting, residue, dust, scratches)
with the real oxide off its nominal 90 nm, or under a warmer lamp than the optics model assumes,
with self-calibration only (no labels), and prints the metrics of `flakehunter evaluate` plus
speed. The README's table comes from this script.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml
from _simulated_scan import REPO, print_table, scan_and_evaluate

SCENARIOS = [
    {"name": "oxide +10 nm", "seed": 21, "oxide_offset_nm": 10.0, "lamp_temperature_k": 3100.0},
    {"name": "oxide -10 nm", "seed": 22, "oxide_offset_nm": -10.0, "lamp_temperature_k": 3100.0},
    {"name": "oxide +5 nm, 2700 K lamp", "seed": 23, "oxide_offset_nm": 5.0, "lamp_temperature_k": 2700.0},
]


def run(scenario: dict, config: Path, work: Path) -> dict:
    data = yaml.safe_load(config.read_text())
    data["seed"] = scenario["seed"]
    data["camera"]["options"]["lamp_temperature_k"] = scenario["lamp_temperature_k"]
    data["camera"]["options"]["chip"]["oxide_offset_nm"] = scenario["oxide_offset_nm"]
    metrics, manifest = scan_and_evaluate(data, work, f"run{scenario['seed']}")
    calibration = manifest["calibration"]["detectors"][0]
    tiles = manifest["summary"]["items_total"]
    return {
        "scenario": scenario["name"],
        "thin flakes 1–3L >= 50 µm²": metrics["truth_flakes"],
        "recall": metrics["recall"],
        "precision": metrics["precision"],
        "layer accuracy": metrics["layer_accuracy"],
        "duplicates": metrics["duplicates"],
        "axis RMS (deg)": metrics["orientation_rms_deg"],
        "axis reported / eligible": f"{metrics['orientation_reported']}/{metrics['orientation_flakes']}",
        "fitted oxide (nm)": calibration["oxide_nm"],
        "true oxide (nm)": round(90.0 + scenario["oxide_offset_nm"], 1),
        "detect tiles/s": round(tiles / manifest["summary"]["timings"]["detect_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "benchmark-detection.yaml")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in SCENARIOS:
            rows.append(run(scenario, args.config, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print_table(rows, "scenario")


if __name__ == "__main__":
    main()
