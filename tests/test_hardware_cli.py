"""`flakehunter goto` and `flakehunter hardware check`, as processes, against a Prior emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flakehunter.candidates import read_candidates
from flakehunter.scan import Scan
from flakehunter.testing.emulators import FAST_STAGE_OPTIONS, PriorProScanEmulator
from flakehunter.tiles import read_image
from tests.conftest import SMALL_SCAN, deep_update


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flakehunter", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PriorProScanEmulator, Path, Path]]:
    """A small scan with its stage on a Prior emulator that stays up for the tests of this module."""
    base = tmp_path_factory.mktemp("prior-run")
    with PriorProScanEmulator() as prior:
        config: dict[str, Any] = deep_update(SMALL_SCAN, {
            "camera": {"options": {"shape": [200, 300]}},
            "region": {"rectangle": {"corner1_um": [400, 400], "corner2_um": [1000, 800]}},
        })
        config["stage"] = {"plugin": "prior", "options": {"port": prior.port, **FAST_STAGE_OPTIONS},
                           "limits_um": {"x_um": [-1000, 4000], "y_um": [-1000, 4000], "z_um": [-200, 200]}}
        path = base / "scan.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        summary = Scan(path, base / "run").run()
        assert summary["status"] == "completed" and summary["candidates"] > 0
        yield prior, path, base / "run"


def test_goto_drives_the_stage_to_a_candidate_with_the_objective_offset(prior_run: Any) -> None:
    """The stage ends at the candidate's stage position plus the objective offset, to the step."""
    prior, _, run = prior_run
    cand = read_candidates(run / "candidates.jsonl")[-1]
    prior.clear_records()
    result = run_cli("goto", str(run), str(cand.id), "--objective-offset", "25.5,-12,3")
    assert result.returncode == 0, result.stderr
    x, y, z = cand.x_um + 25.5, cand.y_um - 12, cand.z_um + 3
    assert prior.position("x") == round(x * 10) and prior.position("y") == round(y * 10)
    assert prior.position("z") == round(z * 10)
    assert f"At candidate {cand.id} ({cand.layer_class} graphene" in result.stdout
    assert f"x={round(x * 10) / 10:.2f}" in result.stdout


def test_goto_refuses_unknown_ids_and_targets_outside_the_limits(prior_run: Any) -> None:
    """An unknown candidate is bad input (exit 2, naming the file and id); an offset that leaves the soft
    limits is refused (exit 1) before anything is sent to the controller; --dry-run moves nothing."""
    from typer.testing import CliRunner

    from flakehunter.cli import app

    prior, _, run = prior_run
    first = str(read_candidates(run / "candidates.jsonl")[0].id)
    prior.clear_records()
    outside = run_cli("goto", str(run), first, "--objective-offset", "9000,0")
    assert outside.returncode == 1
    assert "outside soft limits" in outside.stderr and "Traceback" not in outside.stderr
    cli = CliRunner()  # the other cases in-process: same commands, same exit codes, less start-up time
    missing = cli.invoke(app, ["goto", str(run), "99999"])
    assert missing.exit_code == 2
    assert "candidates.jsonl: no candidate with id 99999" in missing.output
    bad = cli.invoke(app, ["goto", str(run), first, "--objective-offset", "1,two"])
    assert bad.exit_code == 2 and "--objective-offset: expected 2 or 3 comma-separated numbers" in bad.output
    dry = cli.invoke(app, ["goto", str(run), first, "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith(f"Would move to candidate {first} ")
    assert prior.commands == []


def test_hardware_check_reports_and_saves_a_test_image(prior_run: Any, tmp_path: Path) -> None:
    """`hardware check` names the controller, reports position and limits, and saves a readable
    OME-TIFF test image carrying the stage position."""
    prior, config, _ = prior_run
    result = run_cli("hardware", "check", str(config), "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "PROSCAN" in report["stage"]["identity"]
    assert report["stage"]["port"] == prior.port
    assert report["position_um"]["x"] == pytest.approx(prior.position("x") / 10)
    assert report["limits_um"]["x"] == [-1000, 4000] and report["inside_limits"] is True
    assert report["camera"]["shape"] == [200, 300, 3]
    image, meta = read_image(report["camera"]["test_image"])
    assert image.shape == (200, 300, 3)
    assert meta.x_um == pytest.approx(report["position_um"]["x"]) and meta.pixel_size_um == 1.15
    from typer.testing import CliRunner

    from flakehunter.cli import app

    text = CliRunner().invoke(app, ["hardware", "check", str(config), "--out", str(tmp_path)])
    assert text.exit_code == 0, text.output
    assert "Stage   prior: PROSCAN INFORMATION" in text.output and "test image:" in text.output


def test_hardware_check_names_a_missing_port(tmp_path: Path) -> None:
    """No controller on the configured port: one line naming the device and the port, exit 1."""
    config = deep_update(SMALL_SCAN, {})
    config["stage"] = {"plugin": "asi", "options": {"port": str(tmp_path / "ttyUSB7")},
                       "limits_um": SMALL_SCAN["stage"]["limits_um"]}
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_cli("hardware", "check", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: asi stage: cannot open") and "ttyUSB7" in result.stderr


@pytest.mark.parametrize("vendor", ["prior", "asi", "ludl", "tango"])
def test_example_vendor_configs_plan_without_hardware(vendor: str) -> None:
    """configs/<vendor>.yaml validate and plan (as `scan --dry-run` does) without opening the port."""
    from flakehunter.acquisition.plan import make_plan
    from flakehunter.config import load_config
    from flakehunter.registry import get_registry

    path = Path(__file__).resolve().parents[1] / "configs" / f"{vendor}.yaml"
    plan = make_plan(load_config(path), path, get_registry())
    assert plan.config.stage.plugin == vendor and plan.stage.name == vendor
    assert plan.stage.options.port.startswith("/dev/tty") and not plan.stage.link.is_open
    assert len(plan.tiles) > 10
