"""Built-in stage plugin ``tango``: Märzhäuser Tango stages over their serial protocol."""

from __future__ import annotations

from flakehunter.hookspecs import Register, hookimpl


@hookimpl
def register_stages(register: Register) -> None:
    from flakehunter.hardware.tango.stage import TangoStage

    register("tango", TangoStage)
