"""The plugin contract: every hook flakehunter calls, in one place.

A plugin is a module (or object) with functions marked ``@hookimpl``, announced through the
``flakehunter`` entry-point group, exactly as the built-in plugins are::

    [project.entry-points.flakehunter]
    my_stage = "my_package.flakehunter_plugin"

Two kinds of hooks:

* **register hooks** are called once when the registry is built. Each receives a ``register``
  callback owned by the host; calling it adds one named contribution. The host validates it,
  rejects a name another plugin already took, and records which package supplied it.
* **lifecycle hooks** are broadcast during a scan; every implementation is called and return values
  are ignored. An exception in a lifecycle hook is logged and does not stop the scan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from flakehunter.candidates import Candidate
    from flakehunter.scan import ScanContext, TileRecord

PROJECT = "flakehunter"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: ``register(name, factory)``: the callback handed to every register hook.
Register = Callable[[str, Any], None]


@hookspec
def register_stages(register: Register) -> None:
    """Contribute motorized stages.

    Called once while the registry is built. Call ``register(name, factory)`` for each stage, where
    ``factory(options, context)`` returns an object satisfying `flakehunter.devices.Stage`. If the
    factory has an ``Options`` attribute (a pydantic model), the config's ``stage.options`` are
    validated against it before anything connects, and ``options`` is an instance of it.
    ``context`` is a `flakehunter.devices.DeviceContext`.
    """


@hookspec
def register_cameras(register: Register) -> None:
    """Contribute cameras.

    Same form as `register_stages`; ``factory(options, context)`` returns an object satisfying
    `flakehunter.devices.Camera`. ``context.stage`` is the configured stage, so a simulated or
    replay camera can render what lies under it.
    """


@hookspec
def register_detectors(register: Register) -> None:
    """Contribute detectors.

    ``register(name, factory)`` where ``factory(options, context)`` returns a
    `flakehunter.detection.Detector` and ``context`` is a `flakehunter.detection.DetectionContext`
    (material, oxide, pixel size, compute device). ``Options`` works as for stages.
    """


@hookspec
def register_materials(register: Register) -> None:
    """Contribute materials.

    ``register(name, material)`` where ``material`` is a `flakehunter.materials.Material` whose
    ``name`` equals ``name``.
    """


@hookspec
def scan_started(scan: ScanContext) -> None:
    """A scan (new or resumed) has connected its devices and is about to acquire the first tile.

    ``scan`` gives the config, the run directory, the tile plan and the connected devices.
    """


@hookspec
def tile_acquired(scan: ScanContext, tile: TileRecord) -> None:
    """A tile has been acquired and its TIFF written; ``tile.path`` is final. Called on the
    acquisition thread, so keep it quick."""


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
