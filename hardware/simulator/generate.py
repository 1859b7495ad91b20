"""Random chips: crystalline flake shapes, torn edges, terraces, residue, dust and scratches, placed
by rejection sampling (the recipe of optics.md §3.2; `flakehunter.hardware.simulator.chip` holds what
they produce)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon

from flakehunter.hardware.simulator.chip import (
    DUST_CLEARANCE_UM,
    ChipLayout,
    ChipSpec,
    FlakeKind,
    Geometry,
    SimDust,
    SimFlake,
    SimResidue,
)
from flakehunter.hardware.simulator.shapes import (
    Shape,
    edge_step_deg,
    flake_shape,
    has_straight_edge,
    lognormal,
    residue_shape,
    rotation,
    scratch_grooves,
)
from flakehunter.materials import Material

# Thick crystals always get more layers than the "few" class, so kind and layer_class agree.
_BULK_MIN_LAYERS = 21
# Grid cell of the placement hash (µm): a few typical body diameters.
_GRID_CELL_UM = 250.0
# A category stops trying once this many of its last _WINDOW objects found no room (crowded chip).
_WINDOW = 30
_GIVE_UP_AFTER = 20

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
    step = edge_step_deg(material)
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
        todo.append((lognormal(r_body, spec.thick_median_diameter_um, spec.thick_sigma_ln,
                                spec.thick_min_diameter_um, spec.thick_max_diameter_um), "thick"))
    for _ in range(spec.multilayer_flakes):
        todo.append((lognormal(r_body, spec.multilayer_median_diameter_um, spec.thick_sigma_ln,
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
        shape = flake_shape(r_body, spec, step, diameter)
        rot = rotation(theta)
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
        flakes.append(SimFlake(fid, kind, layers, theta % step, poly, has_straight_edge(poly)))

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
        diameter = lognormal(r_thin, spec.thin_median_diameter_um, spec.thin_sigma_ln,
                              spec.thin_min_diameter_um, spec.thin_max_diameter_um)
        shape = flake_shape(r_thin, spec, step, diameter)
        result: tuple[Geometry, float, int | None] | None = None
        if want_attached and hosts:
            result = _attach(r_thin, shape, hosts, host_weight, bodies_grid, thin_grid, inner, gap, min_area,
                             attempts)
        if result is None:
            theta = r_thin.uniform(0.0, theta_span)
            verts = shape.verts @ rotation(theta).T
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
        flakes.append(SimFlake(len(flakes) + 1, "thin", layers, theta % step, geom, has_straight_edge(geom),
                               host))

    # ---- residue: smooth blobs along one peel direction, clear of thin flakes, not on each other ----
    peel = r_res.uniform(0.0, 180.0)
    residue: list[SimResidue] = []
    patience = _Patience()
    for _ in range(spec.residue_blobs):
        if patience.exhausted:
            shortfall["residue"] += 1
            continue
        verts = residue_shape(r_res, spec, peel)
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

    scratches = scratch_grooves(spec, inner, np.random.default_rng([seed, 11]))

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


def _attach(rng: np.random.Generator, shape: Shape, hosts: list[_Body], host_weight: np.ndarray,
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
        verts = shape.verts @ rotation(body.theta_deg).T  # terraces share the body's lattice
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
