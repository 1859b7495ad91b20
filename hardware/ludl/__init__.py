"""Built-in stage plugin ``ludl``: Ludl MAC 5000 / MAC 6000 stages over their serial protocol."""

from __future__ import annotations

from flakehunter.hookspecs import RegisterStage, hookimpl


@hookimpl
def register_stages(register: RegisterStage) -> None:
    from flakehunter.hardware.ludl.stage import LudlStage

    register("ludl", LudlStage)
