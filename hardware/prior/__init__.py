"""Built-in stage plugin ``prior``: Prior ProScan III (and ProScan II) stages over their serial protocol."""

from __future__ import annotations

from flakehunter.hookspecs import RegisterStage, hookimpl


@hookimpl
def register_stages(register: RegisterStage) -> None:
    from flakehunter.hardware.prior.stage import PriorStage

    register("prior", PriorStage)
