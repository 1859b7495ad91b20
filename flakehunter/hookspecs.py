"""The plugin contract: every hook flakehunter calls, in one place.

A plugin is a module (or object) with functions marked ``@hookimpl``, announced through the
``flakehunter`` entry-point group, exactly as the built-in plugins are::

    [project.entry-points.flakehunter]
    my_stage = "my_package.flakehunter_plugin"

Three kinds of hooks:

* **register hooks** are called once per plugin when the registry is built. Each receives a
  ``register`` callback owned by the host; calling it adds one named contribution. The host
  validates it, rejects a name another plugin already took, and records which package supplied it.
* **command hooks** (`register_commands`) add sub-commands to the ``flakehunter`` command line, so a
  plugin's own tools (a detector's calibration, a simulator's data generator) ship with it.
* **lifecycle hooks** are broadcast during a scan; every implementation is called and return values
  are ignored. An exception in a lifecycle hook is logged and does not stop the scan.

The host calls every hook through pluggy's hook callers, one plugin at a time
(`flakehunter.registry`), so hook wrappers and call tracing work and every contribution is
attributed to its plugin. A hook implementation whose name matches no spec here is reported when
the plugins load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from flakehunter.acquisition.engine import TileRecord
    from flakehunter.analysis.detector import DetectionContext, Detector
    from flakehunter.candidates import Candidate
    from flakehunter.devices import Camera, DeviceContext, Stage
    from flakehunter.materials import Material
    from flakehunter.scan import ScanContext

PROJECT = "flakehunter"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: ``factory(options, context) -> Stage``; ``options`` is the plugin's ``Options`` model when it has one.
StageFactory = Callable[[Any, "DeviceContext"], "Stage"]
#: ``factory(options, context) -> Camera``.
CameraFactory = Callable[[Any, "DeviceContext"], "Camera"]
#: ``factory(options, context) -> Detector``.
DetectorFactory = Callable[[Any, "DetectionContext"], "Detector"]

#: The ``register`` callback of `register_stages`: ``register(name, factory)``.
RegisterStage = Callable[[str, StageFactory], None]
#: The ``register`` callback of `register_cameras`.
RegisterCamera = Callable[[str, CameraFactory], None]
#: The ``register`` callback of `register_detectors`.
RegisterDetector = Callable[[str, DetectorFactory], None]
#: The ``register`` callback of `register_materials`: ``register(name, material)``.
RegisterMaterial = Callable[[str, "Material"], None]


@hookspec
def register_stages(register: RegisterStage) -> None:
    """Contribute motorized stages.

    Called once while the registry is built. Call ``register(name, factory)`` for each stage, where
    ``factory(options, context)`` returns an object satisfying `flakehunter.devices.Stage`. If the
    factory has an ``Options`` attribute (a pydantic model), the config's ``stage.options`` are
    validated against it before anything connects, and ``options`` is an instance of it.
    ``context`` is a `flakehunter.devices.DeviceContext`.
    """


@hookspec
def register_cameras(register: RegisterCamera) -> None:
    """Contribute cameras.

    Same form as `register_stages`; ``factory(options, context)`` returns an object satisfying
    `flakehunter.devices.Camera`. ``context.stage`` is the configured stage, so a simulated or
    replay camera can render what lies under it.
    """


@hookspec
def register_detectors(register: RegisterDetector) -> None:
    """Contribute detectors.

    ``register(name, factory)`` where ``factory(options, context)`` returns a
    `flakehunter.analysis.Detector` and ``context`` is a `flakehunter.analysis.DetectionContext`
    (material, oxide, pixel size, compute device). ``Options`` works as for stages.
    """


@hookspec
def register_materials(register: RegisterMaterial) -> None:
    """Contribute materials.

    ``register(name, material)`` where ``material`` is a `flakehunter.materials.Material` whose
    ``name`` equals ``name``.
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add commands to the ``flakehunter`` command line.

    Called once when the command line is built, with the root typer app; add commands with
    ``cli.command("name")(function)`` or groups with ``cli.add_typer(group, name="name")``. Import
    heavy modules inside the commands, so that ``flakehunter --help`` stays fast. A command name
    already taken by the core or another plugin is an error of that plugin.
    """


@hookspec
def scan_started(scan: ScanContext) -> None:
    """A scan (new or resumed) has connected its devices and is about to acquire the first tile.

    ``scan`` gives the config, the run directory, the tile plan and the connected devices.
    """


@hookspec
def tile_acquired(scan: ScanContext, tile: TileRecord) -> None:
    """A tile has been acquired and its TIFF written; ``tile.path`` is final. Called on the analysis
    thread just before the tile is analysed (the stage is already on its way to the next tile), so keep it
    quick."""


@hookspec
def candidate_found(scan: ScanContext, candidate: Candidate) -> None:
    """A de-duplicated candidate has been appended durably to ``candidates.csv``/``.jsonl``."""


@hookspec
def scan_finished(scan: ScanContext, summary: dict[str, Any]) -> None:
    """The scan ended without error: completed, or interrupted and resumable.

    ``summary`` holds ``status`` ("completed" or "interrupted"), tile counts, candidate count and
    timings, as written to ``manifest.json``.
    """


@hookspec
def scan_failed(scan: ScanContext, error: BaseException) -> None:
    """The scan stopped on an error; the run directory stays resumable."""
