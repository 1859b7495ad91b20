"""Stage calibration: pixel size, rotation and flips measured by moving the stage and registering frames.

Acceptance (issue 5): ``calibrate-stage`` recovers the simulator's pixel size within 0.5 % and its
rotation within 0.2°. The simulator camera's true pixel size, rotation and flips are set unlike the
config's optics, which is what the calibration starts from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flakehunter.acquisition.plan import make_plan
from flakehunter.config import load_config, parse_config
from flakehunter.registry import get_registry
from flakehunter.stage_calibration import calibrate_stage, update_optics_text, write_optics
from tests.conftest import SMALL_SCAN, deep_update


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flakehunter", *args], capture_output=True, text=True, timeout=120)


def report_at(report: dict[str, Any]) -> str:
    """The spot a --json report says it calibrated at, as --at X,Y."""
    return ",".join(str(v) for v in report["at_um"])


def true_camera(**truth: Any) -> dict[str, Any]:
    """SMALL_SCAN with the simulator camera's true optics set to ``truth`` (the config says 1.15 µm, 0°)."""
    return deep_update(SMALL_SCAN, {"camera": {"options": {"shape": [300, 400], **truth}}})


@pytest.mark.parametrize("truth", [
    {"pixel_size_um": 1.17, "rotation_deg": 1.5},
    {"pixel_size_um": 1.13, "rotation_deg": -2.3, "flip_cols": True},
    {"pixel_size_um": 1.2, "rotation_deg": 0.4, "flip_rows": True},
])
def test_calibration_recovers_pixel_size_rotation_and_flips(truth: dict[str, Any], tmp_path: Path) -> None:
    """Within 0.5 % in pixel size and 0.2° in rotation (benchmark: ≤ 0.08 % and ≤ 0.07°), flips exact."""
    plan = make_plan(parse_config(true_camera(**truth)), tmp_path / "scan.yaml", get_registry())
    plan.stage.connect()
    plan.camera.connect()
    result = calibrate_stage(plan.stage, plan.camera, (1000.0, 1000.0), 100.0)
    assert abs(result.pixel_size_um / truth["pixel_size_um"] - 1) < 0.005
    assert abs(result.rotation_deg - truth["rotation_deg"]) < 0.2
    assert result.flip_rows == truth.get("flip_rows", False)
    assert result.flip_cols == truth.get("flip_cols", False)
    assert result.residual_px < 0.3
    assert plan.stage.position_um()[:2] == (1000.0, 1000.0)  # left where it started


def test_calibrate_stage_cli_writes_the_transform_and_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    """`flakehunter calibrate-stage CONFIG` measures, prints and writes optics: in place; every other line
    (comments included) is unchanged, the file still loads, and a second run (--no-write) starts from the
    written values, finds them again within 0.1 % and leaves the file alone."""
    config = true_camera(pixel_size_um=1.172, rotation_deg=0.8)
    del config["optics"]
    body = yaml.safe_dump(config, sort_keys=False)
    text = ("# my wafer, scanned on the 5x objective\n" + body
            + "optics:  # measured on 2026-11-01\n  pixel_size_um: 1.15   # nominal\n  rotation_deg: 0\n")
    path = tmp_path / "wafer.yaml"
    path.write_text(text, encoding="utf-8")
    result = run_cli("calibrate-stage", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert abs(report["pixel_size_um"] / 1.172 - 1) < 0.005
    assert abs(report["rotation_deg"] - 0.8) < 0.2
    new = path.read_text(encoding="utf-8")
    old_lines, new_lines = text.splitlines(), new.splitlines()
    head = old_lines.index("optics:  # measured on 2026-11-01")
    assert new_lines[: head + 1] == old_lines[: head + 1]
    assert new_lines[head + 1] == f"  pixel_size_um: {report['pixel_size_um']!r}   # nominal"
    assert new_lines[head + 2] == f"  rotation_deg: {report['rotation_deg']!r}"
    assert new_lines[head + 3:] == ["  flip_rows: false", "  flip_cols: false"]
    optics = load_config(path).optics
    assert (optics.pixel_size_um, optics.rotation_deg) == (report["pixel_size_um"], report["rotation_deg"])
    assert not list(tmp_path.glob(".wafer.yaml.tmp-*"))  # the atomic write left nothing behind
    from typer.testing import CliRunner

    from flakehunter.cli import app

    again = CliRunner().invoke(app, ["calibrate-stage", str(path), "--no-write", "--at", report_at(report)])
    assert again.exit_code == 0, again.output
    assert f"(config had {report['pixel_size_um']})" in again.output  # starts from the written values
    repeat = float(again.output.split("pixel size")[1].split()[0])
    assert abs(repeat / report["pixel_size_um"] - 1) < 0.001  # and finds them again
    assert path.read_text(encoding="utf-8") == new


def test_optics_update_handles_flow_and_missing_sections(tmp_path: Path) -> None:
    """A flow-style section is rewritten on its line with its comment; a missing one is appended."""
    values = {"pixel_size_um": 1.1702, "rotation_deg": -0.25, "flip_rows": False, "flip_cols": True}
    flow = "name: a\noptics: {pixel_size_um: 1.15, rotation_deg: 0}  # lens 5x\nseed: 3\n"
    assert update_optics_text(flow, values) == (
        "name: a\noptics: {pixel_size_um: 1.1702, rotation_deg: -0.25, flip_rows: false, flip_cols: true}"
        "  # lens 5x\nseed: 3\n"
    )
    assert update_optics_text("name: a\n", values).endswith(
        "optics: {pixel_size_um: 1.1702, rotation_deg: -0.25, flip_rows: false, flip_cols: true}\n")
    path = tmp_path / "c.yaml"
    path.write_text(flow, encoding="utf-8")
    write_optics(path, values)
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == {"name": "a", "seed": 3, "optics": values}
    nested = "optics:\n  pixel_size_um: 1.15\n  flatfield:\n    - a.tif\n    - b.tif\n\n# next\nseed: 3\n"
    path.write_text(nested, encoding="utf-8")
    write_optics(path, values)
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["optics"] == {**values, "flatfield": ["a.tif", "b.tif"]}
    assert path.read_text(encoding="utf-8").endswith("    - b.tif\n  rotation_deg: -0.25\n  flip_rows: false\n"
                                                      "  flip_cols: true\n\n# next\nseed: 3\n")
