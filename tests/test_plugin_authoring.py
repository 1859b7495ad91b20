"""Issue 16: plugin authors. A package of each kind from ``new-plugin`` installs, passes its tests and is listed;
docs/plugin-authoring.md's first section works word for word and its hook reference matches the hook specs;
the TaS2 example calibrates and is found in a seeded simulated scan; author mistakes get one line each.

Installed packages go into one throwaway environment per module (`flakehunter.testing.plugin_env.PluginEnv`):
a virtual environment that sees this environment's packages through a ``.pth`` file and installs offline with
``pip install -e --no-deps --no-build-isolation --no-index``; this environment is never changed.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from flakehunter import hookspecs
from flakehunter import registry as fh_registry
from flakehunter.hookspecs import hookimpl
from flakehunter.materials import Material
from flakehunter.testing.contracts import DetectorContract, MaterialContract
from flakehunter.testing.plugin_env import PluginEnv

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "plugin-authoring.md"
EXAMPLE = REPO / "examples" / "flakehunter-tas2"
RWTH = REPO.parent / "shared" / "data" / "real" / "calibration-rwth" / "GMM_Parameters__tas2_90nm.json"
KINDS = ("material", "detector", "stage", "camera")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> PluginEnv:
    """One throwaway environment shared by the tests below (installing is the slow part)."""
    return PluginEnv(tmp_path_factory.mktemp("plugin-env") / "venv")


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


# -- new-plugin: every kind ----------------------------------------------------------------------------------


def test_new_plugin_of_each_kind_installs_passes_its_tests_and_is_listed(env: PluginEnv, tmp_path: Path) -> None:
    """``new-plugin`` writes a package per kind; installed, each is listed with what it registered, and
    ``plugins --check`` runs its shipped tests (the contract suites) against the installed package: all pass."""
    for kind in KINDS:
        ok(env.run("flakehunter", "new-plugin", f"my{kind}", "--kind", kind, "--out", str(tmp_path), cwd=tmp_path))
    packages = [tmp_path / f"flakehunter-my{kind}" for kind in KINDS]
    for package in packages:
        assert {"pyproject.toml", "README.md"} <= {p.name for p in package.iterdir()}
    env.install(*packages)

    listing = json.loads(ok(env.run("flakehunter", "plugins", "--json", cwd=tmp_path)).stdout)
    assert listing["problems"] == []
    rows = {p["name"]: p for p in listing["plugins"]}
    for kind in KINDS:
        row = rows[f"my{kind}"]
        assert row["package"] == f"flakehunter-my{kind}" and row["version"] == "0.1.0"
        assert row["registered"] == [f"{kind} my{kind}"]

    check = env.run("flakehunter", "plugins", "--check", "--json", cwd=tmp_path, timeout=900)
    report = json.loads(check.stdout)
    assert check.returncode == 0 and report["ok"], check.stdout[-4000:]
    rows = {p["name"]: p for p in report["plugins"]}
    for kind in KINDS:
        tests = rows[f"my{kind}"]["tests"]
        assert tests["status"] == "passed", tests
        assert tests["module"] == f"flakehunter_my{kind}.tests"
        passed = re.search(r"(\d+) passed", tests["summary"])
        assert passed and int(passed.group(1)) >= 5, tests["summary"]
        assert "failed" not in tests["summary"] and "error" not in tests["summary"], tests["summary"]


def test_new_plugin_refuses_a_taken_name_and_an_existing_folder(tmp_path: Path) -> None:
    """A built-in's name, a bad name and an existing folder are exit 2 with one line, and nothing is written."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flakehunter", "new-plugin", *args, "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)

    taken = run("graphene", "--kind", "material")
    assert taken.returncode == 2
    assert "material 'graphene' is already registered by flakehunter" in taken.stderr
    bad = run("Bad Name", "--kind", "stage")
    assert bad.returncode == 2 and "not a plugin name" in bad.stderr
    assert run("thing", "--kind", "laser").returncode == 2
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "flakehunter-acme").mkdir()
    exists = run("acme", "--kind", "stage")
    assert exists.returncode == 2 and "already exists" in exists.stderr
    assert "Traceback" not in taken.stderr + bad.stderr + exists.stderr


# -- the document --------------------------------------------------------------------------------------------


