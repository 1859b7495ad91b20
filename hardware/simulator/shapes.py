"""Shapes of simulated objects, in local µm coordinates centred on the origin: crystalline flake cores cut
along lattice directions, torn edges, notches, residue blobs and scratches (the recipe of optics.md §3.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from shapely.geometry import LineString, MultiPolygon, Polygon

from flakehunter.hardware.simulator.chip import STRAIGHT_EDGE_MIN_FRACTION, ChipSpec, Geometry, SimScratch
from flakehunter.materials import Material

# A core edge at least this fraction of the core perimeter is one we may protect from tearing.
PROTECT_MIN_FRACTION = 0.08




def scratch_grooves(
    spec: ChipSpec, inner: tuple[float, float, float, float], rng: np.random.Generator
) -> tuple[SimScratch, ...]:
    """Long grooves in the oxide: gently curved strips that may cross anything (a tweezer's track)."""

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


def edge_step_deg(material: Material) -> float:
    step = float(material.edge_symmetry_deg)
    n = round(360.0 / step) if step > 0 else 0
    # A closed polygon needs edge directions whose normals leave no gap of 180°: s must divide 360, <= 120.
    if step <= 0 or step > 120.0 or abs(n * step - 360.0) > 1e-9:
        raise ValueError(f"material {material.name!r}: edge_symmetry_deg={step} must divide 360 and be <= 120")
    return step


def shoelace(v: np.ndarray) -> float:
    x, y = v[:, 0], v[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def ccw(v: np.ndarray) -> np.ndarray:
    return v if shoelace(v) >= 0 else v[::-1].copy()


def clip(v: np.ndarray, n: np.ndarray, d: float) -> np.ndarray:
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


def drop_short_edges(v: np.ndarray, tol: float) -> np.ndarray:
    keep = np.linalg.norm(v - np.roll(v, 1, axis=0), axis=1) > tol
    return v[keep] if keep.sum() >= 3 else v


def max_gap_deg(angles: np.ndarray) -> float:
    a = np.sort(np.asarray(angles) % 360.0)
    return float(np.max(np.diff(np.append(a, a[0] + 360.0))))


def crystal_core(rng: np.random.Generator, step: float, diameter: float, *, max_aspect: float,
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
        if max_gap_deg(angles) > 150.0 + 1e-9:
            continue
        rad = np.deg2rad(angles)
        delta = rad - math.radians(psi)
        h = np.hypot(aspect * np.cos(delta), np.sin(delta))
        d = h * rng.uniform(0.72, 1.0, size=len(h))
        v = np.array([[-big, -big], [big, -big], [big, big], [-big, big]])
        for r, di in zip(rad, d, strict=True):
            v = clip(v, np.array([math.cos(r), math.sin(r)]), di)
            if len(v) < 3:
                break
        if len(v) < 3 or np.abs(v).max() > 0.9 * big:
            continue
        area = shoelace(v)
        if area <= 0:
            continue
        cx, cy = centroid(v, area)
        v = (v - (cx, cy)) * (0.5 * diameter * math.sqrt(math.pi / area))
        return drop_short_edges(v, 1e-6 * diameter)
    # Unreachable in practice; a regular polygon of every allowed edge is always valid.
    ang = np.deg2rad(normals_deg + step / 2.0)
    v = np.column_stack([np.cos(ang), np.sin(ang)])
    return v * (0.5 * diameter * math.sqrt(math.pi / shoelace(v)))


def centroid(v: np.ndarray, area: float) -> tuple[float, float]:
    x, y = v[:, 0], v[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    return float(((x + xn) * cross).sum() / (6 * area)), float(((y + yn) * cross).sum() / (6 * area))


def notch(rng: np.random.Generator, v: np.ndarray, step: float, diameter: float) -> np.ndarray:
    """Cut a small crystalline polygon out of the boundary (a concave notch); keeps edges crystalline."""
    i = int(rng.integers(len(v)))
    b = v[i] + rng.random() * (v[(i + 1) % len(v)] - v[i])
    cut = crystal_core(rng, step, diameter * rng.uniform(0.15, 0.3), max_aspect=2.5, ribbon_aspect=None)
    poly = Polygon(v)
    res = poly.difference(Polygon(cut + b))
    if not isinstance(res, Polygon) or res.interiors or not res.is_valid or res.area < 0.75 * poly.area:
        return v
    return ccw(drop_short_edges(np.asarray(res.exterior.coords)[:-1], 1e-6 * diameter))


def rough_profile(rng: np.random.Generator, depth: int) -> np.ndarray:
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


def tear(rng: np.random.Generator, v: np.ndarray, torn: np.ndarray, amp_range: tuple[float, float]) -> np.ndarray:
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
        prof = rough_profile(rng, depth)[1:-1] * rng.uniform(*amp_range) * length
        t = np.arange(1, 2**depth) / 2**depth
        normal = np.array([-e[1], e[0]]) / length
        out.append(p + t[:, None] * e + prof[:, None] * normal)
    return np.vstack(out)


@dataclass
class Shape:
    """A flake outline in local coordinates (θ0 = 0) plus its untorn sides (for attaching terraces)."""

    verts: np.ndarray
    straight: list[tuple[np.ndarray, np.ndarray]]


def flake_shape(rng: np.random.Generator, spec: ChipSpec, step: float, diameter: float) -> Shape:
    ribbon = spec.ribbon_aspect if rng.random() < spec.ribbon_fraction else None
    v = ccw(crystal_core(rng, step, diameter, max_aspect=spec.max_aspect, ribbon_aspect=ribbon))
    if rng.random() < spec.notch_fraction:
        v = notch(rng, v, step, diameter)
    m = len(v)
    lengths = np.linalg.norm(np.roll(v, -1, axis=0) - v, axis=1)
    torn = np.zeros(m, dtype=bool)
    if rng.random() < spec.fully_torn_fraction:
        torn[:] = True
    else:
        # Keep (up to) two sizeable sides straight so most flakes show >= 2 crystallographic edges.
        big = np.flatnonzero(lengths >= PROTECT_MIN_FRACTION * lengths.sum())
        if len(big) < 2:
            big = np.argsort(lengths)[-2:]
        protect = rng.choice(big, size=min(2, len(big)), replace=False)
        n_tear = round(rng.uniform(*spec.torn_edge_fraction) * m)
        candidates = np.setdiff1d(np.arange(m), protect)
        torn[rng.choice(candidates, size=min(n_tear, len(candidates)), replace=False)] = True
    amp = spec.tear_amplitude
    for _ in range(4):
        out = tear(rng, v, torn, amp) if torn.any() else v
        if Polygon(out).is_valid:
            break
        amp = (amp[0] / 2, amp[1] / 2)  # a tear crossed a neighbouring side: calmer roughness
    else:
        out, torn = v, np.zeros(m, dtype=bool)
    straight = [(v[i], v[(i + 1) % m]) for i in range(m) if not torn[i]]
    return Shape(out, straight)


def rotation(theta_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(theta_deg)), math.sin(math.radians(theta_deg))
    return np.array([[c, -s], [s, c]])


def residue_shape(rng: np.random.Generator, spec: ChipSpec, peel_deg: float) -> np.ndarray:
    """Smooth elongated blob (star-shaped, so always simple), long axis near the peel direction."""
    lo, hi = spec.residue_length_um
    length = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    a, b = 0.5 * length, 0.5 * length / rng.uniform(*spec.residue_aspect)
    phi = np.linspace(0.0, 2 * math.pi, 48, endpoint=False)
    r = np.ones_like(phi)
    for k in (2, 3, 4):
        r += rng.uniform(0.0, 0.08) / (k - 1) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    v = np.column_stack([a * r * np.cos(phi), b * r * np.sin(phi)])
    return v @ rotation(peel_deg + rng.normal(0.0, 8.0)).T


def has_straight_edge(geom: Geometry) -> bool:
    parts = geom.geoms if isinstance(geom, MultiPolygon) else [geom]
    limit = STRAIGHT_EDGE_MIN_FRACTION * geom.length
    for p in parts:
        c = np.asarray(p.exterior.coords)
        if (np.linalg.norm(np.diff(c, axis=0), axis=1) >= limit).any():
            return True
    return False


def lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    for _ in range(100):  # truncated log-normal by rejection; the range always holds real mass
        d = median * math.exp(sigma * rng.standard_normal())
        if lo <= d <= hi:
            return d
    return float(np.clip(median, lo, hi))
