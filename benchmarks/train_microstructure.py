"""Coarse vs fine grain classifier trained from the command line on CPU: test accuracy and wall time.

    python benchmarks/train_microstructure.py [--train 300] [--val 100] [--test 200] [--work DIR]

Runs exactly what a user would type:

    flakehunter simulate microstructure --out W/train --count 300 --seed 1
    flakehunter simulate microstructure --out W/val   --count 100 --seed 2
    flakehunter simulate microstructure --out W/test  --count 200 --seed 3
    flakehunter train --recipe configs/training/microstructure.yaml --data W/train --val W/val --out W/run --device cpu
    flakehunter evaluate-model W/run/best.pt --data W/test --out W/eval --device cpu

(counts are per class; train, validation and test images come from different seeds), then prints the
test accuracy, per-class F1 and the time of each step. The acceptance bar is >= 95 % test accuracy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def flakehunter(*args: str) -> float:
    """Run one flakehunter command (output shown), return its wall time in seconds."""
    t0 = time.perf_counter()
    print("$ flakehunter " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "flakehunter", *args], check=True, cwd=REPO)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=300, help="training images per class")
    parser.add_argument("--val", type=int, default=100, help="validation images per class")
    parser.add_argument("--test", type=int, default=200, help="test images per class")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is faster on a busy CPU)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fh-microstructure-"))
    times = {}
    times["simulate_s"] = sum(
        flakehunter("simulate", "microstructure", "--out", str(work / name), "--count", str(count), "--seed", str(seed))
        for name, count, seed in (("train", args.train, 1), ("val", args.val, 2), ("test", args.test, 3))
    )
    times["train_s"] = flakehunter(
        "train", "--recipe", str(REPO / "configs/training/microstructure.yaml"), "--data", str(work / "train"),
        "--val", str(work / "val"), "--out", str(work / "run"), "--device", "cpu",
        *(["--threads", str(args.threads)] if args.threads else []),
    )
    times["evaluate_s"] = flakehunter(
        "evaluate-model", str(work / "run" / "best.pt"), "--data", str(work / "test"), "--out", str(work / "eval"),
        "--device", "cpu",
    )
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    summary = json.loads((work / "run" / "summary.json").read_text())
    print()
    print("| metric | value |")
    print("|---|---|")
    print(f"| test accuracy ({metrics['n']} images, {args.test} per class) | {metrics['accuracy']:.4f} |")
    for row in metrics["per_class"]:
        print(f"| F1 {row['class']} | {row['f1']:.4f} |")
    print(f"| best validation accuracy (epoch) | {summary['best']['value']:.4f} ({summary['best']['epoch']}) |")
    print(f"| epochs run | {summary['epochs_run']} |")
    for key, value in times.items():
        print(f"| {key.replace('_s', '')} wall time (s) | {value:.1f} |")
    print(f"\nfiles in {work}")
    if metrics["accuracy"] < 0.95:
        sys.exit("test accuracy below the 95 % acceptance bar")


if __name__ == "__main__":
    main()
