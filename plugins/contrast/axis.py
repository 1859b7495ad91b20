"""Crystal axis from straight edges (the classical baseline the CNN must beat).

Exfoliated flakes cleave along lattice directions, so their straight edges run at θ0 + k·30°
(graphene, hBN) or θ0 + k·60° (TMDs). For one region:

1. a sub-pixel contour at half the region's contrast (the edge of a blurred step is where the
   profile crosses half its height, whatever the blur);
2. the contour split into straight runs (Douglas–Peucker), each run fitted by total least squares
   with its corners trimmed; runs that are short or not straight (torn edges) are dropped;
3. the run directions folded modulo the symmetry period onto a circle and averaged with weights
   that grow with length (a longer edge gives a better angle: var ∝ 1/L³), after dropping runs
   that disagree with the consensus.

Angles are in image coordinates, measured from +col towards +row (atan2(Δrow, Δcol)), which is the
stage's atan2(Δy, Δx) under the default pixel transform; `PixelTransform.angle_to_stage` converts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EdgeFit:
    """One straight edge: direction (deg, mod 180), length and straightness in pixels."""

    angle_deg: float
    length_px: float
    residual_px: float


@dataclass(frozen=True)
class AxisEstimate:
    """The crystal-axis angle modulo the period, its standard error, and the edges it rests on."""

    orientation_deg: float
    error_deg: float
    edges: tuple[EdgeFit, ...]

    @property
    def confidence(self) -> float:
        """In [0, 1]: 0.5 at a 1° standard error, towards 1 as the edges get longer and straighter."""
        return 1.0 / (1.0 + self.error_deg**2)


# Contour points scatter by at least this much across an edge (noise, pixel sampling).
MIN_EDGE_SCATTER_PX = 0.05


def edge_error_deg(edge: EdgeFit) -> float:
    """Standard error of one edge's direction: σ·√12 / L^1.5 for points scattered by σ along length L."""
    sigma = max(edge.residual_px, MIN_EDGE_SCATTER_PX)
    return math.degrees(sigma * math.sqrt(12.0) / edge.length_px**1.5)


def straight_edges(
    profile: np.ndarray,
    level: float,
    *,
    min_length_px: float = 6.0,
    max_residual_px: float = 0.1,
    tolerance_px: float = 0.7,
    min_corner_deg: float = 20.0,
    max_sagitta_px: float = 0.12,
    keep: Callable[[np.ndarray], bool] | None = None,
) -> list[EdgeFit]:
    """Straight edges on the ``level`` iso-contours of ``profile`` (a window around one region).

    The contour is cut into runs by a polygon approximation; consecutive runs that turn by less than
    ``min_corner_deg`` are joined into one chain, since a cleaved edge goes straight from corner to
    corner (and crystallographic corners turn by 30° or more). A chain is an edge only if it is
    still straight as a whole: a torn edge is a curve whose pieces turn gently, so as one chain it
    bends. A piece of a large smooth curve (a round flake) can be straight to within noise over ten
    pixels, but it bows: a parabola through it sags by more than ``max_sagitta_px``.
    ``keep(run)`` may veto a chain (e.g. one that belongs to a neighbouring object).
    """
    from skimage.measure import find_contours

    edges: list[EdgeFit] = []
    for contour in find_contours(profile, level):
        if len(contour) < min_length_px:
            continue
        for chain in _chains(contour, polygon_vertices(contour, tolerance_px), min_corner_deg):
            length = float(np.hypot(*(chain[-1] - chain[0])))
            if length < min_length_px or (keep is not None and not keep(chain)):
                continue
            trim = max(1, round(0.15 * len(chain)))  # corners round off over a pixel or two
            core = chain[trim:-trim] if len(chain) > 2 * trim + 2 else chain
            centre = core.mean(axis=0)
            _, sv, vt = np.linalg.svd(core - centre, full_matrices=False)
            residual = float(sv[1] / math.sqrt(len(core))) if len(sv) > 1 else 0.0
            if residual > max_residual_px or _sagitta_px(core - centre, vt) > max_sagitta_px:
                continue
            d_row, d_col = vt[0]
            edges.append(EdgeFit(math.degrees(math.atan2(d_row, d_col)) % 180.0, length, residual))
    return edges


def polygon_vertices(contour: np.ndarray, tolerance_px: float) -> list[int]:
    """Indices along ``contour`` of its Douglas-Peucker polygon's vertices, first and last included.

    The same vertices as ``skimage.measure.approximate_polygon`` (same distances, same order of splits; a test
    compares the two), as indices rather than points. Importing that one function costs 0.7 s per process
    (it pulls in ``scipy.signal``), more than the contours of a whole tile take.
    """
    if tolerance_px <= 0:
        return list(range(len(contour)))
    keep = np.zeros(len(contour), bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(contour) - 1)]
    while stack:
        start, end = stack.pop()
        (r0, c0), (r1, c1) = contour[start], contour[end]
        dr, dc = r1 - r0, c1 - c0
        angle = -np.arctan2(dr, dc)
        offset = c0 * np.sin(angle) + r0 * np.cos(angle)
        inner = contour[start + 1 : end]
        dr0, dc0 = inner[:, 0] - r0, inner[:, 1] - c0
        dr1, dc1 = inner[:, 0] - r1, inner[:, 1] - c1
        # Beside the segment: distance to its line; beyond either end: distance to the nearer end point.
        beside = ((dr0 * dr + dc0 * dc) > 0) & ((-dr1 * dr - dc1 * dc) > 0)
        dists = np.where(
            beside,
            np.abs(inner[:, 0] * np.cos(angle) + inner[:, 1] * np.sin(angle) - offset),
            np.minimum(np.sqrt(dc0**2 + dr0**2), np.sqrt(dc1**2 + dr1**2)),
        )
        if dists.size and np.any(dists > tolerance_px):
            split = start + int(np.argmax(dists)) + 1
            stack += [(split, end), (start, split)]
            keep[split] = True
    return [int(i) for i in np.flatnonzero(keep)]


