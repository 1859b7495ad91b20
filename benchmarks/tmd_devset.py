"""The TMD dev set (issue 12): boxed monolayers reported as 1L, and 1L candidates outside every box.

    python benchmarks/tmd_devset.py [--data ../shared/data/real/tmd-monolayers-karolync]
                                    [--material wse2] [--pixel-size-um 1.0] [--out RUN] [--json FILE]

113 real 640x640 photos of exfoliated WSe2/MoSe2/WS2 from many setups, with YOLO boxes around its 130
monolayers (only monolayers are boxed). Runs the command line as a user would, with no labels and only a
material and a rough pixel size:

    flakehunter detect DATA/images --material wse2 --pixel-size-um 1.0 --out RUN
    flakehunter evaluate RUN --truth DATA/labels --class-layers 0=1 --stray-layers 1

and prints one line: boxed monolayers reported as 1L (a 1L candidate inside the box, 3 px tolerance), and
1L candidates outside every box (total, per image median and max). The issue's acceptance: >= 85 % and
<= 1 per image. Writes the numbers, the per-image rows and the commands as JSON (default RUN/tmd_devset.json).
Only the CLI is used (subprocesses), so the script measures whatever detector the installed CLI runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "real" / "tmd-monolayers-karolync"
FLAKEHUNTER = [sys.executable, "-m", "flakehunter"]


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"command failed (exit {result.returncode}): {' '.join(args)}\n{result.stderr.strip()}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the dev set folder (images/ and labels/)")
    parser.add_argument("--material", default="wse2")
    parser.add_argument("--pixel-size-um", type=float, default=1.0)
    parser.add_argument("--detectors", default="", help="detector chain NAME[,NAME] (default: the material's)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/tmd_devset-DATE-TIME)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder given as --out")
    parser.add_argument("--json", type=Path, help="result file (default: RUN/tmd_devset.json)")
    args = parser.parse_args()
    data = args.data.resolve()
    if not (data / "images").is_dir() or not (data / "labels").is_dir():
        sys.exit(f"{data}: expected images/ and labels/ here (pass --data)")
    out = args.out or REPO / "runs" / time.strftime("tmd_devset-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            sys.exit(f"{out}: exists; pass --overwrite to replace it, or another --out")
        if not (out / "manifest.json").exists() and not (out / "candidates.jsonl").exists():
            sys.exit(f"{out}: not a flakehunter run folder; not replacing it")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    detect = [*FLAKEHUNTER, "detect", str(data / "images"), "--material", args.material,
              "--pixel-size-um", f"{args.pixel_size_um:g}", "--out", str(out)]
    if args.detectors:
        detect += ["--detectors", args.detectors]
    evaluate = [*FLAKEHUNTER, "evaluate", str(out), "--truth", str(data / "labels"), "--class-layers", "0=1",
                "--stray-layers", "1", "--json", "--out", str(out / "evaluation")]
    start = time.perf_counter()
    run(detect)
    detect_s = time.perf_counter() - start
    run(evaluate)
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text(encoding="utf-8"))

    boxes = metrics["per_layer"]["1L"]["annotated"]
    as_1l = metrics["per_layer"]["1L"]["found_as_1L"]
    strays = [row["strays"] for row in metrics["per_image"]]
    candidates = [json.loads(line) for line in (out / "candidates.jsonl").read_text(encoding="utf-8").splitlines()
                  if line.strip()]
    result = {
        "data": str(data),
        "material": args.material,
        "pixel_size_um": args.pixel_size_um,
        "run": str(out),
        "commands": [" ".join(detect[2:]), " ".join(evaluate[2:])],
        "images": metrics["images"],
        "boxed_monolayers": boxes,
        "reported_as_1L": as_1l,
        "recall_as_1L": as_1l / boxes if boxes else None,
        "found_any_class": metrics["per_layer"]["1L"]["found"],
        "found_as": metrics["found_as"],
        "strays_1L_total": sum(strays),
        "strays_1L_per_image_median": statistics.median(strays) if strays else None,
        "strays_1L_per_image_max": max(strays, default=0),
        "images_over_1_stray": sum(1 for n in strays if n > 1),
        "candidates": len(candidates),
        "candidates_by_class": dict(Counter(c["layer_class"] for c in candidates)),
        "detect_seconds": round(detect_s, 1),
        "per_image": metrics["per_image"],
    }
    json_path = args.json or out / "tmd_devset.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    recall = f"{result['recall_as_1L']:.3f}" if boxes else "n/a"
    print(f"boxed monolayers reported as 1L: {as_1l}/{boxes} (recall {recall}), 1L candidates outside every box: "
          f"total {sum(strays)}, per image median {result['strays_1L_per_image_median']:g} / max "
          f"{result['strays_1L_per_image_max']}  [{json_path}]")


if __name__ == "__main__":
    main()
