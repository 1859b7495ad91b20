"""Built-in stage plugin ``ludl``: Ludl MAC 5000 / MAC 6000 stages over their serial protocol."""

from __future__ import annotations

from flakehunter.hookspecs import Register, hookimpl


@hookimpl
def register_stages(register: Register) -> None:
    from flakehunter.hardware.ludl.stage import LudlStage

    register("ludl", LudlStage)
