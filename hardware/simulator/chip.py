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

Typical use (`flakehunter.hardware.simulator.generate` makes layouts, `layout_file` reads them)::

    layout = generate_chip(ChipSpec(), material, nominal_oxide_nm=285.0, seed=7)
    view = layout.query(x0, y0, x1, y1)          # what a camera frame has to draw
    layout.save_json(run_dir / "truth.json")      # doubles as a layout file for a rescan
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

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
from shapely.geometry import MultiPolygon, Polygon
from shapely.strtree import STRtree

from flakehunter.atomic import atomic_write
from flakehunter.errors import ConfigError

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
        return list(self._flake_records())

    def _flake_records(self) -> Iterator[dict[str, Any]]:
        for f in self.flakes:
            cx, cy = f.centroid_um
            yield {
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
            }

    def to_dict(self) -> dict[str, Any]:
        """The whole layout as JSON-ready data (the layout / truth.json format)."""
        return {k: list(v) if isinstance(v, Iterator) else v for k, v in self._json_fields().items()}

    def _json_fields(self) -> dict[str, Any]:
        """`to_dict`, with the flakes, residue and dust as iterators, so that writing a large chip's layout never
        holds it all as Python objects (1,000 tiles of a dense chip: 80 MB of JSON, 0.5 GB as lists)."""
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
            "flakes": self._flake_records(),
            "residue": (
                {"id": r.id, "thickness_nm": r.thickness_nm, "area_um2": round(float(r.polygon.area), 4),
                 "polygon_um": _polygons_to_json(r.polygon)}
                for r in self.residue
            ),
            "dust": (
                {"id": d.id, "x_um": d.x_um, "y_um": d.y_um, "radius_um": d.radius_um, "gain": d.gain,
                 "halo": d.halo}
                for d in self.dust
            ),
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
        from flakehunter.hardware.simulator.layout_file import LayoutDocument

        try:
            doc = LayoutDocument.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or None
            raise ConfigError(None, where, err["msg"]) from None
        return doc.build()

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write the layout atomically: a temp file in the same folder, fsync, then rename over ``path``."""
        with atomic_write(path) as fh:
            _dump_layout(self._json_fields(), fh)

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


def _dump_layout(fields: dict[str, Any], out: IO[str]) -> None:
    # Header pretty-printed, then one object per line: readable, diff-friendly and compact. Written as it is
    # made: the records may be iterators.
    out.write("{\n")
    items = list(fields.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if k in ("flakes", "residue", "dust"):
            out.write(f"  {json.dumps(k)}: [")
            empty = True
            for record in v:
                out.write(f"{'' if empty else ','}\n    {json.dumps(record, allow_nan=False)}")
                empty = False
            out.write(f"]{comma}\n" if empty else f"\n  ]{comma}\n")
        else:
            out.write(f"  {json.dumps(k)}: {json.dumps(v, allow_nan=False)}{comma}\n")
    out.write("}\n")