def doc_section(title_prefix: str) -> str:
    """The text of the ``## `` section of docs/plugin-authoring.md whose title starts with ``title_prefix``."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title_prefix)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/plugin-authoring.md has no section '## {title_prefix}...'"
    return match.group(1)


def tutorial_steps() -> list[tuple[str, str]]:
    """The first section's code blocks in order: ("file", text) for blocks whose first line is ``# file: PATH``,
    ("command", line) for each command line of a ``bash`` block."""
    steps: list[tuple[str, str]] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", doc_section("Your first plugin"), re.M | re.S):
        if body.startswith("# file: "):
            steps.append(("file", body))
        elif lang == "bash":
            steps += [("command", line.strip()) for line in body.splitlines()
                      if line.strip() and not line.strip().startswith("#")]
    return steps


def test_first_plugin_section_works_word_for_word(env: PluginEnv, tmp_path: Path) -> None:
    """Every command of the first section runs as written in an empty folder (in the throwaway environment,
    whose ``pip install`` is made offline), every file block replaces the file it names, and the result is a
    MoTe2 plugin whose tests pass and which ``flakehunter plugins`` lists."""
    steps = tutorial_steps()
    commands = [text for kind, text in steps if kind == "command"]
    assert [c.split()[:2] for c in commands] == [
        ["flakehunter", "new-plugin"], ["pip", "install"], ["pytest", "flakehunter-mote2"], ["flakehunter", "plugins"]
    ], commands
    assert sum(kind == "file" for kind, _ in steps) == 2
    outputs = {}
    for kind, text in steps:
        if kind == "file":
            path = tmp_path / text.splitlines()[0].removeprefix("# file: ").strip()
            assert path.exists(), f"the section replaces {path}, which new-plugin did not write"
            path.write_text(text, encoding="utf-8")
        else:
            outputs[text.split()[0]] = ok(env.run(text, cwd=tmp_path, shell=True, timeout=300))
    assert re.search(r"\d+ passed", outputs["pytest"].stdout) and "failed" not in outputs["pytest"].stdout
    table = outputs["flakehunter"].stdout
    assert "mote2" in table and "flakehunter-mote2" in table and "material mote2" in table
    assert "problem" not in table
    # The plugin is what the section says: MoTe2's numbers and index, through the registry.
    probe = ("from flakehunter.registry import get_registry; m = get_registry().material('mote2'); "
             "print(m.display_name, m.layer_thickness_nm, m.edge_symmetry_deg, m.index([600.0], 1)[0])")
    shown = ok(env.run(str(env.python), "-c", probe, cwd=tmp_path)).stdout.split()
    assert shown[:3] == ["MoTe2", "0.698", "60.0"]
    assert complex(shown[3]) == pytest.approx(4.374 + 1.901j)


def _signature(function: Any) -> str:
    """``name(arg: Type, ...) -> Return`` of a hook spec, annotations as written in hookspecs.py."""
    signature = inspect.signature(function)

    def text(annotation: Any) -> str:
        return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    params = ", ".join(f"{p.name}: {text(p.annotation)}" for p in signature.parameters.values())
    return f"{function.__name__}({params}) -> {text(signature.return_annotation)}"


def test_hook_reference_lists_every_hook_with_its_signature() -> None:
    """The reference section has one ``### `signature``` heading per hook spec, with the exact signature of
    `flakehunter.hookspecs`, and no heading for a hook that does not exist."""
    specs = {name: _signature(f) for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(f, f"{hookspecs.PROJECT}_spec")}
    assert len(specs) >= 10
    documented = re.findall(r"^### `(.+)`\s*$", doc_section("Hook reference"), re.M)
    by_name = {heading.split("(")[0]: heading for heading in documented}
    assert len(by_name) == len(documented), "a hook is documented twice"
    assert sorted(set(specs) - set(by_name)) == [], "hooks missing from docs/plugin-authoring.md"
    assert sorted(set(by_name) - set(specs)) == [], "documented hooks that hookspecs.py does not have"
    for name, signature in specs.items():
        assert by_name[name] == signature, f"documented {by_name[name]!r}, hookspecs.py has {signature!r}"
    for alias in ("RegisterStage", "RegisterCamera", "RegisterDetector", "RegisterMaterial"):
        assert hasattr(hookspecs, alias) and alias in doc_section("Hook reference")


# -- the TaS2 example --------------------------------------------------------------------------------------


def test_tas2_example_calibrates_and_is_found_in_a_seeded_simulated_scan(env: PluginEnv, tmp_path: Path) -> None:
    """calibrate.py rebuilds the shipped simulator profile from three labelled simulator images (and converts
    the RWTH parameters where they exist); the example's own tests pass, the detection test among them
    (recall >= 0.9 and the right layer count for >= 0.9 of the 1-2L flakes >= 50 µm² found)."""
    env.install(EXAMPLE)
    out = tmp_path / "calibration"
    ok(env.run(str(env.python), str(EXAMPLE / "calibrate.py"), "--out", str(out), "--rwth", str(RWTH), cwd=tmp_path))
    shipped = json.loads((EXAMPLE / "flakehunter_tas2" / "profiles" / "sim-tas2-90nm.json").read_text())
    rebuilt = json.loads((out / "sim-tas2-90nm.json").read_text())
    for n in ("1", "2", "3"):
        assert rebuilt["layers"][n]["mean"] == pytest.approx(shipped["layers"][n]["mean"], abs=0.005), n
    assert rebuilt["source"]["images"] == [f"images/sim{k}.tif" for k in range(3)]
    if RWTH.is_file():
        gmm = json.loads(RWTH.read_text())
        rwth = json.loads((out / "rwth-tas2-90nm.json").read_text())
        assert sorted(rwth["layers"]) == ["1", "2", "3", "4"]
        for n in "1234":
            assert rwth["layers"][n]["mean"] == pytest.approx([gmm[n]["contrast"][c] for c in "rgb"])
    result = ok(env.run("pytest", "-p", "no:cacheprovider", str(EXAMPLE), cwd=tmp_path, timeout=300))
    assert re.search(r"\b9 passed", result.stdout), result.stdout[-2000:]


# -- mistakes authors make: one line each ------------------------------------------------------------------


def _material(name: str = "oddium", **changes: Any) -> Material:
    values: dict[str, Any] = {
        "name": name, "display_name": "Oddium", "layer_thickness_nm": 0.7, "edge_symmetry_deg": 60.0,
        "index": lambda wavelength_nm, layers: np.full(np.shape(wavelength_nm), 4.0 + 1.0j),
    }
    return Material(**{**values, **changes})


class _BadOptions:
    Options: ClassVar[Any] = {"threshold": 0.1}

    def __init__(self, options: Any, context: Any) -> None:
        pass


class _OneArgument:
    def __init__(self, options: Any) -> None:
        pass


class _DictLike:
    name = "dictium"


@pytest.mark.parametrize(
    ("kind", "name", "obj", "message"),
    [
        ("material", "oddium", _material(index=lambda w, n: np.full(np.shape(w), 4.0 - 1.0j)),
         "material 'oddium' is malformed: index(wavelength_nm, 1) has κ < 0 ([4.-1.j 4.-1.j 4.-1.j]); flakehunter "
         "uses n + iκ with κ >= 0 absorbing: negate the imaginary part of an n - iκ table"),
        ("material", "oddium", _material(layer_thickness_nm=0.0),
         "material 'oddium' is malformed: layer_thickness_nm must be a thickness in nm in (0, 10], got 0.0"),
        ("material", "oddium", _material(edge_symmetry_deg=float("nan")),
         "material 'oddium' is malformed: edge_symmetry_deg must be in (0, 360], got nan"),
        ("material", "oddium", _material(target_layers=()),
         "material 'oddium' is malformed: target_layers must list layer counts >= 1, got ()"),
        ("material", "oddium", _material(index=lambda w, n: np.ones(2)),
         "material 'oddium' is malformed: index(wavelength_nm, 1) returned shape (2,) for (3,) wavelengths"),
        ("material", "dictium", _DictLike(),
         "material 'dictium' is malformed: expected a flakehunter.materials.Material, got _DictLike"),
        ("detector", "odd", _BadOptions,
         "detector 'odd': _BadOptions.Options must be a pydantic model class, got {'threshold': 0.1}"),
        ("stage", "odd", _OneArgument,
         "stage 'odd': factory _OneArgument(options) cannot be called as factory(options, context)"),
        ("camera", "simulator", lambda options, context: None,
         "camera 'simulator' is already registered by flakehunter (plugin 'simulator'); ignored"),
    ],
)
def test_a_bad_contribution_is_one_line_naming_plugin_package_and_fault(
    kind: str, name: str, obj: Any, message: str
) -> None:
    """Each mistake is rejected (the rest of flakehunter unaffected) with one line that names the plugin, its
    package and what was wrong; strict mode raises that line."""
    hook = {"material": "register_materials", "detector": "register_detectors", "stage": "register_stages",
            "camera": "register_cameras"}[kind]
    plugin = type("Plugin", (), {hook: hookimpl(lambda self, register: register(name, obj))})()
    registry = fh_registry.add_plugin(plugin, name="oddplug", package="flakehunter-oddplug")
    [problem] = [p for p in registry.problems if p.plugin == "oddplug"]
    assert problem.package == "flakehunter-oddplug"
    assert problem.message == message
    assert "\n" not in problem.message
    if kind == "camera":
        assert registry.get("camera", "simulator").package == "flakehunter"
    else:
        assert name not in registry.names(kind)
    assert "graphene" in registry.names("material")


def test_strict_mode_raises_the_same_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Plugin:
        @hookimpl
        def register_materials(self, register: Any) -> None:
            register("oddium", _material(layer_thickness_nm=-1.0))

    monkeypatch.setenv(fh_registry.STRICT_ENV, "1")
    with pytest.raises(fh_registry.PluginError) as info:
        fh_registry.add_plugin(Plugin(), name="oddplug", package="flakehunter-oddplug")
    assert str(info.value) == ("plugin 'oddplug' (flakehunter-oddplug): material 'oddium' is malformed: "
                               "layer_thickness_nm must be a thickness in nm in (0, 10], got -1.0")


BROKEN = "import json\n\nraise RuntimeError('no SDK here')\n"

BAD_MATERIAL = '''
import numpy as np
from flakehunter.hookspecs import hookimpl
from flakehunter.materials import Material

@hookimpl
def register_materials(register):
    register("engium", Material("engium", "Engium", 0.7, 60.0, lambda w, n: np.full(np.shape(w), 3.0 - 0.5j)))
'''

GOOD_STAGE = '''
from flakehunter.hookspecs import hookimpl

class Stage:
    def __init__(self, options, context):
        pass

@hookimpl
def register_stages(register):
    register("teststage", Stage)
'''

FAILING_TESTS = '''
def test_fails(flakehunter_registry):
    assert "teststage" not in flakehunter_registry.names("stage"), "the stage is there"
'''


def distribution(root: Path, module: str, source: str, *, dist: str, entry: str, tests: str | None = None) -> None:
    """An installed-looking distribution: ``module.py`` (and a test package), dist-info with its entry points."""
    (root / f"{module}.py").write_text(source, encoding="utf-8")
    points = f"[flakehunter]\n{entry} = {module}\n"
    if tests is not None:
        (root / f"{module}_tests").mkdir()
        (root / f"{module}_tests" / "__init__.py").write_text("", encoding="utf-8")
        (root / f"{module}_tests" / "test_it.py").write_text(tests, encoding="utf-8")
        points += f"\n[flakehunter_contract_tests]\n{entry} = {module}_tests\n"
    info = root / f"{module}-0.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.2\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(points, encoding="utf-8")


def test_plugins_check_fails_with_one_line_per_problem_and_runs_shipped_tests(tmp_path: Path) -> None:
    """``plugins --check``: an import error (with its file and line), a malformed material and a plugin whose
    shipped tests fail are each a FAILED line naming plugin and package; exit 1; the built-ins stay ok."""
    distribution(tmp_path, "broken_sdk_cam", BROKEN, dist="flakehunter-broken", entry="brokencam")
    distribution(tmp_path, "engium_mat", BAD_MATERIAL, dist="flakehunter-engium", entry="engium")
    distribution(tmp_path, "test_stage_plug", GOOD_STAGE, dist="flakehunter-teststage", entry="teststage",
                 tests=FAILING_TESTS)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLAKEHUNTER_")}
    environ.update(PYTHONPATH=str(tmp_path), COLUMNS="200")
    result = subprocess.run([sys.executable, "-m", "flakehunter", "plugins", "--check"], capture_output=True,
                            text=True, timeout=300, env=environ, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "FAILED plugin 'brokencam' (flakehunter-broken): failed to load: RuntimeError: no SDK here " \
           "(at broken_sdk_cam.py:3)" in lines
    assert any(line.startswith("FAILED plugin 'engium' (flakehunter-engium): material 'engium' is malformed: "
                               "index(wavelength_nm, 1) has κ < 0") for line in lines), lines
    [stage] = [line for line in lines if "plugin 'teststage'" in line]
    assert stage.startswith("FAILED plugin 'teststage' (flakehunter-teststage 0.2): stage teststage; "
                            "contract tests failed: 1 failed"), stage
    assert any(line.startswith("ok     plugin 'simulator' (flakehunter ") for line in lines)
    assert lines[-1] == "plugin check failed"
    assert "Traceback" not in result.stdout + result.stderr


# -- the pytest plugin ------------------------------------------------------------------------------------------


PROJECT_PYPROJECT = '''
[project]
name = "flakehunter-localium"
version = "0.0.1"

[project.entry-points.flakehunter]
localium = "localium_plugin"
'''

PROJECT_PLUGIN = '''
import numpy as np
from flakehunter.hookspecs import hookimpl
from flakehunter.materials import Material

LOCALIUM = Material("localium", "Localium", 0.65, 60.0, lambda w, n: np.full(np.shape(w), 4.2 + 1.1j))

@hookimpl
def register_materials(register):
    register("localium", LOCALIUM)
'''

PROJECT_TESTS = '''
import numpy as np


def test_only_the_plugin_under_test_next_to_the_builtins(flakehunter_registry, flakehunter_plugins_under_test):
    [plugin] = flakehunter_plugins_under_test
    assert (plugin.name, plugin.package, plugin.installed) == ("localium", "flakehunter-localium", False)
    assert flakehunter_registry.source("material", "localium")["package"] == "flakehunter-localium"
    assert {p.package for p in flakehunter_registry.plugins} == {"flakehunter", "flakehunter-localium"}


def test_simulator_fixture_renders_the_plugin_material(flakehunter_simulator):
    scope = flakehunter_simulator(material="localium", seed=4, chip={"size_um": (600.0, 600.0), "thin_flakes": 8})
    assert scope.layout.material == "localium"
    flake = max((f for f in scope.layout.flakes if f.kind == "thin"), key=lambda f: f.area_um2)
    labels = scope.label_image_at(*flake.centroid_um)
    frame = scope.snap_at(*flake.centroid_um)
    assert frame.shape == (400, 600, 3) and labels.shape == (400, 600)
    assert np.median(frame[labels == flake.layers], axis=0).sum() < np.median(frame[labels == 0], axis=0).sum()


def test_serial_emulator_fixture_runs_a_controller(flakehunter_serial_emulator):
    from flakehunter.testing.emulators import PriorProScanEmulator
    emulator = flakehunter_serial_emulator(PriorProScanEmulator)
    assert emulator.port
'''


def test_pytest_plugin_loads_an_uninstalled_project_plugin_and_gives_its_fixtures(tmp_path: Path) -> None:
    """In a project whose plugin is declared in pyproject.toml but not installed, the fixtures load it from its
    module next to the built-ins (only it), the simulator renders its material and the emulator fixture runs."""
    (tmp_path / "pyproject.toml").write_text(PROJECT_PYPROJECT, encoding="utf-8")
    (tmp_path / "localium_plugin.py").write_text(PROJECT_PLUGIN, encoding="utf-8")
    (tmp_path / "test_localium.py").write_text(PROJECT_TESTS, encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLAKEHUNTER_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "flakehunter.testing.pytest_plugin",
         str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environ,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout


# -- the contract suites hold for the built-ins ------------------------------------------------------------------


class TestBuiltinMaterials(MaterialContract):
    """Every built-in material passes the contract third-party materials must pass."""

    @pytest.fixture(params=["graphene", "hbn", "mos2", "wse2", "mose2", "ws2"])
    def material(self, request: pytest.FixtureRequest) -> Any:
        return fh_registry.get_registry().material(request.param)


class TestContrastDetector(DetectorContract):
    """The built-in contrast detector passes the contract third-party detectors must pass."""

    @pytest.fixture
    def detector(self) -> Any:
        factory = fh_registry.get_registry().get("detector", "contrast").obj
        return factory(factory.Options(), self.detection_context())


def test_detector_contract_catches_a_detector_that_breaks_it() -> None:
    """The contract fails a detector that reports a score outside [0, 1] (so it can fail at all)."""
    from flakehunter.analysis.detector import Detection

    class Overconfident:
        name = "overconfident"

        def detect(self, image: Any, meta: Any, detections: list[Any]) -> list[Any]:
            return [Detection(row=5, col=5, area_px=10, layers=1, layer_class="1L", score=1.5)]

    with pytest.raises(AssertionError, match=r"score 1.5 outside \[0, 1\]"):
        TestContrastDetector().test_detections_describe_regions_of_the_image(Overconfident())


def test_material_contract_catches_an_engineering_convention_index() -> None:
    """The contract fails a material whose index is written n - iκ."""
    material = _material(index=lambda w, n: np.full(np.shape(w), 2.6 - 1.3j))
    with pytest.raises(AssertionError, match="κ < 0"):
        MaterialContract().test_index_over_the_visible_is_physical(material)

