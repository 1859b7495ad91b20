"""Acceptance: `flakehunter plugins` lists the built-ins; a third-party plugin that raises on import
does not stop a scan.

Third-party plugins are real distributions: a module plus a ``NAME-VERSION.dist-info`` folder
(METADATA, entry_points.txt) in ``tmp_path``, put on PYTHONPATH of a subprocess, exactly how
importlib.metadata finds an installed package. In-process tests use `flakehunter.registry.add_plugin`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import flakehunter
from flakehunter import registry as fh_registry
from flakehunter.errors import PluginError
from flakehunter.hookspecs import hookimpl
from flakehunter.materials import Material
from tests.conftest import SMALL_SCAN, deep_update

BUILTINS = {
    "contrast": {"registered": ["detector contrast"], "hooks": {"register_detectors", "register_commands"}},
    "materials": {
        "registered": [f"material {m}" for m in ("graphene", "hbn", "mos2", "wse2", "mose2", "ws2")],
        "hooks": {"register_materials"},
    },
    "simulator": {
        "registered": ["stage simulator", "camera simulator"],
        "hooks": {"register_stages", "register_cameras", "register_commands", "scan_started"},
    },
}

BROKEN_SOURCE = 'raise RuntimeError("broken_fh_plugin exploded on import")\n'

CLASH_SOURCE = '''
from flakehunter.hookspecs import hookimpl


class FancyStage:
    def __init__(self, options, context):
        pass


@hookimpl
def register_stages(register):
    register("simulator", FancyStage)  # taken by the built-in simulator
    register("fancy", FancyStage)
'''

#: A very small scan: 800 x 800 µm with a 200 x 300 px camera and a handful of objects.
TINY_SCAN: dict[str, Any] = deep_update(
    SMALL_SCAN,
    {
        "seed": 5,
        "camera": {
            "options": {
                "shape": [200, 300],
                "chip": {"size_um": [800, 800], "thin_flakes": 4, "thick_flakes": 2, "multilayer_flakes": 1,
                         "residue_blobs": 2, "dust": 10},
            }
        },
        "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [800, 800]}},
    },
)


@pytest.fixture(autouse=True)
def fresh_registry():
    """Every test builds its own registry, and leaves none behind."""
    fh_registry.reset()
    yield
    fh_registry.reset()


def make_distribution(root: Path, module: str, source: str, *, dist: str, entry: str, version: str = "0.1") -> None:
    """An installed-looking distribution: ``module.py`` plus its dist-info with one entry point."""
    (root / f"{module}.py").write_text(source, encoding="utf-8")
    info = root / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[flakehunter]\n{entry} = {module}\n", encoding="utf-8")


def run_cli(*args: str, path: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m flakehunter ARGS`` with ``path`` on PYTHONPATH and the given FLAKEHUNTER_* variables."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLAKEHUNTER_")}
    environ["COLUMNS"] = "200"  # rich wraps its table and messages to the terminal width
    if path is not None:
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), environ.get("PYTHONPATH")]))
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "flakehunter", *args], capture_output=True, text=True, timeout=180, env=environ
    )


def plugins_json(path: Path | None = None, **env: str) -> dict[str, Any]:
    result = run_cli("plugins", "--json", path=path, **env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A folder holding an installed third-party plugin whose import raises RuntimeError."""
    root = tmp_path / "site"
    root.mkdir()
    make_distribution(root, "broken_fh_plugin", BROKEN_SOURCE, dist="broken_fh_plugin", entry="broken")
    return root


def write_tiny_config(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SCAN), encoding="utf-8")
    return path


# -- the built-ins ----------------------------------------------------------------------------------


def test_plugins_json_lists_the_builtins() -> None:
    """`plugins --json` lists materials, contrast and simulator from package flakehunter, with their hooks."""
    listing = plugins_json()
    assert listing["problems"] == []
    by_name = {p["name"]: p for p in listing["plugins"]}
    assert set(BUILTINS) <= {name for name, p in by_name.items() if p["package"] == "flakehunter"}
    for name, expected in BUILTINS.items():
        plugin = by_name[name]
        assert plugin["package"] == "flakehunter"
        assert plugin["version"] == flakehunter.__version__
        assert sorted(plugin["registered"]) == sorted(expected["registered"])
        assert set(plugin["hooks"]) == expected["hooks"]


