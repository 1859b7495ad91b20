"""Mutated configs through the real command line: each is accepted or refused with exit 2 and one line.

    python benchmarks/config_probe.py [--configs 249] [--jobs 2] [--json probe.json]

The mutants are those of tests/test_config_properties.py (keys dropped, renamed or added, values replaced
by wrong types, NaN, infinities, huge and tiny numbers, odd strings, nested junk, duplicated or deleted
lines), drawn reproducibly. Each is written as ``wafer.yaml`` in a folder of its own and checked with
``python -m flakehunter scan wafer.yaml --dry-run`` in a fresh process, as a user would. A refusal must
exit 2 with exactly one line on stderr that names the config file, under 500 characters; an acceptance
exits 0. Anything else (exit 1, a traceback, several lines, a crash) is listed. Exit code 0 when none.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def draw_mutants(n: int) -> list[str]:
    """``n`` distinct config texts from the property test's strategy, the same on every machine."""
    from hypothesis import HealthCheck, given, settings

    from tests.test_config_properties import config_text

    texts: dict[str, None] = {}

    @settings(max_examples=4 * n, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=config_text())
    def collect(text: str) -> None:
        if len(texts) < n:
            texts[text] = None

    collect()
    return list(texts)


def probe(text: str, folder: Path) -> dict[str, object]:
    folder.mkdir(parents=True)
    (folder / "flat.tif").write_bytes(b"II*\x00")
    (folder / "lab.json").write_text("{}", encoding="utf-8")
    config = folder / "wafer.yaml"
    config.write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "flakehunter", "scan", str(config), "--dry-run"],
                          capture_output=True, text=True, cwd=folder, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode == 0:
        verdict = "accepted"
    elif proc.returncode == 2 and len(lines) == 1 and str(config) in lines[0] and len(lines[0]) < 500:
        verdict = "refused"
    else:
        verdict = "bad"
    return {"rc": proc.returncode, "verdict": verdict, "stderr": proc.stderr[-600:], "config": text[:2000]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=249)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    texts = draw_mutants(args.configs)
    with tempfile.TemporaryDirectory(prefix="config-probe-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda it: probe(it[1], Path(tmp) / f"m{it[0]:04d}"), enumerate(texts)))
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("accepted", "refused", "bad")}
    exit_codes = sorted({int(str(r["rc"])) for r in results})
    for r in results:
        if r["verdict"] == "bad":
            print(f"exit {r['rc']}: {str(r['stderr']).strip()[:300]}")
    print(f"config probe: {len(results)} mutated configs through `scan --dry-run`: {counts['accepted']} accepted, "
          f"{counts['refused']} refused with exit 2 and one line naming the file, {counts['bad']} otherwise "
          f"(exit codes seen: {exit_codes})")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "results": results}, indent=1), encoding="utf-8")
    return 0 if counts["bad"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
