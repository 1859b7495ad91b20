"""A candidate's region in its image, recovered from its recorded contrast, for outlines and label images.

Candidates carry their position, area and optical contrast C = I / I_substrate − 1 per channel, but not
their pixels. Around the candidate, the substrate level is the commonest brightness of the window; the flake
is the connected region at the window's centre whose (lightly smoothed) contrast lies within a tolerance
of the recorded one. The result is trusted only when its area agrees with the candidate's within a
factor of two; otherwise there is no region (the callers fall back, and say so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from flakehunter.candidates import Candidate
from flakehunter.report.crops import cut

#: Accepted ratio between the recovered area and the candidate's own, either way.
AREA_RATIO = 2.0


@dataclass(frozen=True)
class Region:
    """A candidate's pixels inside a window of its image: ``mask`` (side x side, bool) whose top-left
    pixel is image pixel (``row0``, ``col0``); ``bare`` marks the window's pixels that are clearly bare
    substrate (contrast near zero, away from the flake)."""

    mask: np.ndarray
    row0: int
    col0: int
    bare: np.ndarray

    def outline_px(self, tolerance_px: float = 0.7) -> list[tuple[float, float]]:
        """The outer boundary as image (row, col) vertices (pixel edges, not centres), simplified."""
        import shapely
        from shapely.geometry import Polygon

        contours, _ = cv2.findContours(self.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contour = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(float)
        # OpenCV traces boundary pixel centres; half a pixel outwards encloses those pixels whole.
        if len(contour) >= 3:
            shape = shapely.make_valid(Polygon(contour)).buffer(0.5, join_style="mitre")
        else:
            shape = _pixel_box(contour)
        if shape.is_empty:
            shape = _pixel_box(contour)
        shape = shape.simplify(tolerance_px)
        if shape.geom_type != "Polygon":
            shape = max(shape.geoms, key=lambda g: g.area)
        return [(self.row0 + float(y), self.col0 + float(x)) for x, y in list(shape.exterior.coords)[:-1]]


def candidate_region(image: np.ndarray, candidate: Candidate, pixel_size_um: float | None) -> Region | None:
    """The candidate's region in ``image`` (its own image), or None where it cannot be recovered."""
    contrast = [v for v in (candidate.contrast_r, candidate.contrast_g, candidate.contrast_b) if v is not None]
    if not contrast or not pixel_size_um or candidate.area_um2 <= 0:
        return None
    area_px = candidate.area_um2 / pixel_size_um**2
    side = int(min(1024, max(32, round(4 * np.sqrt(area_px)))))
    window = cut(image, candidate.row, candidate.col, side).astype(np.float32)
    if window.ndim == 2:
        window = window[:, :, None]
        contrast = [float(np.mean(contrast))]
    if window.shape[2] != len(contrast):
        return None
    small = area_px < 150  # a few dozen pixels: smoothing and opening would eat the flake
    if not small:
        window = np.asarray(cv2.blur(window, (3, 3)), np.float32).reshape(side, side, -1)
    valid = cut(np.ones(image.shape[:2], bool), candidate.row, candidate.col, side)
    substrate = _substrate(window, valid)
    if substrate is None:
        return None
    if np.any(substrate <= 0):
        return None
    target = np.asarray(contrast, np.float32)
    pixel_contrast = window / substrate - 1
    distance = np.linalg.norm(pixel_contrast - target, axis=2)
    tolerance = float(np.clip(0.3 * np.linalg.norm(target), 0.04, 0.08))
    near = ((distance <= tolerance) & valid).astype(np.uint8)
    if not small:
        near = cv2.morphologyEx(near, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    count, labels = cv2.connectedComponents(near, connectivity=8)
    if count < 2:
        return None
    label = _label_near_centre(labels, count, side, area_px)
    if label == 0:
        return None
    mask = labels == label
    mask = _fill_holes(mask)
    ratio = mask.sum() / area_px
    if not (1 / AREA_RATIO <= ratio <= AREA_RATIO):
        return None
    r0, c0 = round(candidate.row) - side // 2, round(candidate.col) - side // 2
    away = ~cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    bare = (np.linalg.norm(pixel_contrast, axis=2) <= min(tolerance, 0.04)) & away & valid
    return Region(mask, r0, c0, bare)


def _pixel_box(points: np.ndarray) -> Any:
    """A region too thin for a polygon (a line of pixels): the box around its pixels."""
    from shapely.geometry import box

    (c0, r0), (c1, r1) = points.min(axis=0), points.max(axis=0)
    return box(c0 - 0.5, r0 - 0.5, c1 + 0.5, r1 + 0.5)


def _substrate(window: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """The bare-substrate level of a window: the commonest brightness (the substrate covers most of a
    window four flake diameters wide, whatever thick flakes or dust share it), averaged per channel."""
    pixels = window[valid]
    if len(pixels) < 50:
        return None
    level = pixels.mean(axis=1)
    lo, hi = np.percentile(level, [1, 99])
    if hi <= lo:
        return np.asarray(np.median(pixels, axis=0))
    counts, edges = np.histogram(level, bins=48, range=(lo, hi))
    peak = int(np.argmax(counts))
    keep = (level >= edges[max(peak - 1, 0)]) & (level <= edges[min(peak + 2, len(edges) - 1)])
    return np.asarray(np.median(pixels[keep], axis=0))


def _label_near_centre(labels: np.ndarray, count: int, side: int, area_px: float) -> int:
    """The component at the window centre; where the centre is off the flake (a terrace around a thicker
    body has its centroid on the body), the component within half a diameter of the centre whose area is
    closest to the candidate's. 0 when none comes that near."""
    c = side // 2
    if labels[c, c]:
        return int(labels[c, c])
    rows, cols = np.ogrid[:side, :side]
    near = (rows - c) ** 2 + (cols - c) ** 2 <= max(9.0, area_px / np.pi)
    found = np.unique(labels[near & (labels > 0)])
    if not found.size:
        return 0
    sizes = np.bincount(labels.ravel(), minlength=count)
    return int(min(found, key=lambda n: abs(np.log(sizes[n] / area_px))))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The region with its enclosed holes filled (a speck of dust on a flake is still the flake)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood == 0
    filled: np.ndarray = (padded.astype(bool) | holes)[1:-1, 1:-1]
    return filled
