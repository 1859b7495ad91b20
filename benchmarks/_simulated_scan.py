"""Shared by the benchmark scripts: scan a simulated chip, score it with `flakehunter evaluate`, print tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
FLAKEHUNTER = [sys.executable, "-m", "flakehunter"]


def scan_and_evaluate(config: dict[str, Any], work: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``flakehunter scan`` on ``config`` into ``work/name`` and return (evaluate metrics, manifest)."""
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = work / name
    subprocess.run([*FLAKEHUNTER, "scan", str(path), "--out", str(run_dir), "--no-progress"], check=True,
                   cwd=REPO, stdout=subprocess.DEVNULL)
    metrics = json.loads(subprocess.run([*FLAKEHUNTER, "evaluate", str(run_dir), "--json"], check=True,
                                        capture_output=True, text=True, cwd=REPO).stdout)
    return metrics, json.loads((run_dir / "manifest.json").read_text())


def print_table(rows: list[dict[str, Any]], column: str) -> None:
    """A markdown table with one column per row (headed by ``row[column]``) and one line per metric."""
    print("\n| metric | " + " | ".join(str(r[column]) for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in (k for k in rows[0] if k != column):
        cells = [f"{r[key]:.3f}" if isinstance(r[key], float) else str(r[key]) for r in rows]
        print(f"| {key} | " + " | ".join(cells) + " |")
