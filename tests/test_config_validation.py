"""Bad configs are refused at the door (issue 11): before anything is written, in ``scan --dry-run``
alike, with exit 2 and one line of bounded length naming the file, the dotted field and what was
expected.

Each case is an edit of ``configs/demo.yaml`` (or a YAML text) checked through the library
(`load_config` + `make_plan`, what ``scan --dry-run`` runs) and, where it says so, through the typer
app in-process (``scan CONFIG --dry-run``). No real scan runs here.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from flakehunter.acquisition.plan import make_plan
from flakehunter.cli import app
from flakehunter.cli._common import error, reports_errors, state
from flakehunter.config import ConfigFile, load_config, load_detect_config, validate_plugin_options
from flakehunter.config_yaml import MAX_YAML_DEPTH, parse_yaml, read_config_text
from flakehunter.errors import MAX_MESSAGE_CHARS, ConfigError, InputError, one_line, short_repr
from flakehunter.registry import get_registry

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


def demo() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text(encoding="utf-8"))


def _set(dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        for key in parents:
            data = data.setdefault(key, {})
        data[last] = value

    return mutate


def validate(path: Path) -> Any:
    """What ``scan CONFIG --dry-run`` checks: the config, then the plan (plugins, budgets, travel)."""
    return make_plan(load_config(path), path, get_registry())


def refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(path)
    return info.value


def dry_run(path: Path, *extra: str) -> Any:
    return CliRunner().invoke(app, ["scan", str(path), "--dry-run", "--device", "cpu", *extra])


def assert_one_line_exit_2(result: Any, path: Path | None, field: str, says: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    assert f"{path}: {field}" in line if path is not None else field in line, line
    assert says in line, line
    assert len(line) <= len("error: ") + MAX_MESSAGE_CHARS, len(line)
    assert "Traceback" not in result.output
    assert result.stdout == "", "a refused config prints no plan"
    return line


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[dict[str, Any]], None]
    field: str
    says: str


NAN, INF = float("nan"), float("inf")

# One per defect of issue 11 items 5-7 and 9 that belongs to config validation.
CASES = [
    Case("settle_s .inf", _set("stage.options.settle_s", INF), "stage.options.settle_s",
         "expected a finite number, got inf"),
    Case("pixel_size_um 1e308", _set("optics.pixel_size_um", 1e308), "optics.pixel_size_um",
         "less than or equal to 10000, got 1e+308"),
    Case("pixel_size_um 1e-4", _set("optics.pixel_size_um", 1e-4), "optics.pixel_size_um",
         "0.0001 µm/px gives ~3.1e+09 tiles"),
    Case("corner at 1e15", _set("region.rectangle.corner2_um", [1e15, 10000]), "region.rectangle.corner2_um[0]",
         "less than or equal to 1000000000, got 1000000000000000.0"),
    Case("NaN in limits_um", _set("stage.limits_um.x_um", [NAN, 30000]), "stage.limits_um.x_um[0]",
         "finite number, got nan"),
    Case("NaN in focus.z_um", _set("focus.z_um", NAN), "focus.z_um", "finite number, got nan"),
    Case("NaN in a region corner", _set("region.rectangle.corner1_um", [0, NAN]), "region.rectangle.corner1_um[1]",
         "finite number, got nan"),
    Case("oxide_nm .inf", _set("material.oxide_nm", INF), "material.oxide_nm", "finite number, got inf"),
    Case("collinear focus points",
         _set("focus", {"mode": "plane", "points_um": [[0, 0, 0], [5000, 5000, 3], [10000, 10000, 6]]}),
         "focus.points_um", "span a plane: all 3 lie on one line"),
    Case("focus points at one spot",
         _set("focus", {"mode": "plane", "points_um": [[0, 0, 0], [0, 0, 3], [5000, 5000, 6]]}),
         "focus.points_um", "span a plane: all 3 lie on one line"),
    Case("missing profile file", _set("detectors", [{"name": "contrast", "options": {"profile": "lab.json"}}]),
         "detectors[0].options.profile", "no such file"),
    Case("missing flat-field image", _set("optics.flatfield", "flat.tif"), "optics.flatfield[0]",
         "no such image file"),
    Case("detectors []", _set("detectors", []), "detectors", "at least one detector is needed"),
    Case("name ../../../x", _set("name", "../../../x"), "name", "expected a plain file name"),
    Case("seed true", _set("seed", True), "seed", "expected an integer, got True"),
    Case("seed 7.5", _set("seed", 7.5), "seed", "got 7.5"),
    Case("seed 7.0", _set("seed", 7.0), "seed", "expected an integer, got 7.0"),
    Case("camera shape [0, 0]", _set("camera.options.shape", [0, 0]), "camera.options.shape",
         "at least 1 pixel each, got [0, 0]"),
    Case("camera frame over the memory budget", _set("camera.options.shape", [20000, 20000]), "camera.options.shape",
         "400 megapixels per frame (budget 100; raise budget.max_tile_megapixels"),
    Case("true as a plugin's number", _set("stage.options.settle_s", True), "stage.options.settle_s",
         "expected a number, got True"),
    Case("inf in a detector option",
         _set("detectors", [{"name": "contrast", "options": {"calibration_search_nm": INF}}]),
         "detectors[0].options.calibration_search_nm", "expected a finite number, got inf"),
    Case("NaN deep in a plugin option", _set("camera.options.chip", {"origin_um": [0, NAN], "size_um": [1, 1]}),
         "camera.options.chip.origin_um[1]", "finite number, got nan"),
    Case("tile budget", _set("budget.max_tiles", 23), "optics.pixel_size_um",
         "gives ~24 tiles of 2796 x 1885 µm over the 1e+04 x 1e+04 µm region (budget 23; raise budget.max_tiles"),
    Case("focus grid too large", _set("focus", {"mode": "map", "grid": [1000, 1000]}), "focus.grid",
         "1 to 100 each"),
    Case("autofocus with too many frames",
         _set("focus", {"mode": "map", "coarse_step_um": 0.001, "fine_step_um": 1e-4}),
         "focus", "frames per autofocus (at most 1000)"),
]


def write(tmp_path: Path, mutate: Callable[[dict[str, Any]], None] | None = None, name: str = "bad.yaml") -> Path:
    data = demo()
    if mutate is not None:
        mutate(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_is_refused_naming_the_field(case: Case, tmp_path: Path) -> None:
    """The library: a ConfigError naming the file and the field, one line, bounded; nothing written."""
    path = write(tmp_path, case.mutate)
    err = refused(path)
    assert err.path == str(path) and err.field == case.field, str(err)
    assert case.says in str(err), str(err)
    assert "\n" not in str(err) and len(str(err)) <= MAX_MESSAGE_CHARS
    assert err.exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_dry_run_exits_2_with_one_line(case: Case, tmp_path: Path) -> None:
    """The command line: ``scan CONFIG --dry-run`` exits 2 with the same single line."""
    path = write(tmp_path, case.mutate)
    assert_one_line_exit_2(dry_run(path), path, case.field, case.says)


def test_huge_pixel_plans_allocate_nothing(tmp_path: Path) -> None:
    """A pixel of 1e-4 µm (3e9 tiles) is refused from the region and the field of view, before any tile
    exists: quickly and within a few MB (it used to try to allocate 23 GiB)."""
    path = write(tmp_path, _set("optics.pixel_size_um", 1e-4))
    get_registry()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        refused(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < 20e6, peak


def test_a_region_larger_than_any_wafer_is_blamed(tmp_path: Path) -> None:
    """Within the stage's (wide) travel, a 100 m region is named as the cause, with the tile count."""
    def mutate(data: dict[str, Any]) -> None:
        data["stage"]["limits_um"] = {"x_um": [-1e9, 1e9], "y_um": [-1e9, 1e9]}
        data["region"]["rectangle"]["corner2_um"] = [1e8, 1e8]

    err = refused(write(tmp_path, mutate))
    assert err.field == "region"
    assert "a 1e+08 x 1e+08 µm region needs ~2.34e+09 tiles" in str(err) and "budget 100000" in str(err)