def test_plugins_table_lists_the_builtins() -> None:
    """The human-readable `plugins` table names each built-in with its package and contributions."""
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    for name in BUILTINS:
        assert name in result.stdout
    for contribution in ("detector contrast", "material graphene", "stage simulator", "camera simulator"):
        assert contribution in result.stdout
    assert "problem" not in result.stdout


# -- a third-party plugin that raises on import -----------------------------------------------------


def test_broken_plugin_is_reported_and_skipped(broken: Path) -> None:
    """A plugin raising at import is listed as a problem (with its package and error) and the rest load."""
    listing = plugins_json(broken)
    names = {p["name"] for p in listing["plugins"]}
    assert set(BUILTINS) <= names and "broken" not in names
    [problem] = listing["problems"]
    assert problem["plugin"] == "broken"
    assert problem["package"] == "broken_fh_plugin"
    assert "RuntimeError: broken_fh_plugin exploded on import" in problem["problem"]

    table = run_cli("plugins", path=broken)
    assert table.returncode == 0, table.stderr
    assert "materials" in table.stdout and "simulator" in table.stdout
    assert "plugin 'broken' (broken_fh_plugin)" in table.stdout
    assert "exploded on import" in table.stdout
    assert "Traceback" not in table.stdout + table.stderr


def test_scan_completes_despite_a_broken_plugin(broken: Path, tmp_path: Path) -> None:
    """A scan runs to completion (exit 0, candidates.csv written) with a broken plugin installed."""
    config = write_tiny_config(tmp_path)
    out = tmp_path / "run"
    result = run_cli("scan", str(config), "--out", str(out), "--device", "cpu", "--no-progress", path=broken)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "exploded on import" in result.stderr  # reported, not silently swallowed
    with (out / "candidates.csv").open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert {"id", "x_um", "y_um", "material", "layers", "layer_class", "score"} <= set(header)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed"
    assert "broken" not in manifest["versions"]["plugins"]


def test_strict_mode_reraises_the_import_error(broken: Path, tmp_path: Path) -> None:
    """FLAKEHUNTER_STRICT_PLUGINS=1 turns the broken import into a failure that shows the RuntimeError."""
    config = write_tiny_config(tmp_path)
    out = tmp_path / "run"
    result = run_cli("scan", str(config), "--out", str(out), "--device", "cpu", path=broken,
                     FLAKEHUNTER_STRICT_PLUGINS="1")
    assert result.returncode != 0
    assert "RuntimeError: broken_fh_plugin exploded on import" in result.stderr
    assert not out.exists()

    listing = run_cli("--debug", "plugins", path=broken, FLAKEHUNTER_STRICT_PLUGINS="1")
    assert listing.returncode != 0
    assert "Traceback" in listing.stderr and "broken_fh_plugin.py" in listing.stderr  # the author's traceback


def test_load_plugins_limits_what_loads(broken: Path) -> None:
    """FLAKEHUNTER_LOAD_PLUGINS loads only the named entry points (the broken one is never imported)."""
    listing = plugins_json(broken, FLAKEHUNTER_LOAD_PLUGINS="materials, simulator", FLAKEHUNTER_STRICT_PLUGINS="1")
    assert {p["name"] for p in listing["plugins"]} == {"materials", "simulator"}
    assert listing["problems"] == []

    nothing = plugins_json(broken, FLAKEHUNTER_LOAD_PLUGINS="")
    assert nothing == {"plugins": [], "problems": []}


# -- name clashes and invalid contributions ---------------------------------------------------------


@pytest.mark.parametrize("entry", ["aaa_clash", "zzz_clash"])
def test_third_party_name_clash_is_rejected(entry: str, tmp_path: Path) -> None:
    """A third-party stage named 'simulator' is rejected naming both packages, whatever its entry name
    sorts as; its other stage still registers and the built-in keeps the name."""
    make_distribution(tmp_path, "clash_fh_plugin", CLASH_SOURCE, dist="clash-fh-plugin", entry=entry)
    listing = plugins_json(tmp_path)
    by_name = {p["name"]: p for p in listing["plugins"]}
    assert by_name["simulator"]["registered"] == ["stage simulator", "camera simulator"]
    assert by_name[entry]["package"] == "clash-fh-plugin"
    assert by_name[entry]["registered"] == ["stage fancy"]
    [problem] = listing["problems"]
    assert problem["plugin"] == entry and problem["package"] == "clash-fh-plugin"
    assert "stage 'simulator' is already registered by flakehunter" in problem["problem"]

    table = run_cli("plugins", path=tmp_path)
    [line] = [line for line in table.stdout.splitlines() if line.startswith("problem:")]
    assert "clash-fh-plugin" in line and "flakehunter" in line


