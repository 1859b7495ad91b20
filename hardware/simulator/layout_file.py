"""The JSON schema of a chip layout / ``truth.json`` file, strict about unknown keys, so that a typo in a
hand-written layout is reported with its field (docs/simulator-layout.md describes the format)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from shapely.geometry import MultiPolygon, Polygon

from flakehunter.hardware.simulator.chip import (
    LAYOUT_FORMAT,
    ChipLayout,
    ChipSpec,
    FlakeKind,
    Geometry,
    SimDust,
    SimFlake,
    SimResidue,
    SimScratch,
)

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


class LayoutDocument(BaseModel, extra="forbid"):
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
    def _ids(self) -> LayoutDocument:
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
