"""Built-in material plugin: registers graphene, hBN, MoS2, WSe2, MoSe2 and WS2 (defined in `catalog`)."""

from __future__ import annotations

from flakehunter.hookspecs import RegisterMaterial, hookimpl

from .catalog import BUILTIN_MATERIALS


@hookimpl
def register_materials(register: RegisterMaterial) -> None:
    """Register each built-in material under its name."""
    for material in BUILTIN_MATERIALS:
        register(material.name, material)