def _material(name: str) -> Material:
    return Material(
        name=name, display_name=name, layer_thickness_nm=0.7, edge_symmetry_deg=60.0,
        index=lambda wavelength_nm, layers: np.full(np.shape(wavelength_nm), 4.0 + 1.0j),
    )


class _Contributions:
    """An in-process plugin with one valid and one invalid contribution of each kind it touches."""

    @hookimpl
    def register_stages(self, register: Any) -> None:
        register("notcallable", 42)
        register("Bad Name", lambda options, context: None)
        register("good-stage", lambda options, context: None)

    @hookimpl
    def register_materials(self, register: Any) -> None:
        register("fakium", _material("otherium"))
        register("goodium", _material("goodium"))


def test_invalid_contributions_are_rejected_and_the_valid_ones_kept() -> None:
    """Non-callable factories, bad names and a material registered under another name are rejected."""
    registry = fh_registry.add_plugin(_Contributions(), name="contrib", package="contrib-pkg", version="1.0")
    assert "good-stage" in registry.names("stage")
    assert "notcallable" not in registry.names("stage") and "Bad Name" not in registry.names("stage")
    assert registry.get("stage", "good-stage").package == "contrib-pkg"
    assert "goodium" in registry.names("material") and "fakium" not in registry.names("material")
    assert set(registry.names("material")) >= {"graphene", "hbn", "mos2", "wse2"}
    messages = {p.message for p in registry.problems if p.plugin == "contrib" and p.package == "contrib-pkg"}
    assert messages == {
        "stage 'notcallable' must be a callable factory",
        "stage name 'Bad Name' is not a lower-case identifier",
        "material 'fakium' must be a Material named 'fakium'",
    }


def test_in_process_clash_keeps_the_builtin() -> None:
    """add_plugin cannot take over a built-in name: the clash is reported naming both packages."""

    class Clash:
        @hookimpl
        def register_cameras(self, register: Any) -> None:
            register("simulator", lambda options, context: None)

    registry = fh_registry.add_plugin(Clash(), name="clash", package="clash-pkg")
    assert registry.get("camera", "simulator").package == "flakehunter"
    [problem] = [p for p in registry.problems if p.plugin == "clash"]
    assert problem.package == "clash-pkg"
    assert "already registered by flakehunter (plugin 'simulator')" in problem.message


def test_register_hook_that_raises_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A register hook that raises is a reported problem; strict mode re-raises it."""

    class Raising:
        @hookimpl
        def register_detectors(self, register: Any) -> None:
            raise ValueError("no detectors today")

    registry = fh_registry.add_plugin(Raising(), name="raising", package="raising-pkg")
    assert "contrast" in registry.names("detector")
    assert [p.message for p in registry.problems if p.plugin == "raising"] == [
        "register_detectors raised ValueError: no detectors today"
    ]

    fh_registry.reset()
    monkeypatch.setenv(fh_registry.STRICT_ENV, "1")
    with pytest.raises(PluginError, match="must be a callable factory"):
        fh_registry.add_plugin(_Contributions(), name="contrib", package="contrib-pkg")


# -- calls go through pluggy --------------------------------------------------------------------------


def test_register_hooks_go_through_pluggys_hook_callers() -> None:
    """A hook wrapper sees every register call, once per plugin, and pluggy's tracing records them."""
    seen: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def register_materials(self, register: Any) -> Any:
            seen.append("material")
            return (yield)

    pm = fh_registry.get_plugin_manager()
    traced: list[str] = []
    undo = pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: traced.append(f"{name}:{','.join(i.plugin_name for i in impls)}"),
        lambda outcome, name, impls, kwargs: None,
    )
    try:
        registry = fh_registry.add_plugin(Wrapper(), name="wrapper")
    finally:
        undo()
    assert "graphene" in registry.names("material")
    # One call per implementing plugin, each with the wrapper around it.
    assert seen == ["material"] * len([t for t in traced if t.startswith("register_materials:")])
    calls = [set(t.split(":")[1].split(",")) for t in traced if t.startswith("register_materials:")]
    assert {"materials", "wrapper"} in calls and all("wrapper" in c for c in calls)
    assert registry.get("material", "graphene").plugin == "materials"


