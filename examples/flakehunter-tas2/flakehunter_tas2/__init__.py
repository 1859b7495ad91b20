"""flakehunter plugin ``tas2``: the material TaS2 (see material.py for its numbers and sources)."""

from __future__ import annotations

from flakehunter.hookspecs import RegisterMaterial, hookimpl


@hookimpl
def register_materials(register: RegisterMaterial) -> None:
    """Register the material under its name (imported here, so that ``flakehunter --help`` stays fast)."""
    from flakehunter_tas2.material import MATERIAL

    register(MATERIAL.name, MATERIAL)