def test_a_region_far_outside_the_travel_is_refused_before_planning(tmp_path: Path) -> None:
    err = refused(write(tmp_path, _set("region.rectangle.corner2_um", [9e8, 10000])))
    assert err.field == "region"
    assert "outside the stage's travel stage.limits_um.x_um [-5000, 30000]" in str(err)


def test_the_tile_budget_is_exact_for_rectangles(tmp_path: Path) -> None:
    """The demo plans 24 tiles: a budget of 24 passes, 23 is refused (above)."""
    plan = validate(write(tmp_path, _set("budget.max_tiles", 24)))
    assert len(plan.tiles) == 24


def test_wafer_tile_budget_counts_the_planned_tiles(tmp_path: Path) -> None:
    """For a wafer the estimate before planning is rough; the planned count is checked exactly."""
    path = write(tmp_path, _set("region", {"wafer": {"center_um": [5000, 5000], "diameter_um": 10000}}))
    tiles = len(validate(path).tiles)
    validate(write(tmp_path, lambda d: (_set("region", {"wafer": {"center_um": [5000, 5000], "diameter_um": 10000}})(d),
                                        _set("budget.max_tiles", tiles)(d))))
    err = refused(write(tmp_path, lambda d: (_set("region", {"wafer": {"center_um": [5000, 5000],
                                                                      "diameter_um": 10000}})(d),
                                             _set("budget.max_tiles", tiles - 1)(d))))
    assert f"~{tiles} tiles" in str(err) and f"budget {tiles - 1}" in str(err)


