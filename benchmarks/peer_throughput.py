"""Side by side on the same tiles: `flakehunter detect` (default chain) against the RWTH 2DMatGMM detector.

    python benchmarks/peer_throughput.py --peer /tmp/peer/2DMatGMM --peer-python /tmp/peer/.venv/bin/python \
        [--tiles 16] [--repeat 3] [--json OUT.json]
    python benchmarks/peer_throughput.py --peer ... --peer-python ... \
        --tiles-dir ../shared/data/real/graphene-90nm-20x --pixel-size-um 0.3844      # real RWTH images

Renders ``--tiles`` seeded 2048 x 1392 RGB tiles of a dense simulated graphene chip (the rendering of
benchmarks/detect_throughput.py), or takes every image in ``--tiles-dir``. Then, ``--repeat`` times and
alternating which goes first so that the machine's load hits both alike, it times:

- flakehunter: ``python -m flakehunter detect TILES --material graphene --oxide-nm 90 --no-report`` in a fresh
  process (start-up, reading, self-calibration and detection included; the report is left out because the
  peer writes none; ``--report`` puts it back);
- the peer: a small driver (written to a temporary folder at run time, run with ``--peer-python``) that imports
  ``GMMDetector`` from ``--peer``, loads ``GMMDetector/trained_parameters/Graphene_GMM.json`` and runs
  ``MaterialDetector(contrast_dict, size_threshold=200, standard_deviation_threshold=5, used_channels="BGR")``
  (the parameters of the peer's ``demo/demo.py``) on every tile read with ``cv2.imread``, as its demo does.
  Its headline time runs from the launch of the process to the end of that pass: interpreter start-up,
  imports, and numba's JIT compile on the first tile included (the peer's ``@jit`` functions do not cache
  to disk, so every process compiles them). The same process then runs a second, JIT-warm pass over the
  tiles, reported separately as the peer's best case on a long-running process.

Prints tiles/s and megapixels/s of each (median of the repeats), the ratio flakehunter / peer, and one
summary line; writes JSON (``--json``). Contains no peer code: the peer is only imported from ``--peer``.

Reconstructing the peer (outside this repository; its code is MIT-licensed but is never committed here):

    mkdir -p /tmp/peer
    git clone https://github.com/Jaluus/2DMatGMM /tmp/peer/2DMatGMM
    git -C /tmp/peer/2DMatGMM checkout 6cc61972ca44ff6c4f764b708667eff2bce08731
    python3.11 -m venv /tmp/peer/.venv
    /tmp/peer/.venv/bin/pip install numba==0.68.1 numpy==2.4.6 opencv-python-headless==5.1.0.95 \
        scikit-image==0.26.0 scikit-learn==1.9.1 joblib==1.6.0

(the versions the published numbers were measured with, on Python 3.11.7; current releases rather than the
2023 pins of the peer's requirements.txt, which were not tried here). The driver needs only these files of
the checkout: ``GMMDetector/__init__.py``, ``GMMDetector/Detector.py`` (the version of commit 6cc61972, whose
``detect_flakes`` passes ``distance_threshold=self.standard_deviation_threshold``; with the demo's threshold
of 5 it behaves as the version of commit 205ff9af, which does not), ``GMMDetector/structures/__init__.py``,
``GMMDetector/structures/FlakeClass.py`` and ``GMMDetector/trained_parameters/Graphene_GMM.json``.
The optional false-positive classifier ``FalsePositiveDetector/models/classifier_L2_logistic.joblib`` (a
binary pickle) is used when present; without it the peer prints a note and skips that step (one logistic
regression on two shape features per flake: about 0.3 ms per flake here, under 1 % of the peer's time on
the rendered tiles), and the JSON says which (``false_positive_detector``). ``--peer-no-fp`` runs without it
even when present.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from detect_throughput import render

REPO = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")

# Runs under --peer-python. argv: peer dir, tiles dir, result JSON, launch epoch (s), material, size
# threshold (px), std threshold, channels, false-positive model path ("" = none).
DRIVER = r'''
import json, os, sys, time

peer, tiles_dir, result_path = sys.argv[1:4]
launched = float(sys.argv[4])
material, size_px, std, channels, fp_path = sys.argv[5], int(sys.argv[6]), float(sys.argv[7]), sys.argv[8], sys.argv[9]
started = time.time()
sys.path.insert(0, peer)
import cv2
import numba
import numpy
from GMMDetector import MaterialDetector

imported = time.time()
with open(os.path.join(peer, "GMMDetector", "trained_parameters", f"{material}_GMM.json")) as fh:
    contrast_dict = json.load(fh)
model = MaterialDetector(contrast_dict=contrast_dict, size_threshold=size_px, standard_deviation_threshold=std,
                         used_channels=channels,
                         false_positive_detector_path=fp_path or os.path.join(os.path.dirname(result_path), "none"))
built = time.time()
suffixes = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
names = sorted(n for n in os.listdir(tiles_dir) if n.lower().endswith(suffixes))


def one_pass():
    seconds, flakes, pixels = [], {}, 0
    for name in names:
        start = time.perf_counter()
        image = cv2.imread(os.path.join(tiles_dir, name))
        if image is None:
            raise SystemExit(f"{name}: cv2.imread could not read it")
        found = model(image)
        seconds.append(time.perf_counter() - start)
        pixels += image.shape[0] * image.shape[1]
        for flake in found:
            flakes[str(flake.thickness)] = flakes.get(str(flake.thickness), 0) + 1
    return seconds, flakes, pixels


cold, flakes, pixels = one_pass()
cold_done = time.time()
warm, warm_flakes, _ = one_pass()
json.dump({"launch_to_cold_done_s": cold_done - launched, "interpreter_start_s": started - launched,
           "import_s": imported - started, "setup_s": built - imported, "cold_pass_s": sum(cold),
           "first_tile_s": cold[0], "warm_pass_s": sum(warm), "warm_median_tile_s": sorted(warm)[len(warm) // 2],
           "tiles": len(names), "pixels": pixels, "flakes": flakes, "same_flakes_warm": flakes == warm_flakes,
           "false_positive_detector": "loaded" if model.FP_Detector is not None else "absent",
           "versions": {"python": sys.version.split()[0], "numba": numba.__version__, "numpy": numpy.__version__,
                        "opencv": cv2.__version__}},
          open(result_path, "w"))
'''


def time_flakehunter(tiles: Path, out: Path, args: argparse.Namespace) -> dict:
    """One fresh `flakehunter detect` over ``tiles``: wall seconds (start-up included) and candidate count."""
    command = [sys.executable, "-m", "flakehunter", "detect", str(tiles), "--material", "graphene",
               "--oxide-nm", str(args.oxide_nm), "--out", str(out)]
    if args.pixel_size_um is not None:
        command += ["--pixel-size-um", str(args.pixel_size_um)]
    if not args.report:
        command.append("--no-report")
    start = time.perf_counter()
    # From a neutral folder: `python -m` puts the working directory first on the path.
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=out.parent)
    seconds = time.perf_counter() - start
    with open(out / "candidates.csv", newline="", encoding="utf-8") as fh:
        count = sum(1 for _ in csv.DictReader(fh))
    return {"seconds": seconds, "candidates": count}


def time_peer(driver: Path, tiles: Path, result: Path, args: argparse.Namespace) -> dict:
    """One fresh peer process over ``tiles``: the driver's JSON plus the process's total wall seconds."""
    fp_path = "" if args.peer_no_fp else str(args.peer / "FalsePositiveDetector" / "models" /
                                               "classifier_L2_logistic.joblib")
    launched = time.time()
    start = time.perf_counter()
    run = subprocess.run([str(args.peer_python), str(driver), str(args.peer), str(tiles), str(result), repr(launched),
                          args.peer_material, str(args.peer_size_px), str(args.peer_std), "BGR", fp_path],
                         capture_output=True, text=True, cwd=result.parent)
    if run.returncode != 0:
        raise SystemExit(f"peer driver failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    report = json.loads(result.read_text())
    report["process_wall_s"] = time.perf_counter() - start
    report["stdout"] = run.stdout.strip()
    return report


def git_state() -> str:
    """HEAD commit of this checkout, with '+dirty' when the tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", type=Path, required=True, help="checkout of github.com/Jaluus/2DMatGMM")
    parser.add_argument("--peer-python", type=Path, required=True, help="interpreter of the peer's own venv")
    parser.add_argument("--tiles", type=int, default=16, help="tiles to render (ignored with --tiles-dir)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--tiles-dir", type=Path, default=None, help="use the images in this folder instead")
    parser.add_argument("--pixel-size-um", type=float, default=None, help="for flakehunter, when files do not say")
    parser.add_argument("--oxide-nm", type=float, default=90.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="let flakehunter write its report too")
    parser.add_argument("--peer-material", default="Graphene", help="the peer's trained_parameters/<NAME>_GMM.json")
    parser.add_argument("--peer-size-px", type=int, default=200, help="the peer demo's size threshold")
    parser.add_argument("--peer-std", type=float, default=5.0, help="the peer demo's standard-deviation threshold")
    parser.add_argument("--peer-no-fp", action="store_true", help="run the peer without its false-positive model")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.peer = args.peer.resolve()
    if not (args.peer / "GMMDetector" / "Detector.py").is_file():
        sys.exit(f"{args.peer}: no GMMDetector/Detector.py here (see this script's docstring to reconstruct it)")
    if not args.peer_python.is_file():
        sys.exit(f"{args.peer_python}: no such interpreter (see this script's docstring)")

    with tempfile.TemporaryDirectory(prefix="fh-peer-") as tmp:
        work = Path(tmp)
        driver = work / "peer_driver.py"
        driver.write_text(DRIVER)
        if args.tiles_dir is None:
            tiles = work / "tiles"
            tiles.mkdir()
            render(tiles, args.tiles, args.seed)
            source = f"rendered: {args.tiles} simulated graphene tiles, seed {args.seed} (detect_throughput.render)"
        else:
            tiles = args.tiles_dir.resolve()
            source = str(tiles)
        count = sum(1 for p in tiles.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if count == 0:
            sys.exit(f"{tiles}: no images")
        ours: list[dict] = []
        peers: list[dict] = []
        for r in range(args.repeat):
            order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")  # alternate who runs first
            for who in order:
                if who == "ours":
                    ours.append(time_flakehunter(tiles, work / f"fh-{r}", args))
                else:
                    peers.append(time_peer(driver, tiles, work / f"peer-{r}.json", args))
            print(f"repeat {r + 1}/{args.repeat}: flakehunter {ours[-1]['seconds']:.2f} s, "
                  f"peer {peers[-1]['launch_to_cold_done_s']:.2f} s (warm pass {peers[-1]['warm_pass_s']:.2f} s)",
                  flush=True)

    megapixels = peers[0]["pixels"] / 1e6
    ours_s = statistics.median(o["seconds"] for o in ours)
    peer_s = statistics.median(p["launch_to_cold_done_s"] for p in peers)
    warm_s = statistics.median(p["warm_pass_s"] for p in peers)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "flakehunter_commit": git_state(),
        "cpus": os.cpu_count(),
        "source": source,
        "tiles": count,
        "megapixels": round(megapixels, 1),
        "flakehunter": {
            "command": "python -m flakehunter detect TILES --material graphene --oxide-nm "
                       f"{args.oxide_nm:g}" + (f" --pixel-size-um {args.pixel_size_um:g}" if args.pixel_size_um else "")
                       + ("" if args.report else " --no-report"),
            "seconds": [round(o["seconds"], 2) for o in ours],
            "candidates": [o["candidates"] for o in ours],
            "tiles_per_s": round(count / ours_s, 2),
            "megapixels_per_s": round(megapixels / ours_s, 1),
        },
        "peer": {
            "detector": f"2DMatGMM MaterialDetector({args.peer_material}_GMM.json, size_threshold="
                        f"{args.peer_size_px}, standard_deviation_threshold={args.peer_std:g}, used_channels=BGR)",
            "false_positive_detector": peers[0]["false_positive_detector"],
            "versions": peers[0]["versions"],
            "seconds": [round(p["launch_to_cold_done_s"], 2) for p in peers],
            "tiles_per_s": round(count / peer_s, 2),
            "megapixels_per_s": round(megapixels / peer_s, 1),
            "import_s": round(statistics.median(p["import_s"] for p in peers), 2),
            "first_tile_s": round(statistics.median(p["first_tile_s"] for p in peers), 2),
            "warm_seconds": [round(p["warm_pass_s"], 2) for p in peers],
            "warm_tiles_per_s": round(count / warm_s, 2),
            "warm_median_tile_s": round(statistics.median(p["warm_median_tile_s"] for p in peers), 3),
            "flakes": peers[0]["flakes"],
        },
        "ratio": round(peer_s / ours_s, 2),
        "ratio_vs_warm_peer": round(warm_s / ours_s, 2),
    }
    fh, peer = result["flakehunter"], result["peer"]
    print(f"source: {source}; {count} tiles, {megapixels:.1f} MP; flakehunter {result['flakehunter_commit']}")
    print(f"flakehunter detect: {ours_s:.2f} s (median of {len(ours)}), {fh['tiles_per_s']} tiles/s, "
          f"{fh['megapixels_per_s']} MP/s, {fh['candidates'][0]} candidates (start-up and calibration included)")
    print(f"2DMatGMM peer:      {peer_s:.2f} s (median of {len(peers)}), {peer['tiles_per_s']} tiles/s, "
          f"{peer['megapixels_per_s']} MP/s, {sum(peer['flakes'].values())} flakes (start-up and JIT included; "
          f"imports {peer['import_s']} s, first tile {peer['first_tile_s']} s, "
          f"FP model {peer['false_positive_detector']})")
    print(f"2DMatGMM JIT-warm:  {warm_s:.2f} s, {peer['warm_tiles_per_s']} tiles/s "
          f"({peer['warm_median_tile_s']} s per tile, median)")
    print(f"summary: flakehunter {fh['tiles_per_s']} tiles/s vs 2DMatGMM {peer['tiles_per_s']} tiles/s "
          f"(warm {peer['warm_tiles_per_s']}) on {count} tiles: {result['ratio']}x the peer "
          f"({result['ratio_vs_warm_peer']}x its warm rate)")
    if peer["false_positive_detector"] == "absent":
        print("note: the peer ran without its false-positive classifier (model file absent or --peer-no-fp)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
