"""Built-in stage plugin ``asi``: ASI MS-2000 (and compatible) stages over their serial protocol."""

from __future__ import annotations

from flakehunter.hookspecs import RegisterStage, hookimpl


@hookimpl
def register_stages(register: RegisterStage) -> None:
    from flakehunter.hardware.asi.stage import ASIStage

    register("asi", ASIStage)