def test_camera_shape_problems_are_not_blamed_on_the_rotation(tmp_path: Path) -> None:
    """A frame too small for any field is the camera's fault; a rotation that leaves none is the rotation's."""
    assert refused(write(tmp_path, _set("camera.options.shape", [1, 1]))).field == "camera.options.shape"
    err = refused(write(tmp_path, lambda d: (_set("camera.options.shape", [10, 2000])(d),
                                             _set("optics.rotation_deg", 45)(d))))
    assert err.field == "optics.rotation_deg", str(err)


# -- names that are not plain file names -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../x", "..", ".hidden", "a/b", "a\\b", "tab\there", "x" * 101, ""])
def test_scan_name_must_be_a_plain_file_name(name: str, tmp_path: Path) -> None:
    err = refused(write(tmp_path, _set("name", name)))
    assert err.field == "name" and "expected a plain file name" in str(err)
    assert "\t" not in str(err)


def test_plain_scan_names_pass(tmp_path: Path) -> None:
    for name in ("chip-7_A", "graphene 2026.05", "x" * 100, "µ-chip"):
        assert load_config(write(tmp_path, _set("name", name))).name == name


def test_dry_run_with_a_bad_name_writes_nothing_outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``name: ../../../x`` used to create config.yaml and tiles/ three folders up; now it is refused."""
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    path = write(work, _set("name", "../../../x"))
    assert_one_line_exit_2(dry_run(path), path, "name", "expected a plain file name")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "bad.yaml", "c"]


# -- the YAML itself --------------------------------------------------------------------------------------


def test_duplicate_keys_are_refused_with_line_and_column(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8")
    path = tmp_path / "dup.yaml"
    path.write_text(text + "\nseed: 3\n", encoding="utf-8")
    last = len((text + "\nseed: 3\n").splitlines())
    first = text.splitlines().index("seed: 7") + 1
    result = dry_run(path)
    assert_one_line_exit_2(result, path, "seed", f"duplicate key at line {last}, column 1 (first at line {first}")


def test_nested_duplicate_keys_name_the_dotted_field(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8").replace("    settle_s: 0.02\n", "    settle_s: 0.02\n    settle_s: 5\n")
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "stage.options.settle_s" and "duplicate key at line" in str(info.value)


def test_merge_keys_may_override_what_they_merge() -> None:
    """``<<`` merges are not duplicates: the explicit key wins, as YAML says."""
    data = parse_yaml("base: &b {a: 1, b: 2}\nother: {<<: *b, b: 3}\n")
    assert data["other"] == {"a": 1, "b": 3}


def test_ten_thousand_nested_brackets_are_a_config_error(tmp_path: Path) -> None:
    """Used to end in RecursionError (exit 1)."""
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 10_000 + "]" * 10_000 + "\n", encoding="utf-8")
    started = time.perf_counter()
    line = assert_one_line_exit_2(dry_run(path), path, "line 1, column", f"nested deeper than {MAX_YAML_DEPTH} levels")
    assert time.perf_counter() - started < 5.0, line


def test_aliases_cannot_nest_deeper_than_the_limit() -> None:
    """Each anchor adds one level of text but a whole level of depth once expanded."""
    text = "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 3 * MAX_YAML_DEPTH))
    with pytest.raises(ConfigError, match="nested deeper than 64 levels through aliases"):
        parse_yaml(text, "x.yaml")
    doubling = "a0: &a0 [1, 1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, 1100))
    with pytest.raises(ConfigError) as info:  # 2**1100 values: counted as a float, no OverflowError
        parse_yaml(doubling, "x.yaml")
    assert info.value.field == "a1099"


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml("name: &a [1, *a]\n", "x.yaml")
    assert info.value.field == "name" and "recursive YAML alias" in str(info.value)


def _laughs(levels: int, key: str = "name") -> str:
    """A document whose ``key`` expands to 10**levels strings through anchors (a "billion laughs")."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines).replace(f"l{levels - 1}: &", f"{key}: &") + "\n"


