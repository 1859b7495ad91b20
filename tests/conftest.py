"""Shared fixtures: small, fast, seeded simulator scans."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

import flakehunter.registry
from flakehunter.training.recipe import merge

REPO = Path(__file__).resolve().parents[1]

#: A 2 x 2 mm chip, denser in flakes than the demo so that a ~30-tile scan has statistics,
#: imaged by a 400 x 600 px camera. Stage moves are instant.
SMALL_SCAN: dict[str, Any] = {
    "name": "small",
    "seed": 11,
    "stage": {
        "plugin": "simulator",
        "limits_um": {"x_um": [-1000, 4000], "y_um": [-1000, 4000], "z_um": [-200, 200]},
        "options": {"time_scale": 0},
    },
    "camera": {
        "plugin": "simulator",
        "options": {
            "shape": [400, 600],
            "chip": {
                "origin_um": [0, 0],
                "size_um": [2000, 2000],
                "thin_flakes": 60,
                "thick_flakes": 25,
                "multilayer_flakes": 8,
                "residue_blobs": 8,
                "dust": 40,
                "min_spacing_um": 12,
            },
        },
    },
    "optics": {"pixel_size_um": 1.15},
    "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [2000, 2000]}},
    "overlap_percent": 10,
    "order": "snake",
    "focus": {"mode": "none", "z_um": 0},
    "material": {"name": "graphene", "oxide_nm": 90},
    "detectors": [{"name": "contrast"}],
}


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``changes`` merged in key by key (tests then edit it freely)."""
    return merge(copy.deepcopy(base), changes)


@pytest.fixture
def write_config(tmp_path: Path):
    """Write SMALL_SCAN (with nested overrides) to a YAML file and return its path."""

    def write(changes: dict[str, Any] | None = None, name: str = "scan.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(deep_update(SMALL_SCAN, changes or {})), encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def no_report_after_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run by the tests skip their end-of-run report (seconds each); the report tests ask for one."""
    monkeypatch.setenv("FLAKEHUNTER_REPORT", "0")


@pytest.fixture(autouse=True)
def fresh_registry():
    """Each test sees the plugins of its own environment."""
    flakehunter.registry.reset()
    yield
    flakehunter.registry.reset()
