"""One colour per layer class, shared by the overview PNG, the page and the plots."""

from __future__ import annotations

#: RGB colours, distinct at a glance on a purple-grey SiO2 background; unknown classes are red.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "1L": (255, 215, 0),
    "2L": (0, 200, 0),
    "3L": (0, 128, 255),
    "4L": (255, 0, 255),
    "5L": (0, 229, 255),
    "few": (255, 140, 0),
    "bulk": (160, 160, 160),
}
OTHER = (255, 64, 64)


def colour_rgb(layer_class: str) -> tuple[int, int, int]:
    """The RGB colour (0-255) of a layer class."""
    return CLASS_COLOURS.get(layer_class, OTHER)


def colour_hex(layer_class: str) -> str:
    """The colour of a layer class as ``#rrggbb``."""
    r, g, b = colour_rgb(layer_class)
    return f"#{r:02x}{g:02x}{b:02x}"


def class_order(classes: set[str] | list[str]) -> list[str]:
    """Layer classes in reading order: 1L, 2L, ..., few, bulk, then the rest alphabetically."""
    known = list(CLASS_COLOURS)
    return sorted(set(classes), key=lambda c: (known.index(c) if c in known else len(known), c))
