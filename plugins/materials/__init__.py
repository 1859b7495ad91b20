"""Built-in material plugin: registers graphene, hBN, MoS2 and WSe2 (defined in `catalog`)."""

from __future__ import annotations

from flakehunter.hookspecs import Register, hookimpl

from .catalog import BUILTIN_MATERIALS


@hookimpl
def register_materials(register: Register) -> None:
    """Register each built-in material under its name."""
    for material in BUILTIN_MATERIALS:
        register(material.name, material)
