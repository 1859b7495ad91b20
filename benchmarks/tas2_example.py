"""The TaS2 plugin example (examples/flakehunter-tas2): calibrated two ways, then found in seeded simulated scans.

    python benchmarks/tas2_example.py                       # seeds 1 2 3
    python benchmarks/tas2_example.py --seeds 1 2 3 4 5 --json tas2.json

The example is installed into a throwaway environment (`flakehunter.testing.plugin_env.PluginEnv`: offline,
this environment untouched), where ``examples/flakehunter-tas2/calibrate.py`` fits the contrast detector's
profile from three labelled simulator images and converts the RWTH 2DMatGMM TaS2 parameters
(``calibrate --from-gmm``). Then, per seed, the 2 x 2 mm chip of ``examples/flakehunter-tas2/scan.yaml`` is
scanned (``flakehunter.scan.Scan``) with:

* ``profile``: scan.yaml as shipped (the simulator profile; a chip of the calibrated batch, same oxide);
* ``self``: the contrast detector's default self-calibration, same chip;
* ``profile-other-batch`` / ``self-other-batch``: the simulator's default ±3 nm oxide jitter between chips;
* ``rwth-profile``: the RWTH microscope's profile on the simulated microscope (same chip as ``profile``).

Each run is scored against its truth.json (`flakehunter.testing.detector_check.score_run`): recall of 1-2L and
1-3L flakes of 50 µm² or more, share of the found ones with the right layer count, precision. Acceptance
(issue 16): ``profile`` recall 1-2L >= 0.9 with layers right >= 0.9 on every seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "flakehunter-tas2"
VARIANTS = ("profile", "self", "profile-other-batch", "self-other-batch", "rwth-profile")
KEYS = ("variant", "seed")


def config_for(base: dict[str, Any], variant: str, seed: int, profiles: Path) -> dict[str, Any]:
    """scan.yaml with the seed, the chip batch and the detector options of ``variant``."""
    config = copy.deepcopy(base)
    config["seed"] = seed
    chip = config["camera"]["options"]["chip"]
    if variant.endswith("other-batch"):
        chip.pop("oxide_jitter_nm", None)  # the simulator's default jitter: another batch of chips
    options = {"profile": str(profiles / "sim-tas2-90nm.json")} if variant.startswith("profile") else {}
    if variant == "rwth-profile":
        options = {"profile": str(profiles / "rwth-tas2-90nm.json")}
    config["detectors"] = [{"name": "contrast", "options": options}]
    return config


def inner(seeds: list[int], profiles: Path, work: Path) -> list[dict[str, Any]]:
    """In the environment that has flakehunter-tas2: scan and score every variant and seed."""
    import yaml

    from flakehunter.scan import Scan
    from flakehunter.testing.detector_check import score_run

    base = yaml.safe_load((EXAMPLE / "scan.yaml").read_text(encoding="utf-8"))
    rows = []
    for variant in VARIANTS:
        if variant == "rwth-profile" and not (profiles / "rwth-tas2-90nm.json").exists():
            continue
        for seed in seeds:
            path = work / f"{variant}-{seed}.yaml"
            path.write_text(yaml.safe_dump(config_for(base, variant, seed, profiles)), encoding="utf-8")
            started = time.monotonic()
            Scan(path, work / f"{variant}-{seed}", device="cpu").run()
            wall = time.monotonic() - started
            s12 = score_run(work / f"{variant}-{seed}", layers=(1, 2), symmetry_deg=60.0)
            s123 = score_run(work / f"{variant}-{seed}", layers=(1, 2, 3), symmetry_deg=60.0)
            row = {
                "variant": variant, "seed": seed, "flakes_1_2L": s12["truth_flakes"],
                "recall_1_2L": s12["recall"], "layers_right_1_2L": s12["layers_right"],
                "precision_1_2L": s12["precision"], "flakes_1_3L": s123["truth_flakes"],
                "recall_1_3L": s123["recall"], "layers_right_1_3L": s123["layers_right"],
                "candidates": s12["candidates"], "wall_s": round(wall, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def summary_line(rows: list[dict[str, Any]]) -> str:
    parts = []
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if mine:
            recall = min(r["recall_1_2L"] for r in mine)
            right = min(r["layers_right_1_2L"] for r in mine)
            parts.append(f"{variant}: recall 1-2L >= {recall:.3f}, layers right >= {right:.3f}")
    accepted = all(r["recall_1_2L"] >= 0.9 and r["layers_right_1_2L"] >= 0.9
                   for r in rows if r["variant"] == "profile")
    return f"tas2 example over {len({r['seed'] for r in rows})} seeds: " + "; ".join(parts) + \
        f" -> acceptance (profile >= 0.9 / 0.9) {'met' if accepted else 'NOT met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--json", type=Path, default=None, help="write the rows and the summary here")
    parser.add_argument("--inner", type=Path, default=None, help=argparse.SUPPRESS)  # the profiles folder
    args = parser.parse_args()
    if args.inner is not None:
        with tempfile.TemporaryDirectory(prefix="tas2-runs-") as work:
            rows = inner(args.seeds, args.inner, Path(work))
        print("ROWS " + json.dumps(rows))
        return

    from flakehunter.testing.plugin_env import PluginEnv

    with tempfile.TemporaryDirectory(prefix="tas2-bench-") as tmp:
        env = PluginEnv(Path(tmp) / "venv")
        env.install(EXAMPLE)
        profiles = Path(tmp) / "calibration"
        calibration = env.run(str(env.python), str(EXAMPLE / "calibrate.py"), "--out", str(profiles), cwd=tmp)
        if calibration.returncode != 0:
            sys.exit(calibration.stderr)
        print(calibration.stdout, flush=True)
        result = subprocess.run(
            [str(env.python), __file__, "--inner", str(profiles), "--seeds", *map(str, args.seeds)],
            cwd=tmp, env=env.environ(), stdout=subprocess.PIPE, text=True, check=True,
        )
        calibration_table = json.loads((profiles / "calibration.json").read_text(encoding="utf-8"))
    rows: list[dict[str, Any]] = []
    for line in result.stdout.splitlines():
        if line.startswith("ROWS "):
            rows = json.loads(line[5:])
        else:
            print(line)
    from _simulated_scan import print_table

    for variant in VARIANTS:
        mine = [{"run": f"{r['variant']} seed {r['seed']}", **{k: v for k, v in r.items() if k not in KEYS}}
                for r in rows if r["variant"] == variant]
        if mine:
            print_table(mine, "run")
    line = summary_line(rows)
    print(line)
    if args.json:
        args.json.write_text(json.dumps({"summary": line, "rows": rows, "calibration": calibration_table}, indent=2))


if __name__ == "__main__":
    main()
