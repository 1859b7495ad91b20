"""Built-in plugin ``micromanager``: any Micro-Manager camera and XY/Z stage through pymmcore-plus.

Needs the optional extra (``pip install 'flakehunter[micromanager]'``) and a Micro-Manager installation
with its device adapters (``mmcore install``). The plugin always registers; a missing pymmcore-plus is
reported when a config uses it, not when flakehunter starts.
"""

from __future__ import annotations

from flakehunter.hookspecs import RegisterCamera, RegisterStage, hookimpl


@hookimpl
def register_stages(register: RegisterStage) -> None:
    from flakehunter.hardware.micromanager.devices import MicroManagerStage

    register("micromanager", MicroManagerStage)


@hookimpl
def register_cameras(register: RegisterCamera) -> None:
    from flakehunter.hardware.micromanager.devices import MicroManagerCamera

    register("micromanager", MicroManagerCamera)