def _sagitta_px(points: np.ndarray, axes: np.ndarray) -> float:
    """How far a parabola fitted across a run bows away from its chord, in pixels."""
    along = points @ axes[0]
    across = points @ axes[1]
    if len(points) < 5:
        return 0.0
    curvature = np.polyfit(along, across, 2)[0]
    half = (along.max() - along.min()) / 2
    return float(abs(curvature) * half**2)


def _chains(contour: np.ndarray, cuts: list[int], min_corner_deg: float) -> list[np.ndarray]:
    """Split ``contour`` at the vertices ``cuts`` where it turns by at least ``min_corner_deg``."""
    runs = [contour[a : b + 1] for a, b in itertools.pairwise(cuts)]
    if not runs:
        return []

    def direction(run: np.ndarray) -> float:
        d_row, d_col = run[-1] - run[0]
        return math.degrees(math.atan2(d_row, d_col)) % 180.0

    def turn(a: np.ndarray, b: np.ndarray) -> float:
        diff = abs(direction(a) - direction(b)) % 180.0
        return min(diff, 180.0 - diff)

    closed = bool(np.allclose(contour[0], contour[-1])) and len(runs) > 1
    if closed:  # start at a real corner so that no chain is split at the contour's seam
        corners = [i for i in range(len(runs)) if turn(runs[i - 1], runs[i]) >= min_corner_deg]
        if not corners:
            return []  # a smooth closed curve (a round flake): no straight edge
        start = corners[0]
        runs = runs[start:] + runs[:start]
    chains: list[list[np.ndarray]] = [[runs[0]]]
    for run in runs[1:]:
        if turn(chains[-1][-1], run) < min_corner_deg:
            chains[-1].append(run)
        else:
            chains.append([run])
    return [np.vstack([c[0], *(r[1:] for r in c[1:])]) for c in chains]


def fold(edges: list[EdgeFit], period_deg: float, tolerance_deg: float = 2.5) -> AxisEstimate | None:
    """Combine edge directions modulo ``period_deg`` into one orientation, or None without edges.

    Crystallographic edges agree with each other modulo the period; torn edges point anywhere. So
    the direction with the most support (edge length³) within ``tolerance_deg`` wins (a mode, not a mean),
    and the orientation is the length³-weighted circular mean of the edges that agree with it; its
    standard error combines theirs.
    """
    if not edges:
        return None
    angles = np.array([e.angle_deg for e in edges])
    lengths = np.array([e.length_px for e in edges])

    def wrapped(theta: float) -> np.ndarray:
        return (angles - theta + period_deg / 2) % period_deg - period_deg / 2

    # Support in inverse variance (∝ L³): one long clean edge outweighs two short ones that agree by chance.
    support = [float(np.sum(lengths[np.abs(wrapped(a)) <= tolerance_deg] ** 3)) for a in angles]
    theta = float(angles[int(np.argmax(support))])
    for _ in range(2):  # re-centre the cluster on its own mean
        keep = np.abs(wrapped(theta)) <= tolerance_deg
        weights = lengths[keep] ** 3
        phase = np.exp(2j * math.pi * angles[keep] / period_deg)
        mean = np.sum(weights * phase) / np.sum(weights)
        theta = (math.degrees(np.angle(mean)) * period_deg / 360.0) % period_deg
    keep = np.abs(wrapped(theta)) <= tolerance_deg
    kept = tuple(e for e, k in zip(edges, keep, strict=True) if k)
    error = 1.0 / math.sqrt(sum(edge_error_deg(e) ** -2 for e in kept))
    return AxisEstimate(float(theta), error, kept)


def region_orientation(
    contrast: np.ndarray,
    region: np.ndarray,
    plateau: np.ndarray,
    period_deg: float,
    *,
    min_length_px: float = 6.0,
    max_residual_px: float = 0.1,
) -> AxisEstimate | None:
    """Crystal axis of one region.

    Args:
        contrast: (rows, cols, channels) contrast of a window around the region.
        region: boolean mask of the region in that window.
        plateau: the region's plateau contrast (channels,).
        period_deg: the material's edge symmetry.

    The profile is the contrast projected on the plateau (0 substrate, 1 plateau); its half-level
    contour runs along the middle of each blurred edge. Only contour runs on the region's own border
    count, so neighbouring objects in the window do not add edges.
    """
    import cv2

    norm2 = float(np.dot(plateau, plateau))
    if norm2 <= 0:
        return None
    smooth = cv2.GaussianBlur(contrast.astype(np.float32), (0, 0), 0.7).reshape(contrast.shape)
    # 0 on substrate, 1 on the plateau, linear across a blurred edge (so its half level is unbiased).
    profile = (smooth @ plateau.astype(np.float32)) / norm2
    padded = np.pad(profile, 1)  # closed contours even where the region touches the window
    near = cv2.dilate(np.pad(region, 1).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    edges = straight_edges(
        padded, 0.5, min_length_px=min_length_px, max_residual_px=max_residual_px, keep=lambda run: _on(near, run)
    )
    return fold(edges, period_deg)


def _on(mask: np.ndarray, run: np.ndarray, share: float = 0.8) -> bool:
    """Whether more than ``share`` of a contour run's points lie on ``mask``."""
    r = np.clip(np.rint(run[:, 0]).astype(int), 0, mask.shape[0] - 1)
    c = np.clip(np.rint(run[:, 1]).astype(int), 0, mask.shape[1] - 1)
    return bool(mask[r, c].mean() > share)
