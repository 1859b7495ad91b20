"""Built-in stage plugin ``tango``: Märzhäuser Tango stages over their serial protocol."""

from __future__ import annotations

from flakehunter.hookspecs import RegisterStage, hookimpl


@hookimpl
def register_stages(register: RegisterStage) -> None:
    from flakehunter.hardware.tango.stage import TangoStage

    register("tango", TangoStage)