def test_misspelt_hook_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook implementation that matches no spec (a typo) is a reported problem; strict mode raises."""
    import pluggy

    class Typo:
        @hookimpl
        def register_detector(self, register: Any) -> None:  # missing 's'
            register("never", lambda options, context: None)

    registry = fh_registry.add_plugin(Typo(), name="typo", package="typo-pkg")
    [problem] = [p for p in registry.problems if p.plugin == "typo"]
    assert problem.package == "typo-pkg"
    assert "unknown hook 'register_detector'" in problem.message
    assert "never" not in registry.names("detector")

    fh_registry.reset()
    monkeypatch.setenv(fh_registry.STRICT_ENV, "1")
    with pytest.raises(pluggy.PluginValidationError):
        fh_registry.add_plugin(Typo(), name="typo", package="typo-pkg")


def test_plugins_add_commands_and_a_clash_is_refused() -> None:
    """register_commands adds a command to the CLI; one that takes an existing name is refused and reported."""
    import typer

    def hello() -> None:
        typer.echo("hello from a plugin")

    class Commands:
        @hookimpl
        def register_commands(self, cli: Any) -> None:
            cli.command("hello-plugin")(hello)

    class Clashing:
        @hookimpl
        def register_commands(self, cli: Any) -> None:
            cli.command("scan")(hello)

    app = typer.Typer()
    app.command("scan")(lambda: None)
    fh_registry.add_plugin(Commands(), name="commands", package="commands-pkg")
    fh_registry.add_plugin(Clashing(), name="clashing", package="clashing-pkg")
    fh_registry.register_cli_commands(app)
    names = [c.name for c in app.registered_commands]
    assert names.count("scan") == 1 and "hello-plugin" in names
    assert {g.name for g in app.registered_groups} >= {"simulate"}  # the simulator plugin's group
    problems = [p for p in fh_registry.get_registry().problems if p.plugin == "clashing"]
    assert [p.message for p in problems] == ["command(s) scan already exist; ignored"]
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["hello-plugin"])
    assert result.exit_code == 0 and "hello from a plugin" in result.output


# -- lifecycle hooks --------------------------------------------------------------------------------


class _Exploding:
    """Raises in every lifecycle hook."""

    @hookimpl
    def scan_started(self, scan: Any) -> None:
        raise RuntimeError("scan_started exploded")

    @hookimpl
    def tile_acquired(self, scan: Any, tile: Any) -> None:
        raise RuntimeError("tile_acquired exploded")

    @hookimpl
    def candidate_found(self, scan: Any, candidate: Any) -> None:
        raise RuntimeError("candidate_found exploded")

    @hookimpl
    def scan_finished(self, scan: Any, summary: Any) -> None:
        raise RuntimeError("scan_finished exploded")


class _Recorder:
    """Counts the lifecycle events it sees."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    def tile_acquired(self, scan: Any, tile: Any) -> None:
        self.events.append("tile")

    @hookimpl
    def scan_finished(self, scan: Any, summary: Any) -> None:
        self.events.append(summary["status"])


def test_lifecycle_hook_that_raises_does_not_stop_the_scan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A plugin raising in tile_acquired (and every other lifecycle hook) is logged; the scan completes
    and the other plugins still see every event."""
    from flakehunter.scan import Scan

    recorder = _Recorder()
    fh_registry.add_plugin(recorder, name="recorder")
    fh_registry.add_plugin(_Exploding(), name="exploding")
    caplog.set_level(logging.ERROR, logger="flakehunter.registry")
    summary = Scan(write_tiny_config(tmp_path), tmp_path / "run", device="cpu").run()
    assert summary["status"] == "completed"
    assert summary["counts"]["done"] == summary["items_total"] > 1
    assert (tmp_path / "run" / "candidates.csv").exists()
    assert recorder.events == ["tile"] * summary["items_total"] + ["completed"]
    failures = {r.getMessage() for r in caplog.records}
    assert "plugin 'exploding' failed in tile_acquired" in failures
    assert "plugin 'exploding' failed in scan_started" in failures
    assert "plugin 'exploding' failed in scan_finished" in failures
