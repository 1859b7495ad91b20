"""Built-in simulator hardware: a stage and a camera that renders a synthetic chip.

Registered through the ``flakehunter`` entry-point group like any third-party hardware plugin.
When a scan uses the simulator camera, the chip's ground truth is written to ``truth.json`` in the
run directory as the scan starts (the same JSON format as a layout file, so it can be rescanned).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flakehunter.hookspecs import RegisterCamera, RegisterStage, hookimpl

if TYPE_CHECKING:
    import typer

    from flakehunter.scan import ScanContext


@hookimpl
def register_stages(register: RegisterStage) -> None:
    from flakehunter.hardware.simulator.stage import SimulatorStage

    register("simulator", SimulatorStage)


@hookimpl
def register_cameras(register: RegisterCamera) -> None:
    from flakehunter.hardware.simulator.camera import SimulatorCamera

    register("simulator", SimulatorCamera)


@hookimpl
def scan_started(scan: ScanContext) -> None:
    from flakehunter.hardware.simulator.camera import SimulatorCamera
    from flakehunter.run.layout import RunDirectory

    if isinstance(scan.camera, SimulatorCamera) and scan.camera.layout is not None:
        scan.camera.layout.save_json(RunDirectory(scan.run_dir).truth)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from flakehunter.hardware.simulator.cli import simulate_app

    cli.add_typer(simulate_app, name="simulate")
