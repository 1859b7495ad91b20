"""Acceptance: malformed configs exit 2 with one line naming the file and field; no traceback.

Every case is a small edit of ``configs/demo.yaml`` fed to ``flakehunter scan CONFIG --dry-run``,
both as a real subprocess and through typer's CliRunner. The subprocesses of the whole module are
started together by one fixture (they overlap, which keeps the module fast) and each test waits for
its own. They pass ``--device cpu`` so that they do not import torch (2-3 s each); the demo's dry
run uses the plain command.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flakehunter.cli import app
from flakehunter.config import ScanConfig, load_config
from flakehunter.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"

# The demo's field is 2432 x 1640 px at 1.15 µm/px (about 2796 x 1885 µm); at 10% overlap the
# steps are about 2516 x 1697 µm, so 4 columns and 6 rows cover the 10 x 10 mm chip.
DEMO_TILES = 24


def demo() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text(encoding="utf-8"))


class Launched:
    """A ``python -m flakehunter ...`` subprocess started in its own folder."""

    def __init__(self, args: list[str], cwd: Path, path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLAKEHUNTER_")}
        self.cwd, self.path = cwd, path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flakehunter", *args],
            cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

    @cached_property
    def result(self) -> subprocess.CompletedProcess[str]:
        try:
            out, err = self.proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


def _set(dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        for key in parents:
            data = data[key]
        data[last] = value

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[dict[str, Any]], None] | None  # None: ``text`` is written verbatim
    field: str  # what follows "FILE: " in the message (a dotted field, or a YAML line/column)
    says: str  # a fragment of what was expected or found
    text: str = ""
    in_loader: bool = True  # False: caught while planning (plugins, travel), not by load_config
    via_subprocess: bool = True  # False: checked through CliRunner only (the same code path, cheaper)


def _yaml_syntax_error() -> str:
    text = DEMO.read_text(encoding="utf-8")
    assert "overlap_percent: 10\n" in text
    return text.replace("overlap_percent: 10\n", "overlap_percent: 10: 20\n")


_SYNTAX_LINE = _yaml_syntax_error().splitlines().index("overlap_percent: 10: 20") + 1

CASES = [
    Case("unknown top-level key", _set("colour", "red"), "colour", "unknown key (allowed: budget, camera,"),
    Case("unknown nested key", _set("stage.limits_um.w_um", [0, 1]), "stage.limits_um.w_um",
         "unknown key (allowed: x_um, y_um, z_um)"),
    Case("wrong type: overlap", _set("overlap_percent", "ten"), "overlap_percent", "got 'ten'"),
    Case("wrong value: pixel size", _set("optics.pixel_size_um", -1), "optics.pixel_size_um",
         "greater than 0, got -1"),
    Case("limits not a pair", _set("stage.limits_um.x_um", "wide"), "stage.limits_um.x_um",
         "expected a list of 2 numbers, got 'wide'", via_subprocess=False),
    Case("missing section", _drop("camera"), "camera", "required field is missing"),
    Case("YAML syntax error", None, f"line {_SYNTAX_LINE}, column", "YAML syntax error",
         text=_yaml_syntax_error()),
    Case("region outside the stage's travel", _set("region.rectangle.corner2_um", [40000, 10000]), "region",
         "outside the stage's travel stage.limits_um.x_um", in_loader=False),
    Case("unknown stage plugin", _set("stage.plugin", "nosuch"), "stage.plugin",
         "unknown stage 'nosuch' (available: ", in_loader=False),
    Case("bad plugin option", _set("camera.options.bit_depth", 7), "camera.options.bit_depth", "got 7",
         in_loader=False),
    Case("unknown plugin option", _set("camera.options.gain", 2), "camera.options.gain", "unknown key (allowed:",
         in_loader=False, via_subprocess=False),
    Case("focus plane with 2 points", _set("focus", {"mode": "plane", "points_um": [[0, 0, 0], [1000, 0, 5]]}),
         "focus.points_um", "needs at least 3 points [x, y, z], got 2"),
    Case("wafer eaten by its edge exclusion",
         _set("region", {"wafer": {"center_um": [5000, 5000], "diameter_um": 1000, "edge_exclusion_um": 600}}),
         "region.wafer.edge_exclusion_um", "expected less than half of diameter_um (500 µm), got 600"),
]


def write_case(case: Case, folder: Path) -> Path:
    path = folder / "bad.yaml"
    if case.mutate is None:
        path.write_text(case.text, encoding="utf-8")
    else:
        data = copy.deepcopy(demo())
        case.mutate(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def assert_one_line_error(stderr: str, stdout: str, path: Path, field: str, says: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected exactly one line on stderr, got {stderr!r}"
    line = lines[0]
    assert f"{path}: {field}" in line, line
    assert says in line, line
    assert "Traceback" not in stdout + stderr
    assert stdout == "", "a bad config must not print a plan"


CPU = ["--device", "cpu"]
SUBPROCESS_CASES = [c for c in CASES if c.via_subprocess]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Launched]]:
    """Start every subprocess of this module at once; each test collects its own result."""
    launched: dict[str, Launched] = {}

    def start(key: str, args: list[str], path: Path) -> None:
        launched[key] = Launched([a.replace("{path}", str(path)) for a in args], path.parent, path)

    for case in SUBPROCESS_CASES:
        start(case.id, ["scan", "{path}", "--dry-run", *CPU], write_case(case, tmp_path_factory.mktemp("case")))
    start("debug", ["--debug", "scan", "{path}", "--dry-run", *CPU],
          write_case(CASES[1], tmp_path_factory.mktemp("case")))
    start("nonexistent", ["scan", "{path}", "--dry-run", *CPU], tmp_path_factory.mktemp("case") / "no-such.yaml")
    start("demo", ["scan", str(DEMO), "--dry-run"], tmp_path_factory.mktemp("demo") / "unused")
    demo_json = tmp_path_factory.mktemp("demo")
    start("demo json", ["scan", str(DEMO), "--dry-run", "--json", *CPU, "--out", str(demo_json / "run")],
          demo_json / "unused")
    yield launched
    for item in launched.values():
        _ = item.result  # reap every process, also those of tests that failed early


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_bad_config_exits_2_with_one_line_subprocess(case: Case, cli: dict[str, Launched]) -> None:
    """The real command line: exit 2, one stderr line naming file and field, no traceback, nothing written."""
    run = cli[case.id]
    result = run.result
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert_one_line_error(result.stderr, result.stdout, run.path, case.field, case.says)
    assert sorted(p.name for p in run.cwd.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_exits_2_with_one_line_clirunner(case: Case, tmp_path: Path) -> None:
    """The typer app in-process: same exit code and one-line message as the subprocess."""
    path = write_case(case, tmp_path)
    result = CliRunner().invoke(app, ["scan", str(path), "--dry-run", "--device", "cpu"])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert_one_line_error(result.stderr, result.stdout, path, case.field, case.says)


@pytest.mark.parametrize("case", [c for c in CASES if c.in_loader], ids=[c.id for c in CASES if c.in_loader])
def test_load_config_raises_config_error_naming_the_field(case: Case, tmp_path: Path) -> None:
    """The library API: load_config raises ConfigError with the file and field as attributes."""
    path = write_case(case, tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    if case.mutate is not None:  # a YAML syntax error has a line and column instead of a field
        assert info.value.field == case.field
    assert str(info.value).startswith(f"{path}: {case.field}")
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_nonexistent_file_exits_2(cli: dict[str, Launched]) -> None:
    """A config path that does not exist is bad input (2), reported in one line naming the path."""
    run = cli["nonexistent"]
    assert run.result.returncode == 2
    assert_one_line_error(run.result.stderr, run.result.stdout, run.path, "file not found", "file not found")


def test_debug_shows_the_traceback(cli: dict[str, Launched]) -> None:
    """--debug trades the one-line message for the full traceback of the ConfigError."""
    result = cli["debug"].result
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError" in result.stderr
    assert "stage.limits_um.w_um" in result.stderr


def test_demo_config_validates() -> None:
    """configs/demo.yaml is a valid config with the values the README promises."""
    config = load_config(DEMO)
    assert isinstance(config, ScanConfig)
    assert config.stage.plugin == "simulator" and config.camera.plugin == "simulator"
    assert config.region.rectangle is not None
    assert (config.region.rectangle.corner1_um, config.region.rectangle.corner2_um) == ((0, 0), (10000, 10000))
    assert config.overlap_percent == 10 and config.order == "snake"
    assert (config.material.name, config.material.oxide_nm) == ("graphene", 90)
    assert [d.name for d in config.detectors] == ["contrast"]


def test_demo_dry_run_prints_the_plan_and_writes_nothing(cli: dict[str, Launched]) -> None:
    """scan --dry-run on the demo exits 0, prints the tile count and creates no run directory."""
    run = cli["demo"]
    result = run.result
    assert result.returncode == 0, result.stderr
    assert f"{DEMO_TILES} tiles (6 rows x 4 columns)" in result.stdout
    assert "would write to runs/demo-" in result.stdout
    assert result.stderr == ""
    assert list(run.cwd.iterdir()) == [], "a dry run must not create anything"

    run = cli["demo json"]
    result = run.result
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["tiles"] == DEMO_TILES == len(plan["tile_positions_um"])
    assert plan["run_dir"] == str(run.cwd / "run")
    assert list(run.cwd.iterdir()) == []
