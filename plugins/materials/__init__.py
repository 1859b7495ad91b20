"""Built-in material plugin: registers graphene, hBN, MoS2, WSe2, MoSe2 and WS2 (defined in `catalog`)."""

from __future__ import annotations

from flakehunter.hookspecs import RegisterMaterial, hookimpl


@hookimpl
def register_materials(register: RegisterMaterial) -> None:
    """Register each built-in material under its name."""
    from flakehunter.plugins.materials.catalog import BUILTIN_MATERIALS  # numpy and index tables: when needed

    for material in BUILTIN_MATERIALS:
        register(material.name, material)
