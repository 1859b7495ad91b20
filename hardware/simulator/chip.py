"""Geometry of a synthetic SiO2/Si chip: which flakes, residue and dust lie where.

This module only decides *what lies where*; the camera renderer turns it into pixels. Units:
stage micrometres (``x_um``, ``y_um``) for every coordinate and size, nanometres for film and oxide
thicknesses, degrees for angles. Angles are measured in stage coordinates from +x towards +y
(``atan2(dy, dx)``), the same frame the pixel -> stage transform of DESIGN.md §4 produces.

The flake recipe follows optics.md §3.2: a crystalline core cut from half-planes whose edges run along
the lattice directions θ0 + k·s (s = the material's ``edge_symmetry_deg``), a log-normal size, a few
edges torn into rough non-crystallographic curves, occasional notches, and thin terraces that grow from
a straight edge of a thicker body. Placement is rejection sampling that keeps thin flakes apart from
everything else, so that each target is unambiguous in the truth file.

Typical use::

    layout = generate_chip(ChipSpec(), material, nominal_oxide_nm=285.0, seed=7)
    view = layout.query(x0, y0, x1, y1)          # what a camera frame has to draw
    layout.save_json(run_dir / "truth.json")      # doubles as a layout file for a rescan
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import shapely
from numpy.typing import ArrayLike
from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.strtree import STRtree

from flakehunter.atomic import write_text_atomic
from flakehunter.errors import ConfigError
from flakehunter.materials import Material

__all__ = [
    "DUST_CLEARANCE_UM",
    "LAYOUT_FORMAT",
    "LAYOUT_VERSION",
    "STRAIGHT_EDGE_MIN_FRACTION",
    "ChipLayout",
    "ChipSpec",
    "ChipView",
    "FlakeKind",
    "SimDust",
    "SimFlake",
    "SimResidue",
    "generate_chip",
    "layer_class",
]

#: ``format`` value of a layout / truth JSON file.
LAYOUT_FORMAT = "flakehunter.chip-layout"
#: Version of the JSON layout written by `ChipLayout.save_json`.
LAYOUT_VERSION = 1
#: A polygon side counts as a straight (crystallographic) edge when it is at least this fraction of the
#: flake's perimeter. Torn edges are made of pieces well below it (at most ~3 % of the perimeter).
STRAIGHT_EDGE_MIN_FRACTION = 0.05
#: Dust keeps at least this gap (µm) from every thin flake, so it never hides part of a target.
DUST_CLEARANCE_UM = 3.0

FlakeKind = Literal["thin", "multilayer", "thick"]
Geometry = Polygon | MultiPolygon

# A core edge at least this fraction of the core perimeter is one we may protect from tearing.
_PROTECT_MIN_FRACTION = 0.08
# Thick crystals always get more layers than the "few" class, so kind and layer_class agree.
_BULK_MIN_LAYERS = 21
# Grid cell of the placement hash (µm): a few typical body diameters.
_GRID_CELL_UM = 250.0
# A category stops trying once this many of its last _WINDOW objects found no room (crowded chip).
_WINDOW = 30
_GIVE_UP_AFTER = 20


def layer_class(layers: int) -> str:
    """Label of a layer count as in candidates.csv: "1L".."5L", "few" (6-20 layers), "bulk" (> 20)."""
    if layers <= 5:
        return f"{layers}L"
    return "few" if layers <= 20 else "bulk"


# --------------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------------

Range = tuple[NonNegativeFloat, NonNegativeFloat]


class ChipSpec(BaseModel, extra="forbid", frozen=True):
    """Everything that shapes a random chip. Defaults: a 10 x 10 mm chip for the low-magnification demo.

    Lengths in µm, thicknesses in nm, fractions in [0, 1]. ``(lo, hi)`` pairs are uniform ranges unless
    the field says otherwise.
    """

    origin_um: tuple[float, float] = Field((0.0, 0.0), description="chip corner with the smallest x, y (µm)")
    size_um: tuple[PositiveFloat, PositiveFloat] = Field((10000.0, 10000.0), description="chip width, height")
    edge_margin_um: NonNegativeFloat = Field(50.0, description="nothing is placed closer to the chip edge")

    thin_flakes: NonNegativeInt = Field(80, description="1-5 layer targets")
    thin_layer_weights: dict[PositiveInt, NonNegativeFloat] = Field(
        default_factory=lambda: {1: 0.35, 2: 0.30, 3: 0.20, 4: 0.10, 5: 0.05},
        description="relative frequency of each layer count among thin flakes",
    )
    thin_median_diameter_um: PositiveFloat = 14.0
    thin_sigma_ln: NonNegativeFloat = 0.7
    thin_min_diameter_um: PositiveFloat = 4.0
    thin_max_diameter_um: PositiveFloat = 120.0
    attached_fraction: float = Field(0.4, ge=0.0, le=1.0, description="thin flakes grown from a body's edge")

    thick_flakes: NonNegativeInt = Field(150, description="graphite-like chunks, thickness from thick_nm")
    thick_nm: Range = Field((10.0, 300.0), description="thickness range of thick flakes, log-uniform (nm)")
    thick_median_diameter_um: PositiveFloat = 45.0
    thick_sigma_ln: NonNegativeFloat = 0.8
    thick_min_diameter_um: PositiveFloat = 8.0
    thick_max_diameter_um: PositiveFloat = 400.0
    multilayer_flakes: NonNegativeInt = Field(40, description="'few'-layer flakes")
    multilayer_layers: tuple[PositiveInt, PositiveInt] = Field((6, 20), description="inclusive layer range")
    multilayer_median_diameter_um: PositiveFloat = 25.0

    max_aspect: float = Field(6.0, ge=1.0, description="largest length/width of an ordinary core")
    ribbon_fraction: float = Field(0.05, ge=0.0, le=1.0, description="long thin ribbons")
    ribbon_aspect: Range = (8.0, 12.0)
    notch_fraction: float = Field(0.15, ge=0.0, le=1.0, description="cores with a crystalline notch cut out")
    torn_edge_fraction: Range = Field((0.2, 0.5), description="fraction of a flake's edges torn")
    fully_torn_fraction: float = Field(0.08, ge=0.0, le=1.0, description="flakes with every edge torn")
    tear_amplitude: Range = Field((0.02, 0.05), description="rough-edge amplitude / edge length")

    residue_blobs: NonNegativeInt = 60
    residue_length_um: Range = Field((20.0, 200.0), description="blob length along the peel direction")
    residue_aspect: Range = Field((2.0, 5.0), description="blob length / width")
    residue_thickness_nm: Range = (1.0, 10.0)

    dust: NonNegativeInt = 300
    dust_radius_um: Range = Field((0.5, 4.0), description="log-uniform")
    dust_gain: Range = Field((0.3, 1.6), description="intensity factor; < 1 dark, > 1 bright")
    dust_halo_fraction: float = Field(0.2, ge=0.0, le=1.0)

    scratches: NonNegativeInt = Field(0, description="scratches in the oxide: long, narrow, slightly curved grooves")
    scratch_length_um: Range = (200.0, 2000.0)
    scratch_width_um: Range = (1.0, 3.0)
    scratch_depth_nm: Range = Field((5.0, 30.0), description="how much oxide the groove removes")

    oxide_jitter_nm: NonNegativeFloat = Field(3.0, description="chip oxide = nominal + offset + U(-j, j)")
    oxide_offset_nm: float = Field(0.0, description="systematic error of the nominal oxide (a mislabelled batch)")
    oxide_gradient_nm_per_mm: NonNegativeFloat = Field(0.3, description="magnitude, random direction")
    tilt_um_per_mm: NonNegativeFloat = Field(1.0, description="focus-plane slope magnitude, random direction")
    focus_z_um: float = Field(0.0, description="focus height at the chip centre")

    min_spacing_um: NonNegativeFloat = Field(15.0, description="free space around every thin flake")
    placement_attempts: PositiveInt = Field(30, description="random positions tried per object")

    @field_validator(
        "thick_nm", "ribbon_aspect", "torn_edge_fraction", "tear_amplitude", "residue_length_um",
        "scratch_length_um", "scratch_width_um", "scratch_depth_nm",
        "residue_aspect", "residue_thickness_nm", "dust_radius_um", "dust_gain", "multilayer_layers",
    )
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"range must be (lo, hi) with lo <= hi, got {v}")
        return v

    @field_validator("torn_edge_fraction", "tear_amplitude")
    @classmethod
    def _fraction(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[1] > 1.0:
            raise ValueError(f"fractions must lie in [0, 1], got {v}")
        return v

    @field_validator("thick_nm", "ribbon_aspect", "residue_length_um", "residue_aspect", "dust_radius_um")
    @classmethod
    def _positive_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError(f"sizes must be > 0, got {v}")
        return v

    @field_validator("thin_layer_weights")
    @classmethod
    def _weights(cls, v: dict[int, float]) -> dict[int, float]:
        if sum(v.values()) <= 0:
            raise ValueError("thin_layer_weights must have a positive sum")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ChipSpec:
        if self.thin_min_diameter_um > self.thin_max_diameter_um:
            raise ValueError("thin_min_diameter_um must be <= thin_max_diameter_um")
        if self.thick_min_diameter_um > self.thick_max_diameter_um:
            raise ValueError("thick_min_diameter_um must be <= thick_max_diameter_um")
        if 2 * self.edge_margin_um >= min(self.size_um):
            raise ValueError("edge_margin_um leaves no room: 2 * margin must be < the chip size")
        return self


# --------------------------------------------------------------------------------------------------
# Objects and layout
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimFlake:
    """One flake. ``polygon`` is its VISIBLE region in stage µm (a thin terrace is clipped by its body).

    ``theta_deg`` is the direction of its crystallographic edges, reduced modulo the material's
    ``edge_symmetry_deg`` (what an axis detector reports). ``straight_edges`` is True when at least one
    straight side of ``STRAIGHT_EDGE_MIN_FRACTION`` of the perimeter remains (not fully torn).
    ``attached_to`` is the id of the body a thin terrace grows from.
    """

    id: int
    kind: FlakeKind
    layers: int
    theta_deg: float
    polygon: Geometry
    straight_edges: bool
    attached_to: int | None = None

    @property
    def layer_class(self) -> str:
        """"1L".."5L", "few" or "bulk"."""
        return layer_class(self.layers)

    @property
    def area_um2(self) -> float:
        """Visible area (µm²)."""
        return float(self.polygon.area)

    @property
    def centroid_um(self) -> tuple[float, float]:
        """Centroid of the visible region (stage µm)."""
        c = self.polygon.centroid
        return (float(c.x), float(c.y))


@dataclass(frozen=True)
class SimResidue:
    """A smooth blob of tape/polymer residue: a film ``thickness_nm`` thick (n ≈ 1.5) over ``polygon``."""

    id: int
    polygon: Polygon
    thickness_nm: float


@dataclass(frozen=True)
class SimDust:
    """A dust speck: a disc of ``radius_um`` at (``x_um``, ``y_um``) that multiplies intensity by ``gain``.

    ``halo`` asks the renderer for a diffraction ring around it (its radius is the renderer's choice).
    """

    id: int
    x_um: float
    y_um: float
    radius_um: float
    gain: float
    halo: bool


@dataclass(frozen=True)
class SimScratch:
    """A groove scratched into the oxide: ``depth_nm`` of SiO2 missing over ``polygon`` (a long, narrow strip)."""

    id: int
    polygon: Polygon
    depth_nm: float


class ChipView(NamedTuple):
    """What `ChipLayout.query` found in a box, each tuple in id order."""

    residue: tuple[SimResidue, ...]
    flakes: tuple[SimFlake, ...]
    dust: tuple[SimDust, ...]
    scratches: tuple[SimScratch, ...] = ()


@dataclass(frozen=True)
class ChipLayout:
    """A chip: substrate (oxide, focus plane) plus every flake, residue blob and dust speck.

    Attributes:
        material: material registry name ("graphene").
        nominal_oxide_nm: the oxide thickness the chip is sold as.
        oxide_nm: the actual oxide thickness at the chip centre.
        oxide_gradient_nm_per_mm: (d oxide/dx, d oxide/dy) in nm per mm.
        focus: (z at the chip centre in µm, dz/dx, dz/dy in µm per mm): the in-focus stage z.
        bounds_um: (xmin, ymin, xmax, ymax) of the chip.
        seed: the generator seed, None for a hand-made layout.
        flakes, residue, dust: the objects, each in id order.
        shortfall: per category, how many requested objects found no room (crowded spec).
        spec: the spec the chip was generated from, when known.
    """

    material: str
    nominal_oxide_nm: float
    oxide_nm: float
    oxide_gradient_nm_per_mm: tuple[float, float]
    focus: tuple[float, float, float]
    bounds_um: tuple[float, float, float, float]
    seed: int | None
    flakes: tuple[SimFlake, ...]
    residue: tuple[SimResidue, ...]
    dust: tuple[SimDust, ...]
    shortfall: dict[str, int] = field(default_factory=dict)
    spec: ChipSpec | None = None
    scratches: tuple[SimScratch, ...] = ()

    # ---- substrate --------------------------------------------------------------------------------

    def centre_um(self) -> tuple[float, float]:
        """Chip centre (stage µm): the reference point of the oxide gradient and the focus plane."""
        x0, y0, x1, y1 = self.bounds_um
        return (0.5 * (x0 + x1), 0.5 * (y0 + y1))

    def oxide_nm_at(self, x_um: ArrayLike, y_um: ArrayLike) -> float | np.ndarray:
        """Oxide thickness (nm) at stage position(s): ``oxide_nm + g · (p - centre) / 1000``.

        Accepts scalars or numpy arrays (broadcast); returns a float or an array.
        """
        cx, cy = self.centre_um()
        gx, gy = self.oxide_gradient_nm_per_mm
        return self.oxide_nm + (gx * (np.asarray(x_um) - cx) + gy * (np.asarray(y_um) - cy)) / 1000.0

    def focus_z_um_at(self, x_um: ArrayLike, y_um: ArrayLike) -> float | np.ndarray:
        """In-focus stage z (µm) at stage position(s): a plane through ``focus[0]`` at the centre.

        Accepts scalars or numpy arrays (broadcast); returns a float or an array.
        """
        cx, cy = self.centre_um()
        z0, sx, sy = self.focus
        return z0 + (sx * (np.asarray(x_um) - cx) + sy * (np.asarray(y_um) - cy)) / 1000.0

    # ---- spatial query ----------------------------------------------------------------------------

    @cached_property
    def _tree(self) -> STRtree:
        # One tree over flakes then residue; built on first query and reused for every frame.
        return STRtree(
            [f.polygon for f in self.flakes] + [r.polygon for r in self.residue] + [s.polygon for s in self.scratches]
        )

    @cached_property
    def _dust_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = self.dust
        return (np.array([s.x_um for s in d], dtype=float), np.array([s.y_um for s in d], dtype=float),
                np.array([s.radius_um for s in d], dtype=float))

    def query(self, xmin: float, ymin: float, xmax: float, ymax: float) -> ChipView:
        """Residue, flakes and dust that intersect the box [xmin, xmax] x [ymin, ymax] (stage µm).

        Touching counts as intersecting. Dust is tested as its disc of ``radius_um``; a renderer pads
        the box by its own blur and halo reach.
        """
        if xmin > xmax or ymin > ymax:
            raise ValueError(f"empty box ({xmin}, {ymin}, {xmax}, {ymax}): need xmin <= xmax, ymin <= ymax")
        hits = np.sort(self._tree.query(shapely.box(xmin, ymin, xmax, ymax), predicate="intersects"))
        nf, nr = len(self.flakes), len(self.residue)
        flakes = tuple(self.flakes[i] for i in hits if i < nf)
        residue = tuple(self.residue[i - nf] for i in hits if nf <= i < nf + nr)
        scratches = tuple(self.scratches[i - nf - nr] for i in hits if i >= nf + nr)
        xs, ys, rs = self._dust_arrays
        # Exact disc-box test: distance from the centre to the box, per axis.
        dx = np.maximum(np.maximum(xmin - xs, xs - xmax), 0.0)
        dy = np.maximum(np.maximum(ymin - ys, ys - ymax), 0.0)
        dust = tuple(self.dust[i] for i in np.flatnonzero(dx * dx + dy * dy <= rs * rs))
        return ChipView(residue, flakes, dust, scratches)

    # ---- truth and JSON ---------------------------------------------------------------------------

    def truth_records(self) -> list[dict[str, Any]]:
        """One dict per flake for truth.json (see docs/simulator-layout.md)."""
        out = []
        for f in self.flakes:
            cx, cy = f.centroid_um
            out.append({
                "id": f.id,
                "kind": f.kind,
                "layers": f.layers,
                "layer_class": f.layer_class,
                "theta_deg": f.theta_deg,
                "straight_edges": f.straight_edges,
                "attached_to": f.attached_to,
                "area_um2": round(f.area_um2, 4),
                "centroid_um": [round(cx, 4), round(cy, 4)],
                "polygon_um": _polygons_to_json(f.polygon),
            })
        return out

    def to_dict(self) -> dict[str, Any]:
        """The whole layout as JSON-ready data (the layout / truth.json format)."""
        z0, sx, sy = self.focus
        cx, cy = self.centre_um()
        return {
            "format": LAYOUT_FORMAT,
            "version": LAYOUT_VERSION,
            "material": self.material,
            "seed": self.seed,
            "bounds_um": list(self.bounds_um),
            "centre_um": [cx, cy],
            "nominal_oxide_nm": self.nominal_oxide_nm,
            "oxide_nm": self.oxide_nm,
            "oxide_gradient_nm_per_mm": list(self.oxide_gradient_nm_per_mm),
            "focus": {"z_at_centre_um": z0, "dz_dx_um_per_mm": sx, "dz_dy_um_per_mm": sy},
            "shortfall": dict(self.shortfall),
            "spec": None if self.spec is None else self.spec.model_dump(mode="json"),
            "flakes": self.truth_records(),
            "residue": [
                {"id": r.id, "thickness_nm": r.thickness_nm, "area_um2": round(float(r.polygon.area), 4),
                 "polygon_um": _polygons_to_json(r.polygon)}
                for r in self.residue
            ],
            "dust": [
                {"id": d.id, "x_um": d.x_um, "y_um": d.y_um, "radius_um": d.radius_um, "gain": d.gain,
                 "halo": d.halo}
                for d in self.dust
            ],
            "scratches": [
                {"id": c.id, "depth_nm": c.depth_nm, "polygon_um": _polygons_to_json(c.polygon)}
                for c in self.scratches
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> ChipLayout:
        """Build a layout from `to_dict` data (or a hand-written layout / a scan's truth.json).

        Derived fields (``layer_class``, ``area_um2``, ``centroid_um``, ``centre_um``) are ignored and
        recomputed. Raises `ConfigError` naming the offending field.
        """
        try:
            doc = _LayoutIn.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or None
            raise ConfigError(None, where, err["msg"]) from None
        return doc.build()

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write the layout atomically: a temp file in the same folder, fsync, then rename over ``path``."""
        write_text_atomic(path, _dump_layout(self.to_dict()))

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> ChipLayout:
        """Read a layout / truth.json file. Raises `ConfigError` naming the file and field."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(path, None, f"cannot read layout file: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(path, None, f"not valid JSON: {exc}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(path, exc.field, exc.message) from None


def _polygons_to_json(geom: Geometry) -> list[list[list[float]]]:
    # Exterior rings only (generated objects have no holes), without the repeated closing vertex.
    parts = geom.geoms if isinstance(geom, MultiPolygon) else [geom]
    return [np.asarray(p.exterior.coords)[:-1].tolist() for p in parts]


def _dump_layout(d: dict[str, Any]) -> str:
    # Header pretty-printed, then one object per line: readable, diff-friendly and compact.
    lines = ["{"]
    items = list(d.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if k in ("flakes", "residue", "dust") and v:
            lines.append(f"  {json.dumps(k)}: [")
            lines += [f"    {json.dumps(r, allow_nan=False)}{',' if j < len(v) - 1 else ''}"
                      for j, r in enumerate(v)]
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v, allow_nan=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- JSON input schema (strict about unknown keys, so a typo in a hand-written layout is reported) ----

Ring = list[tuple[float, float]]


def _polygon_from_rings(rings: list[Ring], where: str) -> Geometry:
    polys = []
    for ring in rings:
        if len(ring) < 3:
            raise ValueError(f"{where}: a ring needs at least 3 points")
        p = Polygon(ring)
        if not p.is_valid or p.area <= 0:
            raise ValueError(f"{where}: ring is not a simple polygon with positive area")
        polys.append(p)
    if not polys:
        raise ValueError(f"{where}: no polygon")
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


class _FlakeIn(BaseModel, extra="forbid"):
    id: int
    kind: FlakeKind
    layers: PositiveInt
    theta_deg: float = 0.0
    straight_edges: bool = True
    attached_to: int | None = None
    polygon_um: list[Ring]
    layer_class: str | None = None  # derived, ignored
    area_um2: float | None = None  # derived, ignored
    centroid_um: tuple[float, float] | None = None  # derived, ignored

    @field_validator("polygon_um")
    @classmethod
    def _rings(cls, v: list[Ring]) -> list[Ring]:
        _polygon_from_rings(v, "polygon_um")
        return v


class _ResidueIn(BaseModel, extra="forbid"):
    id: int
    thickness_nm: NonNegativeFloat
    polygon_um: list[Ring] = Field(min_length=1, max_length=1)
    area_um2: float | None = None  # derived, ignored

    @field_validator("polygon_um")
    @classmethod
    def _rings(cls, v: list[Ring]) -> list[Ring]:
        _polygon_from_rings(v, "polygon_um")
        return v


class _DustIn(BaseModel, extra="forbid"):
    id: int
    x_um: float
    y_um: float
    radius_um: PositiveFloat
    gain: NonNegativeFloat
    halo: bool = False


class _ScratchIn(BaseModel, extra="forbid"):
    id: int
    depth_nm: PositiveFloat
    polygon_um: list[Ring] = Field(min_length=1, max_length=1)

    @field_validator("polygon_um")
    @classmethod
    def _rings(cls, v: list[Ring]) -> list[Ring]:
        _polygon_from_rings(v, "polygon_um")
        return v


class _FocusIn(BaseModel, extra="forbid"):
    z_at_centre_um: float = 0.0
    dz_dx_um_per_mm: float = 0.0
    dz_dy_um_per_mm: float = 0.0


class _LayoutIn(BaseModel, extra="forbid"):
    format: Literal["flakehunter.chip-layout"] = LAYOUT_FORMAT
    version: Literal[1] = 1
    material: str
    seed: int | None = None
    bounds_um: tuple[float, float, float, float]
    centre_um: tuple[float, float] | None = None  # derived, ignored
    nominal_oxide_nm: PositiveFloat
    oxide_nm: PositiveFloat | None = None
    oxide_gradient_nm_per_mm: tuple[float, float] = (0.0, 0.0)
    focus: _FocusIn = Field(default_factory=_FocusIn)
    shortfall: dict[str, NonNegativeInt] = Field(default_factory=dict)
    spec: ChipSpec | None = None
    flakes: list[_FlakeIn] = Field(default_factory=list)
    residue: list[_ResidueIn] = Field(default_factory=list)
    dust: list[_DustIn] = Field(default_factory=list)
    scratches: list[_ScratchIn] = Field(default_factory=list)

    @field_validator("bounds_um")
    @classmethod
    def _bounds(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        if not (v[0] < v[2] and v[1] < v[3]):
            raise ValueError("bounds_um must be [xmin, ymin, xmax, ymax] with xmin < xmax and ymin < ymax")
        return v

    @model_validator(mode="after")
    def _ids(self) -> _LayoutIn:
        for name in ("flakes", "residue", "dust", "scratches"):
            ids = [o.id for o in getattr(self, name)]
            if len(set(ids)) != len(ids):
                raise ValueError(f"{name}: ids must be unique")
        body_ids = {f.id for f in self.flakes}
        for f in self.flakes:
            if f.attached_to is not None and f.attached_to not in body_ids:
                raise ValueError(f"flake {f.id}: attached_to={f.attached_to} names no flake")
        return self

    def build(self) -> ChipLayout:
        f = self.focus
        return ChipLayout(
            material=self.material,
            nominal_oxide_nm=self.nominal_oxide_nm,
            oxide_nm=self.nominal_oxide_nm if self.oxide_nm is None else self.oxide_nm,
            oxide_gradient_nm_per_mm=self.oxide_gradient_nm_per_mm,
            focus=(f.z_at_centre_um, f.dz_dx_um_per_mm, f.dz_dy_um_per_mm),
            bounds_um=self.bounds_um,
            seed=self.seed,
            flakes=tuple(
                SimFlake(id=r.id, kind=r.kind, layers=r.layers, theta_deg=r.theta_deg,
                         polygon=_polygon_from_rings(r.polygon_um, "polygon_um"),
                         straight_edges=r.straight_edges, attached_to=r.attached_to)
                for r in self.flakes
            ),
            residue=tuple(
                SimResidue(id=r.id, polygon=Polygon(r.polygon_um[0]), thickness_nm=r.thickness_nm)
                for r in self.residue
            ),
            dust=tuple(SimDust(id=d.id, x_um=d.x_um, y_um=d.y_um, radius_um=d.radius_um, gain=d.gain,
                               halo=d.halo) for d in self.dust),
            shortfall=dict(self.shortfall),
            spec=self.spec,
            scratches=tuple(
                SimScratch(id=c.id, polygon=Polygon(c.polygon_um[0]), depth_nm=c.depth_nm) for c in self.scratches
            ),
        )


# --------------------------------------------------------------------------------------------------
# Shape generation (local coordinates: centred on the origin, µm)
# --------------------------------------------------------------------------------------------------


def _scratches(
    spec: ChipSpec, inner: tuple[float, float, float, float], rng: np.random.Generator
) -> tuple[SimScratch, ...]:
    """Long grooves in the oxide: gently curved strips that may cross anything (a tweezer's track)."""
    from shapely.geometry import LineString

    out = []
    for _ in range(spec.scratches):
        length = float(rng.uniform(*spec.scratch_length_um))
        width = float(rng.uniform(*spec.scratch_width_um))
        start = rng.uniform(inner[:2], inner[2:])
        heading = rng.uniform(0, 2 * math.pi)
        bend = rng.normal(0, 0.3)  # total change of direction along the scratch, radians
        t = np.linspace(0, 1, 24)
        angle = heading + bend * t
        step = length / (len(t) - 1)
        xy = start + np.cumsum(np.column_stack([np.cos(angle), np.sin(angle)]) * step, axis=0)
        xy[:, 0] = np.clip(xy[:, 0], inner[0], inner[2])
        xy[:, 1] = np.clip(xy[:, 1], inner[1], inner[3])
        strip = LineString(xy).buffer(width / 2, cap_style="flat")
        if strip.geom_type != "Polygon" or strip.area <= 0:
            continue
        out.append(SimScratch(len(out) + 1, strip, float(rng.uniform(*spec.scratch_depth_nm))))
    return tuple(out)


def _edge_step_deg(material: Material) -> float:
    step = float(material.edge_symmetry_deg)
    n = round(360.0 / step) if step > 0 else 0
    # A closed polygon needs edge directions whose normals leave no gap of 180°: s must divide 360, <= 120.
    if step <= 0 or step > 120.0 or abs(n * step - 360.0) > 1e-9:
        raise ValueError(f"material {material.name!r}: edge_symmetry_deg={step} must divide 360 and be <= 120")
    return step


def _shoelace(v: np.ndarray) -> float:
    x, y = v[:, 0], v[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _ccw(v: np.ndarray) -> np.ndarray:
    return v if _shoelace(v) >= 0 else v[::-1].copy()


def _clip(v: np.ndarray, n: np.ndarray, d: float) -> np.ndarray:
    """Sutherland-Hodgman: keep the part of convex polygon ``v`` with n·p <= d."""
    s = v @ n - d
    inside = s <= 0
    if inside.all():
        return v
    out = []
    m = len(v)
    for i in range(m):
        j = (i + 1) % m
        if inside[i]:
            out.append(v[i])
        if inside[i] != inside[j]:
            t = s[i] / (s[i] - s[j])
            out.append(v[i] + t * (v[j] - v[i]))
    return np.array(out) if out else np.zeros((0, 2))


def _drop_short_edges(v: np.ndarray, tol: float) -> np.ndarray:
    keep = np.linalg.norm(v - np.roll(v, 1, axis=0), axis=1) > tol
    return v[keep] if keep.sum() >= 3 else v


def _max_gap_deg(angles: np.ndarray) -> float:
    a = np.sort(np.asarray(angles) % 360.0)
    return float(np.max(np.diff(np.append(a, a[0] + 360.0))))


def _crystal_core(rng: np.random.Generator, step: float, diameter: float, *, max_aspect: float,
                  ribbon_aspect: tuple[float, float] | None) -> np.ndarray:
    """Convex core with edges along k·step degrees (θ0 = 0), equivalent diameter ``diameter`` (µm).

    Intersection of half-planes n_i·p <= d_i; the offsets follow the support function of an ellipse of
    the wanted aspect ratio (long axis along an edge direction), pulled in at random.
    """
    n_dirs = round(360.0 / step)
    normals_deg = (90.0 + step * np.arange(n_dirs)) % 360.0
    big = 200.0
    for _ in range(30):
        if ribbon_aspect is not None:
            aspect = rng.uniform(*ribbon_aspect)
        else:
            aspect = 1.0 + (max_aspect - 1.0) * rng.random() ** 2  # mostly compact, a tail of strips
        psi = step * int(rng.integers(n_dirs))
        m = min(int(rng.integers(3, 9)), n_dirs)
        angles = normals_deg[rng.choice(n_dirs, size=m, replace=False)]
        if ribbon_aspect is not None:  # the two long sides of a ribbon are always there
            angles = np.unique(np.append(angles, [(psi + 90.0) % 360.0, (psi + 270.0) % 360.0]))
        # Gaps of 180° leave it open; wider than 150° gives needles sharper than 30°.
        if _max_gap_deg(angles) > 150.0 + 1e-9:
            continue
        rad = np.deg2rad(angles)
        delta = rad - math.radians(psi)
        h = np.hypot(aspect * np.cos(delta), np.sin(delta))
        d = h * rng.uniform(0.72, 1.0, size=len(h))
        v = np.array([[-big, -big], [big, -big], [big, big], [-big, big]])
        for r, di in zip(rad, d, strict=True):
            v = _clip(v, np.array([math.cos(r), math.sin(r)]), di)
            if len(v) < 3:
                break
        if len(v) < 3 or np.abs(v).max() > 0.9 * big:
            continue
        area = _shoelace(v)
        if area <= 0:
            continue
        cx, cy = _centroid(v, area)
        v = (v - (cx, cy)) * (0.5 * diameter * math.sqrt(math.pi / area))
        return _drop_short_edges(v, 1e-6 * diameter)
    # Unreachable in practice; a regular polygon of every allowed edge is always valid.
    ang = np.deg2rad(normals_deg + step / 2.0)
    v = np.column_stack([np.cos(ang), np.sin(ang)])
    return v * (0.5 * diameter * math.sqrt(math.pi / _shoelace(v)))


def _centroid(v: np.ndarray, area: float) -> tuple[float, float]:
    x, y = v[:, 0], v[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    return float(((x + xn) * cross).sum() / (6 * area)), float(((y + yn) * cross).sum() / (6 * area))


def _notch(rng: np.random.Generator, v: np.ndarray, step: float, diameter: float) -> np.ndarray:
    """Cut a small crystalline polygon out of the boundary (a concave notch); keeps edges crystalline."""
    i = int(rng.integers(len(v)))
    b = v[i] + rng.random() * (v[(i + 1) % len(v)] - v[i])
    cut = _crystal_core(rng, step, diameter * rng.uniform(0.15, 0.3), max_aspect=2.5, ribbon_aspect=None)
    poly = Polygon(v)
    res = poly.difference(Polygon(cut + b))
    if not isinstance(res, Polygon) or res.interiors or not res.is_valid or res.area < 0.75 * poly.area:
        return v
    return _ccw(_drop_short_edges(np.asarray(res.exterior.coords)[:-1], 1e-6 * diameter))


def _rough_profile(rng: np.random.Generator, depth: int) -> np.ndarray:
    """Midpoint-displacement profile on 2**depth + 1 points, zero at both ends, max |value| = 1."""
    n = 2**depth
    p = np.zeros(n + 1)
    hurst = rng.uniform(0.5, 0.8)
    scale, stride = 1.0, n
    while stride > 1:
        half = stride // 2
        mid = np.arange(half, n, stride)
        p[mid] = 0.5 * (p[mid - half] + p[mid + half]) + rng.normal(0.0, scale, mid.size)
        scale *= 2.0 ** (-hurst)
        stride = half
    return p / max(float(np.abs(p).max()), 1e-12)


def _tear(rng: np.random.Generator, v: np.ndarray, torn: np.ndarray, amp_range: tuple[float, float]) -> np.ndarray:
    """Replace the edges flagged in ``torn`` (edge i runs v[i] -> v[i+1]) by rough curves."""
    out = []
    m = len(v)
    for i in range(m):
        out.append(v[i : i + 1])
        if not torn[i]:
            continue
        p, q = v[i], v[(i + 1) % m]
        e = q - p
        length = float(np.hypot(*e))
        if length <= 0:
            continue
        # >= 32 pieces so no piece of a torn edge passes for a straight side (< 3 % of the perimeter).
        depth = int(np.clip(math.ceil(math.log2(max(length, 1.0))), 5, 7))
        prof = _rough_profile(rng, depth)[1:-1] * rng.uniform(*amp_range) * length
        t = np.arange(1, 2**depth) / 2**depth
        normal = np.array([-e[1], e[0]]) / length
        out.append(p + t[:, None] * e + prof[:, None] * normal)
    return np.vstack(out)


@dataclass
class _Shape:
    """A flake outline in local coordinates (θ0 = 0) plus its untorn sides (for attaching terraces)."""

    verts: np.ndarray
    straight: list[tuple[np.ndarray, np.ndarray]]


def _flake_shape(rng: np.random.Generator, spec: ChipSpec, step: float, diameter: float) -> _Shape:
    ribbon = spec.ribbon_aspect if rng.random() < spec.ribbon_fraction else None
    v = _ccw(_crystal_core(rng, step, diameter, max_aspect=spec.max_aspect, ribbon_aspect=ribbon))
    if rng.random() < spec.notch_fraction:
        v = _notch(rng, v, step, diameter)
    m = len(v)
    lengths = np.linalg.norm(np.roll(v, -1, axis=0) - v, axis=1)
    torn = np.zeros(m, dtype=bool)
    if rng.random() < spec.fully_torn_fraction:
        torn[:] = True
    else:
        # Keep (up to) two sizeable sides straight so most flakes show >= 2 crystallographic edges.
        big = np.flatnonzero(lengths >= _PROTECT_MIN_FRACTION * lengths.sum())
        if len(big) < 2:
            big = np.argsort(lengths)[-2:]
        protect = rng.choice(big, size=min(2, len(big)), replace=False)
        n_tear = round(rng.uniform(*spec.torn_edge_fraction) * m)
        candidates = np.setdiff1d(np.arange(m), protect)
        torn[rng.choice(candidates, size=min(n_tear, len(candidates)), replace=False)] = True
    amp = spec.tear_amplitude
    for _ in range(4):
        out = _tear(rng, v, torn, amp) if torn.any() else v
        if Polygon(out).is_valid:
            break
        amp = (amp[0] / 2, amp[1] / 2)  # a tear crossed a neighbouring side: calmer roughness
    else:
        out, torn = v, np.zeros(m, dtype=bool)
    straight = [(v[i], v[(i + 1) % m]) for i in range(m) if not torn[i]]
    return _Shape(out, straight)


def _rotation(theta_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(theta_deg)), math.sin(math.radians(theta_deg))
    return np.array([[c, -s], [s, c]])


def _residue_shape(rng: np.random.Generator, spec: ChipSpec, peel_deg: float) -> np.ndarray:
    """Smooth elongated blob (star-shaped, so always simple), long axis near the peel direction."""
    lo, hi = spec.residue_length_um
    length = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    a, b = 0.5 * length, 0.5 * length / rng.uniform(*spec.residue_aspect)
    phi = np.linspace(0.0, 2 * math.pi, 48, endpoint=False)
    r = np.ones_like(phi)
    for k in (2, 3, 4):
        r += rng.uniform(0.0, 0.08) / (k - 1) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    v = np.column_stack([a * r * np.cos(phi), b * r * np.sin(phi)])
    return v @ _rotation(peel_deg + rng.normal(0.0, 8.0)).T


def _has_straight_edge(geom: Geometry) -> bool:
    parts = geom.geoms if isinstance(geom, MultiPolygon) else [geom]
    limit = STRAIGHT_EDGE_MIN_FRACTION * geom.length
    for p in parts:
        c = np.asarray(p.exterior.coords)
        if (np.linalg.norm(np.diff(c, axis=0), axis=1) >= limit).any():
            return True
    return False


def _lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    for _ in range(100):  # truncated log-normal by rejection; the range always holds real mass
        d = median * math.exp(sigma * rng.standard_normal())
        if lo <= d <= hi:
            return d
    return float(np.clip(median, lo, hi))


# --------------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------------


class _Grid:
    """Spatial hash of bounding boxes. STRtree is immutable, and placement adds one object at a time."""

    def __init__(self, cell: float) -> None:
        self.cell = cell
        self.cells: dict[tuple[int, int], list[int]] = {}
        self.geoms: list[Any] = []
        self.bounds: list[tuple[float, float, float, float]] = []

    def _keys(self, b: Sequence[float]) -> Iterable[tuple[int, int]]:
        c = self.cell
        for i in range(math.floor(b[0] / c), math.floor(b[2] / c) + 1):
            for j in range(math.floor(b[1] / c), math.floor(b[3] / c) + 1):
                yield (i, j)

    def add(self, geom: Any) -> int:
        idx = len(self.geoms)
        self.geoms.append(geom)
        self.bounds.append(geom.bounds)
        for k in self._keys(geom.bounds):
            self.cells.setdefault(k, []).append(idx)
        return idx

    def clear_of(self, geom: Any, gap: float, exclude: int | None = None) -> bool:
        """True when ``geom`` keeps more than ``gap`` from every stored geometry (gap 0: no contact)."""
        b = geom.bounds
        found: set[int] = set()
        for k in self._keys((b[0] - gap, b[1] - gap, b[2] + gap, b[3] + gap)):
            found.update(self.cells.get(k, ()))
        if exclude is not None:
            found.discard(exclude)
        # Exact tests only for neighbours whose boxes come within the gap: they are the costly part.
        ids = [i for i in found if (self.bounds[i][0] <= b[2] + gap and self.bounds[i][2] >= b[0] - gap
                                    and self.bounds[i][1] <= b[3] + gap and self.bounds[i][3] >= b[1] - gap)]
        if not ids:
            return True
        others = [self.geoms[i] for i in ids]
        hit = shapely.dwithin(geom, others, gap) if gap > 0 else shapely.intersects(geom, others)
        return not bool(np.any(hit))


class _Patience:
    """Ends a category once most recent objects found no room, so a crowded chip cannot loop for long."""

    def __init__(self) -> None:
        self.recent: deque[bool] = deque(maxlen=_WINDOW)

    @property
    def exhausted(self) -> bool:
        return sum(self.recent) >= _GIVE_UP_AFTER

    def record(self, placed: bool) -> None:
        self.recent.append(not placed)


@dataclass
class _Body:
    grid_index: int
    flake_id: int
    theta_deg: float
    polygon: Polygon
    edges: list[tuple[np.ndarray, np.ndarray, float]]  # (p, q, length) of untorn sides, stage µm


def _offset_range(inner: tuple[float, float, float, float], lb: Sequence[float]) -> tuple[float, ...] | None:
    """Offsets that keep local bounds ``lb`` inside ``inner``; None when the object cannot fit."""
    x0, x1 = inner[0] - lb[0], inner[2] - lb[2]
    y0, y1 = inner[1] - lb[1], inner[3] - lb[3]
    if x0 > x1 or y0 > y1:
        return None
    return (x0, y0, x1, y1)


def _inside(inner: tuple[float, float, float, float], b: Sequence[float]) -> bool:
    return inner[0] <= b[0] and inner[1] <= b[1] and b[2] <= inner[2] and b[3] <= inner[3]


def generate_chip(spec: ChipSpec, material: Material, nominal_oxide_nm: float, seed: int) -> ChipLayout:
    """Draw a random chip; the same (spec, material, oxide, seed) always gives the same layout.

    Args:
        spec: counts, sizes and substrate variation.
        material: sets the edge symmetry (``edge_symmetry_deg``) and layer thickness of thick flakes.
        nominal_oxide_nm: the chip's nominal SiO2 thickness (nm); the actual one is jittered.
        seed: non-negative integer seed of the numpy Generator.

    Flakes that find no room are counted in ``layout.shortfall`` instead of being forced in.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if material.layer_thickness_nm <= 0:
        raise ValueError(f"material {material.name!r}: layer_thickness_nm must be > 0")
    step = _edge_step_deg(material)
    # Independent streams per stage, so e.g. more dust does not reshuffle the flakes.
    r_sub, r_body, r_thin, r_res, r_dust = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))

    ox, oy = spec.origin_um
    w, h = spec.size_um
    bounds = (float(ox), float(oy), float(ox + w), float(oy + h))
    m = spec.edge_margin_um
    inner = (bounds[0] + m, bounds[1] + m, bounds[2] - m, bounds[3] - m)
    attempts = spec.placement_attempts
    theta_span = 60.0 if 60.0 % step == 0 else step  # θ0 ~ U[0, 60) as in optics.md §3.2

    # ---- substrate ----
    oxide = nominal_oxide_nm + spec.oxide_offset_nm + r_sub.uniform(-spec.oxide_jitter_nm, spec.oxide_jitter_nm)
    a = r_sub.uniform(0, 2 * math.pi)
    grad = (spec.oxide_gradient_nm_per_mm * math.cos(a), spec.oxide_gradient_nm_per_mm * math.sin(a))
    a = r_sub.uniform(0, 2 * math.pi)
    focus = (spec.focus_z_um, spec.tilt_um_per_mm * math.cos(a), spec.tilt_um_per_mm * math.sin(a))

    bodies_grid, thin_grid, res_grid = _Grid(_GRID_CELL_UM), _Grid(_GRID_CELL_UM), _Grid(_GRID_CELL_UM)
    flakes: list[SimFlake] = []
    bodies: list[_Body] = []
    shortfall = {"thick": 0, "multilayer": 0, "thin": 0, "residue": 0, "dust": 0}

    # ---- thick and multilayer bodies: no overlap among themselves; largest first packs best ----
    todo: list[tuple[float, FlakeKind]] = []
    for _ in range(spec.thick_flakes):
        todo.append((_lognormal(r_body, spec.thick_median_diameter_um, spec.thick_sigma_ln,
                                spec.thick_min_diameter_um, spec.thick_max_diameter_um), "thick"))
    for _ in range(spec.multilayer_flakes):
        todo.append((_lognormal(r_body, spec.multilayer_median_diameter_um, spec.thick_sigma_ln,
                                spec.thick_min_diameter_um, spec.thick_max_diameter_um), "multilayer"))
    todo.sort(key=lambda t: -t[0])
    patience = _Patience()
    for diameter, kind in todo:
        if patience.exhausted:
            shortfall[kind] += 1
            continue
        if kind == "thick":
            lo, hi = spec.thick_nm
            t_nm = math.exp(r_body.uniform(math.log(lo), math.log(hi)))
            layers = max(_BULK_MIN_LAYERS, round(t_nm / material.layer_thickness_nm))
        else:
            layers = int(r_body.integers(spec.multilayer_layers[0], spec.multilayer_layers[1] + 1))
        theta = r_body.uniform(0.0, theta_span)
        shape = _flake_shape(r_body, spec, step, diameter)
        rot = _rotation(theta)
        verts = shape.verts @ rot.T
        lb = (*verts.min(axis=0), *verts.max(axis=0))
        rng_xy = _offset_range(inner, lb)
        placed = False
        for _ in range(attempts if rng_xy else 0):
            off = r_body.uniform(rng_xy[:2], rng_xy[2:])
            poly = Polygon(verts + off)
            if bodies_grid.clear_of(poly, 0.0):
                placed = True
                break
        if not placed:
            shortfall[kind] += 1
            patience.record(False)
            continue
        patience = _Patience()
        fid = len(flakes) + 1  # ids start at 1, so 0 can mean "substrate" in an instance mask
        gi = bodies_grid.add(poly)
        edges = [(p @ rot.T + off, q @ rot.T + off, float(np.hypot(*(q - p)))) for p, q in shape.straight]
        edges = [e for e in edges if e[2] >= spec.thin_min_diameter_um]
        bodies.append(_Body(gi, fid, theta, poly, edges))
        flakes.append(SimFlake(fid, kind, layers, theta % step, poly, _has_straight_edge(poly)))

    # ---- thin flakes: min_spacing from everything but the body a terrace grows from ----
    weights = sorted(spec.thin_layer_weights.items())
    layer_values = np.array([k for k, _ in weights])
    probs = np.array([v for _, v in weights], dtype=float)
    probs /= probs.sum()
    n_att = round(spec.attached_fraction * spec.thin_flakes)
    attach_flags = np.zeros(spec.thin_flakes, dtype=bool)
    attach_flags[r_thin.permutation(spec.thin_flakes)[:n_att]] = True
    hosts = [b for b in bodies if b.edges]
    host_weight = np.array([sum(e[2] for e in b.edges) for b in hosts])
    min_area = math.pi / 4 * spec.thin_min_diameter_um**2
    gap = spec.min_spacing_um
    patience = _Patience()
    for want_attached in attach_flags:
        if patience.exhausted:
            shortfall["thin"] += 1
            continue
        layers = int(r_thin.choice(layer_values, p=probs))
        diameter = _lognormal(r_thin, spec.thin_median_diameter_um, spec.thin_sigma_ln,
                              spec.thin_min_diameter_um, spec.thin_max_diameter_um)
        shape = _flake_shape(r_thin, spec, step, diameter)
        result: tuple[Geometry, float, int | None] | None = None
        if want_attached and hosts:
            result = _attach(r_thin, shape, hosts, host_weight, bodies_grid, thin_grid, inner, gap, min_area,
                             attempts)
        if result is None:
            theta = r_thin.uniform(0.0, theta_span)
            verts = shape.verts @ _rotation(theta).T
            rng_xy = _offset_range(inner, (*verts.min(axis=0), *verts.max(axis=0)))
            for _ in range(attempts if rng_xy else 0):
                poly = Polygon(verts + r_thin.uniform(rng_xy[:2], rng_xy[2:]))
                if bodies_grid.clear_of(poly, gap) and thin_grid.clear_of(poly, gap):
                    result = (poly, theta, None)
                    break
        if result is None:
            shortfall["thin"] += 1
            patience.record(False)
            continue
        patience = _Patience()
        geom, theta, host = result
        thin_grid.add(geom)
        flakes.append(SimFlake(len(flakes) + 1, "thin", layers, theta % step, geom, _has_straight_edge(geom),
                               host))

    # ---- residue: smooth blobs along one peel direction, clear of thin flakes, not on each other ----
    peel = r_res.uniform(0.0, 180.0)
    residue: list[SimResidue] = []
    patience = _Patience()
    for _ in range(spec.residue_blobs):
        if patience.exhausted:
            shortfall["residue"] += 1
            continue
        verts = _residue_shape(r_res, spec, peel)
        thickness = r_res.uniform(*spec.residue_thickness_nm)
        rng_xy = _offset_range(inner, (*verts.min(axis=0), *verts.max(axis=0)))
        poly = None
        for _ in range(attempts if rng_xy else 0):
            cand = Polygon(verts + r_res.uniform(rng_xy[:2], rng_xy[2:]))
            if thin_grid.clear_of(cand, gap) and res_grid.clear_of(cand, 0.0):
                poly = cand
                break
        if poly is None:
            shortfall["residue"] += 1
            patience.record(False)
            continue
        patience = _Patience()
        res_grid.add(poly)
        residue.append(SimResidue(len(residue) + 1, poly, thickness))

    # ---- dust: anywhere, but DUST_CLEARANCE_UM away from thin flakes ----
    dust: list[SimDust] = []
    glo, ghi = spec.dust_gain
    dark = (glo, min(ghi, 0.85))
    bright = (max(glo, 1.15), ghi)
    patience = _Patience()
    for _ in range(spec.dust):
        if patience.exhausted:
            shortfall["dust"] += 1
            continue
        rlo, rhi = spec.dust_radius_um
        radius = math.exp(r_dust.uniform(math.log(rlo), math.log(rhi)))
        # Gains near 1 would be invisible: draw dark or bright, each where its range is non-empty.
        ranges = [g for g in (dark, bright) if g[0] <= g[1]] or [spec.dust_gain]
        gain = float(r_dust.uniform(*ranges[int(r_dust.integers(len(ranges)))]))
        halo = bool(r_dust.random() < spec.dust_halo_fraction)
        rng_xy = _offset_range(inner, (-radius, -radius, radius, radius))
        pos = None
        for _ in range(attempts if rng_xy else 0):
            x, y = r_dust.uniform(rng_xy[:2], rng_xy[2:])
            if thin_grid.clear_of(Point(x, y), radius + DUST_CLEARANCE_UM):
                pos = (float(x), float(y))
                break
        if pos is None:
            shortfall["dust"] += 1
            patience.record(False)
            continue
        patience = _Patience()
        dust.append(SimDust(len(dust) + 1, pos[0], pos[1], radius, gain, halo))

    scratches = _scratches(spec, inner, np.random.default_rng([seed, 11]))

    return ChipLayout(
        material=material.name,
        nominal_oxide_nm=float(nominal_oxide_nm),
        oxide_nm=float(oxide),
        oxide_gradient_nm_per_mm=grad,
        focus=focus,
        bounds_um=bounds,
        seed=seed,
        flakes=tuple(flakes),
        residue=tuple(residue),
        dust=tuple(dust),
        scratches=scratches,
        shortfall=shortfall,
        spec=spec,
    )


def _attach(rng: np.random.Generator, shape: _Shape, hosts: list[_Body], host_weight: np.ndarray,
            bodies_grid: _Grid, thin_grid: _Grid, inner: tuple[float, float, float, float], gap: float,
            min_area: float, attempts: int) -> tuple[Geometry, float, int] | None:
    """Grow a thin terrace outward from a straight side of a body; returns (visible polygon, θ0, body id)."""
    p_host = host_weight / host_weight.sum()
    for _ in range(attempts):
        body = hosts[int(rng.choice(len(hosts), p=p_host))]
        lengths = np.array([e[2] for e in body.edges])
        p, q, length = body.edges[int(rng.choice(len(lengths), p=lengths / lengths.sum()))]
        u = (q - p) / length
        n_out = np.array([u[1], -u[0]])  # bodies are counter-clockwise: outward is to the right
        verts = shape.verts @ _rotation(body.theta_deg).T  # terraces share the body's lattice
        proj = verts @ n_out
        lo, hi = float(proj.min()), float(proj.max())
        # Place the core so a fraction f of its extent along n lies outside the edge line.
        f = rng.uniform(0.55, 0.95)
        anchor = p + rng.uniform(0.15, 0.85) * (q - p)
        centre = anchor + n_out * (f * (hi - lo) - hi)
        core = Polygon(verts + centre)
        if not _inside(inner, core.bounds):
            continue
        shared = LineString([p, q]).intersection(core).length
        if shared < 0.5 * math.sqrt(min_area):
            continue
        # The terrace should hug the chosen side, not wrap around the body.
        if shapely.intersection(body.polygon.exterior, core).length > 1.5 * shared:
            continue
        # Spacing is checked on the whole core (a superset of the visible part): cheaper, and only
        # conservative, because other objects already keep clear of the body it overlaps.
        if not (thin_grid.clear_of(core, gap) and bodies_grid.clear_of(core, gap, exclude=body.grid_index)):
            continue
        vis = core.difference(body.polygon)
        if isinstance(vis, Polygon) and not vis.interiors and vis.area >= min_area and vis.is_valid:
            return vis, body.theta_deg, body.flake_id
    return None
