"""What an image file says about where and how it was taken: stage position, pixel size, provenance.

Sources, in order of precedence, field by field: flakehunter's own provenance JSON (in the OME
``Image/Description`` under the key ``"flakehunter"``), the OME-XML (``PhysicalSizeX/Y``, the first
``Plane``'s ``PositionX/Y/Z``, with units), and Micro-Manager's per-image JSON (TIFF tag 51123). A field
none of them has is ``None`` and the caller falls back to command-line values.
"""

from __future__ import annotations

import json
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import tifffile

log = logging.getLogger(__name__)

# Key of flakehunter's block in the OME Image Description JSON; bump FORMAT on incompatible changes.
PROVENANCE_KEY = "flakehunter"
PROVENANCE_FORMAT = 1


# Length units as OME writes them (UnitsLength), converted to µm. "reference frame" is OME's default for
# stage positions; acquisition software that leaves the unit out means µm, so both count as µm.
_UNIT_TO_UM: dict[str, float] = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,  # U+00B5 MICRO SIGN, what OME and tifffile write
    "μm": 1.0,  # U+03BC GREEK SMALL LETTER MU, what some writers use instead
    "um": 1.0,
    "micron": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "reference frame": 1.0,
}


@dataclass(frozen=True)
class ImageMeta:
    """What a file says about where and how it was taken. ``None`` means the file does not say.

    ``x_um``/``y_um``/``z_um`` are the stage position of the image centre. ``source`` names where the
    (x, y) position came from: "flakehunter", "ome", "micromanager" or "none".
    """

    pixel_size_um: float | None = None
    x_um: float | None = None
    y_um: float | None = None
    z_um: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str = "none"
    #: What detectors found wrong with the image as a whole (e.g. out of focus); recorded with the tile or
    #: file in the journal and manifest, so that a user can go back to it.
    warnings: list[str] = field(default_factory=list)
    #: Machine-readable verdicts of the detectors on the whole image. ``"out_of_focus"``: softer than the
    #: sharpest images of this run; a scan refocuses and retakes such a tile once.
    flags: set[str] = field(default_factory=set)



def tiff_meta(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> ImageMeta:
    """Combine the metadata sources field by field, in order of precedence."""
    provenance: dict[str, Any] = {}
    sources: list[tuple[str, dict[str, float | None]]] = []

    ome_xml = tif.ome_metadata
    if ome_xml:
        ome_values, description = _parse_ome(ome_xml)
        fh_block = _flakehunter_block(description)
        if fh_block is not None:
            provenance = fh_block.get("provenance") or {}
            stage = fh_block.get("stage") or {}
            sources.append(("flakehunter", {k: _as_float(stage.get(k)) for k in _FIELDS}))
        sources.append(("ome", ome_values))
    mm = _micromanager_values(series)
    if mm:
        sources.append(("micromanager", mm))

    def first(key: str) -> float | None:
        return next((v[key] for _, v in sources if v.get(key) is not None), None)

    # x and y as a pair from one source, so a position is never stitched together from two programs.
    source, x_um, y_um = "none", None, None
    for name, values in sources:
        if values.get("x_um") is not None and values.get("y_um") is not None:
            source, x_um, y_um = name, values["x_um"], values["y_um"]
            break
    pixel = first("pixel_size_um")
    if pixel is not None and pixel <= 0:  # Micro-Manager writes 0 when uncalibrated
        pixel = None
    return ImageMeta(
        pixel_size_um=pixel,
        x_um=x_um,
        y_um=y_um,
        z_um=first("z_um"),
        provenance=provenance if isinstance(provenance, dict) else {},
        source=source,
    )


_FIELDS = ("pixel_size_um", "x_um", "y_um", "z_um")


def _as_float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _length_um(value: str | None, unit: str | None, what: str) -> float | None:
    number = _as_float(value)
    if number is None:
        return None
    factor = _UNIT_TO_UM.get((unit or "µm").strip())
    if factor is None:
        log.warning("ignoring %s in unsupported unit %r", what, unit)
        return None
    return number * factor


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # strip the namespace, which changes with the OME schema version


def _parse_ome(xml: str) -> tuple[dict[str, float | None], str | None]:
    """Pixel size and first-plane position (µm) and the Description of the first OME Image."""
    values: dict[str, float | None] = dict.fromkeys(_FIELDS)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        log.warning("ignoring malformed OME-XML (%s)", exc)
        return values, None
    image = next((el for el in root.iter() if _local(el.tag) == "Image"), None)
    if image is None:
        return values, None
    description = next((el.text for el in image if _local(el.tag) == "Description"), None)
    pixels = next((el for el in image if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return values, description

    a = pixels.attrib
    size_x = _length_um(a.get("PhysicalSizeX"), a.get("PhysicalSizeXUnit"), "PhysicalSizeX")
    size_y = _length_um(a.get("PhysicalSizeY"), a.get("PhysicalSizeYUnit"), "PhysicalSizeY")
    if size_x is not None and size_y is not None and abs(size_x - size_y) > 0.01 * size_x:
        log.warning("pixels are not square (%.4g x %.4g µm); using PhysicalSizeX", size_x, size_y)
    values["pixel_size_um"] = size_x if size_x is not None else size_y

    planes = [el for el in pixels if _local(el.tag) == "Plane"]
    # The plane we return the pixels of is C=Z=T=0; fall back to the first listed.
    plane = next(
        (p for p in planes if all(p.get(k, "0") == "0" for k in ("TheC", "TheZ", "TheT"))),
        planes[0] if planes else None,
    )
    if plane is not None:
        for axis in "XYZ":
            values[f"{axis.lower()}_um"] = _length_um(
                plane.get(f"Position{axis}"), plane.get(f"Position{axis}Unit"), f"Position{axis}"
            )
    return values, description


def _flakehunter_block(description: str | None) -> dict[str, Any] | None:
    if not description or PROVENANCE_KEY not in description:
        return None
    try:
        data = json.loads(description)
    except ValueError:
        return None  # a foreign description that happens to contain the word
    block = data.get(PROVENANCE_KEY) if isinstance(data, dict) else None
    return block if isinstance(block, dict) else None


def _micromanager_values(series: tifffile.TiffPageSeries) -> dict[str, float | None] | None:
    """Position and pixel size from Micro-Manager's per-image JSON (tag 51123) of the first page."""
    page = series.pages[0] if len(series.pages) else None
    tags = getattr(page, "tags", None)
    tag = tags.get(51123) if tags is not None else None
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value.rstrip("\x00"))
        except ValueError:
            log.warning("ignoring Micro-Manager metadata that is not JSON")
            return None
    if not isinstance(value, dict):
        return None
    return {
        "x_um": _as_float(value.get("XPositionUm")),
        "y_um": _as_float(value.get("YPositionUm")),
        "z_um": _as_float(value.get("ZPositionUm")),
        "pixel_size_um": _as_float(value.get("PixelSizeUm")),
    }
