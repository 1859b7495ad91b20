"""Random kill -9 during a scan and during its resume: the result must equal the uninterrupted run.

    python benchmarks/kill_resume.py [--kills 20] [--seed 1]

Scans a small seeded simulated chip once without interruption (the reference), then repeatedly starts
the same scan, kills it with SIGKILL at a random moment, resumes it (killing the resume too, at random,
about every other time) and lets the last resume finish. Every finished run must hold exactly the
reference's candidates and tiles, with no temporary file left; tiles taken twice (a kill between writing a
tile and journaling it) are counted. Prints one line per
run and a summary line; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import SMALL_SCAN, deep_update  # noqa: E402

#: The stage moves slowly enough that a kill lands anywhere in the scan.
CONFIG = deep_update(SMALL_SCAN, {"stage": {"options": {"time_scale": 1, "settle_s": 0.1, "speed_um_s": 0}}})


def flakehunter(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "flakehunter", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def records(run_dir: Path) -> list[tuple]:
    from flakehunter.candidates import read_candidates

    return sorted((c.image, round(c.x_um, 3), round(c.y_um, 3), c.layer_class, c.layers, c.orientation_deg)
                  for c in read_candidates(run_dir))


def tile_times(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (run_dir / "tiles").glob("*.ome.tif")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "scan.yaml"
        config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
        start = time.monotonic()
        assert flakehunter("scan", str(config), "--out", str(work / "reference")).wait() == 0
        duration = time.monotonic() - start
        reference = records(work / "reference")
        kills, run = 0, 0
        while kills < args.kills:
            run += 1
            run_dir = work / f"run{run}"
            proc = flakehunter("scan", str(config), "--out", str(run_dir))
            time.sleep(rng.uniform(0.5, duration))
            killed = [proc.poll() is None]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += killed[0]
            while True:
                before = tile_times(run_dir)
                # Killed before it wrote its manifest (still starting up): the same command again, else resume.
                started = (run_dir / "manifest.json").exists()
                resume = flakehunter(*(("scan", "--resume", str(run_dir)) if started else
                                       ("scan", str(config), "--out", str(run_dir))))
                if kills < args.kills and rng.random() < 0.5:
                    time.sleep(rng.uniform(0.5, duration / 2))
                    if resume.poll() is None:
                        resume.send_signal(signal.SIGKILL)
                        resume.wait()
                        kills += 1
                        killed.append(True)
                        continue
                code = resume.wait()
                after = tile_times(run_dir)
                retaken = [name for name, mtime in before.items() if after.get(name) != mtime]
                break
            leftovers = [p.name for p in run_dir.rglob(".*.tmp-*")]
            same = records(run_dir) == reference
            results.append({"run": run, "kills": sum(killed), "exit": code, "identical": same,
                            "tiles_retaken": retaken, "temp_files": leftovers})
            print(json.dumps(results[-1]), flush=True)
    ok = all(r["identical"] and r["exit"] == 0 and not r["temp_files"] for r in results)
    retaken = sum(len(r["tiles_retaken"]) for r in results)
    print(f"{sum(r['kills'] for r in results)} kills in {len(results)} runs: "
          f"{sum(r['identical'] for r in results)}/{len(results)} identical to the uninterrupted run, "
          f"{retaken} tile(s) taken again (killed between writing the file and journaling it), "
          f"no temporary file left: {all(not r['temp_files'] for r in results)} -> {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