def test_anchor_grown_name_gives_a_short_line_fast(tmp_path: Path) -> None:
    """A ``name`` grown by anchors to 10**9 values used to print a 254 MB line after 8 s."""
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(9), encoding="utf-8")
    started = time.perf_counter()
    line = assert_one_line_exit_2(dry_run(path), path, "name", "more than 50000 values (aliases counted as expanded)")
    assert time.perf_counter() - started < 2.0, line


def test_an_anchor_grown_value_under_the_limit_is_shown_short(tmp_path: Path) -> None:
    """10**4 values pass the expansion limit; the refusal shows the value cut to ~80 characters."""
    path = tmp_path / "laughs.yaml"
    path.write_text(DEMO.read_text(encoding="utf-8").replace("name: demo\n", "") + _laughs(4), encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.perf_counter() - started < 2.0
    assert info.value.field == "name" and "got [[[" in str(info.value)
    assert len(info.value.message) < 150, info.value.message


@pytest.mark.parametrize(("text", "field", "says"), [
    ("name: a\x00b\n", "line 1, column 8", "character #x0000 is not allowed"),
    ("seed: 2001-13-45\n", "seed", "cannot read the value at line 1, column 7: month must be in 1..12"),
    ("name: !!python/name:os.system\n", "line 1, column 7", "could not determine a constructor"),
    ("a: 1\n---\nb: 2\n", "line 2, column 1", "YAML syntax error"),
    ("".join(f"k{i}: {i}\n" for i in range(600)), "line 500, column", "more than 1000 values"),
], ids=["NUL", "13th month", "python tag", "two documents", "too many values"])
def test_odd_yaml_is_a_config_error(text: str, field: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flakehunter.config_yaml.MAX_YAML_VALUES", 1000)  # the real limit takes seconds to parse
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "x.yaml")
    assert str(info.value.field).startswith(field) and says in str(info.value), str(info.value)


def test_huge_integer_is_a_config_error() -> None:
    """Python refuses to read an integer of more than 4300 digits; that is a bad value, not a crash."""
    with pytest.raises(ConfigError) as info:
        parse_yaml("stage:\n  options:\n    steps: " + "9" * 5000 + "\n", "x.yaml")
    assert info.value.field == "stage.options.steps", str(info.value)
    assert "cannot read the value at line 3, column 12" in str(info.value) and len(str(info.value)) < 300


# -- the file itself ------------------------------------------------------------------------------------


def test_missing_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "no-such.yaml"
    assert_one_line_exit_2(dry_run(path), path, "file not found", "file not found")


def test_non_utf8_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(DEMO.read_bytes().replace(b"name: demo", b"name: d\xe9mo"))
    assert_one_line_exit_2(dry_run(path), path, "not UTF-8 text", "byte 0xe9 at offset")


def test_config_folder_and_empty_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        read_config_text(tmp_path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(empty)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read: permission denied"):
        load_config(path)


@pytest.mark.parametrize("kind", ["missing", "non-UTF-8"])
def test_unreadable_config_with_out_exits_2(kind: str, tmp_path: Path) -> None:
    """Used to be exit 1 with ``FileNotFoundError`` when ``--out`` was given."""
    path = tmp_path / "config.yaml"
    if kind == "non-UTF-8":
        path.write_bytes(b"name: d\xe9mo\n")
    result = dry_run(path, "--out", str(tmp_path / "run"))
    assert_one_line_exit_2(result, path, "", "file not found" if kind == "missing" else "not UTF-8 text")


# -- files named in a config ------------------------------------------------------------------------------


def _profile_options(value: str) -> Callable[[dict[str, Any]], None]:
    return _set("detectors", [{"name": "contrast", "options": {"profile": value}}])


def test_profile_path_resolves_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "lab.json").write_text("{}", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative path is relative to the config, not to the current folder
    path = write(tmp_path, _profile_options("profiles/lab.json"))
    validate(path)
    from flakehunter.plugins.contrast.detector import ContrastDetector

    options = validate_plugin_options(ContrastDetector, {"profile": "profiles/lab.json"}, path, "detectors[0].options")
    assert options.profile == str(tmp_path / "profiles" / "lab.json")


def test_profile_by_name_from_the_profile_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile may be a name found in $FLAKEHUNTER_PROFILES; the name is kept for load_profile."""
    library = tmp_path / "library"
    library.mkdir()
    (library / "graphene-5x.json").write_text("{}", encoding="utf-8")
    monkeypatch.setenv("FLAKEHUNTER_PROFILES", str(library))
    path = write(tmp_path, _profile_options("graphene-5x"))
    validate(path)
    err = refused(write(tmp_path, _profile_options("graphene-10x")))
    assert err.field == "detectors[0].options.profile"
    assert f"and no graphene-10x.json in {library}" in str(err)


def test_profile_folder_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "lab.json").mkdir()
    err = refused(write(tmp_path, _profile_options("lab.json")))
    assert "is a folder, not a file" in str(err)


def test_flatfield_relative_to_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flat.tif").write_bytes(b"II*\x00")
    monkeypatch.chdir(REPO)
    validate(write(tmp_path, _set("optics.flatfield", ["flat.tif"])))
    err = refused(write(tmp_path, _set("optics.flatfield", ["flat.tif", "flat2.tif"])))
    assert err.field == "optics.flatfield[1]" and str(tmp_path / "flat2.tif") in str(err)


class _LayoutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layout: ConfigFile | None = None
    speed_um_s: float = 1.0


class _Plugin:
    Options = _LayoutOptions


def test_config_file_options_resolve_against_the_config_folder(tmp_path: Path) -> None:
    """The generic mechanism for plugin options that name files (the simulator's layout uses it)."""
    (tmp_path / "chip.json").write_text("{}", encoding="utf-8")
    config = tmp_path / "wafer.yaml"
    options = validate_plugin_options(_Plugin, {"layout": "chip.json"}, config, "camera.options")
    assert options.layout == tmp_path / "chip.json"
    with pytest.raises(ConfigError) as info:
        validate_plugin_options(_Plugin, {"layout": "nope.json"}, config, "camera.options")
    assert str(info.value) == f"{config}: camera.options.layout: no such file {tmp_path / 'nope.json'}"
    other = tmp_path / "other"
    other.mkdir()
    (other / "nope.json").write_text("{}", encoding="utf-8")
    options = validate_plugin_options(_Plugin, {"layout": "nope.json"}, config, "camera.options",
                                      context={"config_dir": other})
    assert options.layout == other / "nope.json"
    with pytest.raises(ConfigError, match=r"camera\.options\.speed_um_s: expected a finite number, got nan"):
        validate_plugin_options(_Plugin, {"speed_um_s": NAN}, config, "camera.options")


def test_simulator_layout_must_exist_in_dry_run(tmp_path: Path) -> None:
    """Once ``SimulatorCameraOptions.layout`` is a ConfigFile, a missing layout fails the dry run."""
    from flakehunter.hardware.simulator.camera import SimulatorCameraOptions

    if "ExistingFile" not in repr(SimulatorCameraOptions.model_fields["layout"].annotation):
        pytest.skip("hardware/simulator/camera.py: layout is not a ConfigFile yet")
    err = refused(write(tmp_path, _set("camera.options.layout", "chip-layout.json")))
    assert err.field == "camera.options.layout" and "no such file" in str(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


# -- bounded lines and quiet warnings -----------------------------------------------------------------------


def test_error_lines_are_bounded() -> None:
    err = ConfigError("/x/" + "d" * 1000 + "/wafer.yaml", "stage." + "o" * 500, "expected " + "y" * 10_000)
    text = str(err)
    assert len(text) <= MAX_MESSAGE_CHARS and "\n" not in text
    assert text.startswith("/x/ddd") and "wafer.yaml: stage.ooo" in text and text.endswith("yyy")
    assert one_line("a\nb\x00c") == "a b\\x00c"
    assert len(short_repr([[list(range(1000))] * 1000] * 1000)) <= 80
    assert "digits" in short_repr(10**100_000)
    assert short_repr("x" * 10**7).startswith("'xxx") and len(short_repr("x" * 10**7)) <= 80


def test_cli_error_bounds_the_whole_line(capsys: pytest.CaptureFixture[str]) -> None:
    error("boom " * 10_000 + "\nsecond line")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) <= len("error: ") + MAX_MESSAGE_CHARS + 1
    assert err.rstrip().endswith("second line")


def _warn_then_fail() -> None:
    warnings.warn("overflow encountered in multiply", RuntimeWarning, stacklevel=1)
    raise InputError("bad.yaml: optics.pixel_size_um: expected a positive number")


@pytest.mark.parametrize("debug", [False, True])
def test_library_warnings_do_not_precede_the_error(debug: bool) -> None:
    """A numpy RuntimeWarning is logged at debug level: hidden before the one-line error, shown with --debug."""
    probe = typer.Typer()
    probe.command()(reports_errors(_warn_then_fail))
    saved = state.debug
    state.debug = debug
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            result = CliRunner().invoke(probe, [])
    finally:
        state.debug = saved
    if debug:
        assert "RuntimeWarning: overflow encountered in multiply" in result.stderr
        assert isinstance(result.exception, InputError)
    else:
        assert result.exit_code == 2
        assert result.stderr == "error: bad.yaml: optics.pixel_size_um: expected a positive number\n"


# -- every shipped config still passes, fast ----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    if path.name == "watch.yaml":
        config = load_detect_config(path)
        assert config.detectors and math.isfinite(config.watch.settle_s)
        return
    plan = validate(path)
    assert 0 < len(plan.tiles) <= plan.config.budget.max_tiles
    json.dumps(plan.describe(), allow_nan=False)


def test_demo_validates_well_under_a_second() -> None:
    get_registry()
    validate(DEMO)  # plugin modules imported once
    started = time.perf_counter()
    for _ in range(5):
        validate(DEMO)
    assert (time.perf_counter() - started) / 5 < 0.2


def test_budget_defaults_are_documented() -> None:
    from flakehunter.config import BudgetConfig

    for name, field in BudgetConfig.model_fields.items():
        assert field.description, name
    assert copy.deepcopy(load_config(DEMO).budget) == BudgetConfig()
