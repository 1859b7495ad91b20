"""The pytest plugin for flakehunter plugin authors: the plugin under test, the simulator, emulators, scores.

Installed with flakehunter through the ``pytest11`` entry point (or load it with
``-p flakehunter.testing.pytest_plugin``, as the packages ``flakehunter new-plugin`` writes do). Fixtures:

``flakehunter_registry``
    The registry (`flakehunter.registry.Registry`) with the built-in plugins and **only** the plugin(s)
    under test, in strict mode: a bad contribution fails the test with its one-line reason. The process-wide
    registry is that one for the test, so a `flakehunter.scan.Scan` or the simulator sees the same plugins.
``flakehunter_plugin_manager``
    The pluggy plugin manager behind it (to call or trace hooks).
``flakehunter_plugins_under_test``
    The `PluginUnderTest` records: entry-point name, module, package.
``flakehunter_simulator``
    ``make(material=..., oxide_nm=..., seed=..., chip={...} or layout={...}, **camera_options)`` -> a
    `flakehunter.testing.simulated.SimulatedScope` (the simulator stage and camera) over a seeded chip.
``flakehunter_serial_emulator``
    ``start(EmulatorClass, **kwargs)`` -> a running `flakehunter.testing.emulators.ControllerEmulator`
    (your controller's protocol on a real pseudo-terminal), stopped after the test.
``flakehunter_detector_check``
    ``check(detector, **kwargs)`` -> `flakehunter.testing.detector_check.DetectorScore` of a seeded
    simulated scan (kwargs as `flakehunter.testing.detector_check.score_detector`).

Which plugin is under test: ``--flakehunter-plugin NAME`` (repeatable), else the environment variable
``FLAKEHUNTER_PLUGIN_UNDER_TEST`` (comma-separated; `flakehunter plugins --check` sets it), else the ini
option ``flakehunter_plugins``, else the ``[project.entry-points.flakehunter]`` names of the
``pyproject.toml`` in pytest's root folder. A plugin that is not installed but named in that
``pyproject.toml`` is imported from its module path, so the tests also run from a plain checkout.

The contract suites are in `flakehunter.testing.contracts`; the serial emulator base class in
`flakehunter.testing.emulators`. Nothing here is autouse: loading the plugin changes no other test.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

UNDER_TEST_ENV = "FLAKEHUNTER_PLUGIN_UNDER_TEST"


@dataclass(frozen=True)
class PluginUnderTest:
    """A plugin the fixtures load next to the built-ins.

    ``installed`` is False for a plugin found only in the root ``pyproject.toml`` (imported from ``module``).
    """

    name: str
    module: str
    package: str
    installed: bool


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flakehunter", "flakehunter plugin authoring")
    group.addoption("--flakehunter-plugin", action="append", default=[], metavar="NAME", dest="flakehunter_plugin",
                    help="entry-point name of the flakehunter plugin under test (repeatable)")
    parser.addini("flakehunter_plugins", type="linelist", default=[],
                  help="entry-point names of the flakehunter plugins under test")


def _pyproject_plugins(rootpath: Path) -> tuple[str, dict[str, str]]:
    """(project name, {entry-point name: module}) of ``rootpath/pyproject.toml``'s flakehunter entry points."""
    path = rootpath / "pyproject.toml"
    if not path.is_file():
        return "", {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return "", {}
    project = data.get("project", {})
    entries = project.get("entry-points", {}).get("flakehunter", {})
    return str(project.get("name", "")), {str(k): str(v) for k, v in entries.items()}


def plugins_under_test(config: pytest.Config) -> list[PluginUnderTest]:
    """The plugins named by the command line, the environment, the ini option or the root ``pyproject.toml``."""
    from importlib.metadata import entry_points

    from flakehunter.registry import ENTRY_POINT_GROUP

    names: list[str] = list(config.getoption("flakehunter_plugin") or [])
    names += [n.strip() for n in os.environ.get(UNDER_TEST_ENV, "").split(",") if n.strip()]
    names += [str(n) for n in config.getini("flakehunter_plugins")]
    project, declared = _pyproject_plugins(config.rootpath)
    if not names:
        names = list(declared)
    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    out: list[PluginUnderTest] = []
    for name in dict.fromkeys(names):
        ep = installed.get(name)
        if ep is not None:
            dist = getattr(ep, "dist", None)
            package = (dist.metadata["Name"] or dist.name) if dist is not None else "unknown"
            out.append(PluginUnderTest(name, ep.value, package, installed=True))
        elif name in declared:
            out.append(PluginUnderTest(name, declared[name], project or "local", installed=False))
        else:
            raise pytest.UsageError(
                f"flakehunter plugin '{name}' is neither installed (no entry point of that name in the "
                f"'{ENTRY_POINT_GROUP}' group: pip install -e YOUR_PACKAGE) nor declared in "
                f"{config.rootpath / 'pyproject.toml'}"
            )
    return out


def builtin_plugin_names() -> list[str]:
    """Entry-point names of the plugins flakehunter itself ships."""
    from importlib.metadata import entry_points

    from flakehunter.registry import BUILTIN_PACKAGE, ENTRY_POINT_GROUP

    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if dist is not None and (dist.metadata["Name"] or dist.name) == BUILTIN_PACKAGE:
            names.append(ep.name)
    return sorted(set(names))


@pytest.fixture
def flakehunter_plugins_under_test(request: pytest.FixtureRequest) -> list[PluginUnderTest]:
    """The plugins under test (see the module docstring for how they are named)."""
    return plugins_under_test(request.config)


@pytest.fixture
def flakehunter_registry(
    flakehunter_plugins_under_test: list[PluginUnderTest], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The registry with the built-ins and only the plugins under test, strict; process-wide for the test."""
    from flakehunter import registry as fh_registry

    installed = [p.name for p in flakehunter_plugins_under_test if p.installed]
    monkeypatch.setenv(fh_registry.LOAD_ENV, ",".join(builtin_plugin_names() + installed))
    monkeypatch.setenv(fh_registry.STRICT_ENV, "1")
    fh_registry.reset()
    try:
        registry = fh_registry.get_registry()
        for plugin in flakehunter_plugins_under_test:
            if not plugin.installed:
                module = importlib.import_module(plugin.module)
                registry = fh_registry.add_plugin(module, name=plugin.name, package=plugin.package)
        yield registry
    finally:
        fh_registry.reset()


@pytest.fixture
def flakehunter_plugin_manager(flakehunter_registry: Any) -> Any:
    """The pluggy plugin manager behind ``flakehunter_registry``."""
    from flakehunter.registry import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture
def flakehunter_simulator(flakehunter_registry: Any) -> Iterator[Callable[..., Any]]:
    """``make(material="graphene", oxide_nm=90.0, seed=0, chip=None, layout=None, pixel_size_um=1.15,
    **camera_options)``: a `flakehunter.testing.simulated.SimulatedScope` (simulated stage and camera) over a
    seeded random chip (``chip``: simulator chip-spec fields; default a 1 x 1 mm chip dense in thin flakes) or a
    hand-made ``layout``. Its ``layout.flakes`` are the truth."""
    from flakehunter.testing.simulated import SimulatedScope

    made: list[SimulatedScope] = []

    def make(material: str = "graphene", *, chip: dict[str, Any] | None = None, layout: dict[str, Any] | None = None,
             **options: Any) -> SimulatedScope:
        if layout is None:
            chip = {"size_um": [1000.0, 1000.0], "thin_flakes": 40, "thick_flakes": 12, "multilayer_flakes": 4,
                    "residue_blobs": 4, "dust": 30, "min_spacing_um": 12, **(chip or {})}
        options.setdefault("shape", (400, 600))
        made.append(SimulatedScope(material, chip=chip, layout=layout, **options))
        return made[-1]

    yield make
    for scope in made:
        scope.close()


@pytest.fixture
def flakehunter_serial_emulator() -> Iterator[Callable[..., Any]]:
    """``start(EmulatorClass, **kwargs)``: start a `ControllerEmulator` subclass; every one is stopped after
    the test. Its ``port`` is what your driver opens."""
    started: list[Any] = []

    def start(emulator_class: type, **kwargs: Any) -> Any:
        from flakehunter.testing.emulators import ControllerEmulator

        if not (isinstance(emulator_class, type) and issubclass(emulator_class, ControllerEmulator)):
            raise TypeError(f"{emulator_class!r} is not a flakehunter.testing.emulators.ControllerEmulator subclass")
        emulator = emulator_class(**kwargs).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in reversed(started):
        emulator.stop()


@pytest.fixture
def flakehunter_detector_check(
    flakehunter_registry: Any, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Any]:
    """``check(detector, **kwargs)``: scan a seeded simulated chip with ``detector`` (a registered name or a
    list of config sections) and return its `DetectorScore` (see `score_detector` for the kwargs)."""
    from flakehunter.testing.detector_check import score_detector

    def check(detector: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("out_dir", tmp_path_factory.mktemp("detector-check"))
        return score_detector(detector, **kwargs)

    return check
