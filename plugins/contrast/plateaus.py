"""Plateaus without a model: uniform regions whose contrast differs from the substrate.

A thin flake images as a plateau: a region of uniform contrast C = I/background − 1, bounded by a step
that is as sharp as the optics allow. Nothing here knows which contrast a layer count has; that is the
ladder's job (`ladder`). Per image:

1. the contrast image is smoothed (Gaussian, ``smooth_px``) and its noise measured on the substrate, per
   channel, so that every threshold below is in units of this image's own noise (8-bit JPEG and a
   12-bit camera alike);
2. a pixel is *off the substrate* where its whitened contrast exceeds ``min_z``, and *flat* where the
   whitened gradient stays below ``flat_factor`` times the substrate's own gradient noise, or below
   ``flat_ratio`` of its contrast (bright thick flakes carry more texture than the substrate);
3. connected flat, off-substrate pixels are plateau seeds; a seed whose pixels spread over more than one
   level (two plateaus joined through a soft step) is split along its main colour axis;
4. each seed grows back to the half-height contour of its step (so areas and crystal-axis edges are those
   of the flake, not of its interior), and is described: median contrast, spread, area, bounding box,
   interior mask, step sharpness, shape (elongation, width, solidity) and what surrounds it.

`reject_reason` then drops what is not a flake by shape and texture alone: scratches and tape lines
(long and narrow), rims of thick flakes (narrow bands along a stronger region), textured residue.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

#: Sobel's 3x3 derivative kernel answers 8 to a unit slope.
_SOBEL_UNIT = 8.0
#: A plateau's contrast is measured this far inside its edge (beyond the blur of a focused edge).
CORE_DEPTH_PX = 3.0
#: Medians of a region's pixels use at most this many of them.
MEDIAN_SAMPLE = 400
#: The smallest noise assumed (contrast units): a noiseless synthetic image must not make every speck a plateau.
MIN_NOISE = 0.002


@dataclass(frozen=True)
class PlateauParams:
    """Segmentation thresholds, in units of the image's own noise unless the name says otherwise."""

    smooth_px: float = 1.0
    min_z: float = 6.0  # whitened |contrast| (substrate noise σ) to be off the substrate
    flat_factor: float = 3.5  # flat: gradient below this many times the substrate's median gradient
    flat_ratio: float = 0.08  # ... or below this fraction of the pixel's own whitened contrast per px
    min_seed_px: int = 3
    split_z: float = 4.0  # a seed whose two colour clusters lie this far apart (in their spread) is split
    grow_px: int = 3  # how far a seed grows back towards its edge


@dataclass
class Plateau:
    """One uniform region in one image.

    Contrast values are per channel (R, G, B or mono), C = I/background − 1. ``mask`` is the grown region
    inside ``bbox`` (row0, col0, row1, col1, exclusive ends); ``interior`` the seed (its flat core).
    ``surround`` is the median contrast of a ring just outside the region; ``surround_stronger`` the share
    of that ring whose contrast is further from the substrate than the plateau's (a rim along a thicker
    region has most of its ring there). ``sharpness`` is the steepest rise of its step, in step heights
    per pixel (median along the rim); ``step_z`` that step's height in noise units.
    """

    contrast: np.ndarray
    spread: np.ndarray
    area_px: int
    interior_px: int
    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    interior: np.ndarray
    centroid: tuple[float, float]
    sharpness: float
    step_z: float
    z: float
    elongation: float
    width_px: float
    solidity: float
    surround: np.ndarray
    surround_stronger: float
    texture: float
    touches_border: bool
    saturated: float = 0.0  # share of the interior clipped at the camera's full scale
    uncertainty: float = 0.0  # standard error of ``contrast`` (per channel, RMS), from its pixels' spread
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlateauImage:
    """The plateaus of one image and what was measured on the image as a whole."""

    plateaus: list[Plateau]
    noise: np.ndarray  # per-channel σ of the smoothed contrast on the substrate
    gradient_noise: float  # median whitened gradient on the substrate, per px
    shape: tuple[int, int]


def robust_noise(values: np.ndarray, start: float = 0.08, rounds: int = 3) -> np.ndarray:
    """Per-channel σ of the substrate in a (..., channels) sample of contrasts near zero.

    Starts from the pixels within ``start`` of zero (substrate and faint things) and narrows the window to
    4σ twice, so flakes (far from zero) do not inflate it.
    """
    channels = values.shape[-1]
    absolute = np.ascontiguousarray(np.abs(values.reshape(-1, channels)).T)  # (channels, N)
    window = np.full((channels, 1), start, np.float32)
    sigma = window[:, 0] / 4
    for _ in range(rounds):
        near = np.all(absolute <= window, axis=0)
        if near.sum() < 50:
            break
        sigma = 1.4826 * np.median(absolute[:, near], axis=1) + 1e-5
        window = 4.0 * sigma[:, None]
    return np.maximum(np.asarray(sigma, np.float32), MIN_NOISE)


def find_plateaus(
    contrast: np.ndarray, params: PlateauParams = PlateauParams(), *, min_area_px: float = 12.0,
    saturated: np.ndarray | None = None, max_contrast: float | None = None, witnesses: int = 8,
) -> PlateauImage:
    """Segment the plateaus of one contrast image (rows, cols, channels), float32.

    ``saturated`` marks clipped pixels (`saturation_mask`): a plateau's share of them is recorded, since a
    clipped flake's contrast says nothing about its thickness. With ``max_contrast``, seeds whose level is
    beyond it (thick flakes, for a caller that knows thin ones cannot be that strong) are described only for
    the ``witnesses`` largest of them (strong steps judge focus); the rest are left out, which saves time
    on a tile crowded with thick flakes.
    """
    rows, cols, channels = contrast.shape
    ksize = 2 * math.ceil(2.0 * params.smooth_px) + 1  # ±2σ is plenty, and half the cost of OpenCV's default
    smooth = cv2.GaussianBlur(contrast, (ksize, ksize), params.smooth_px).reshape(contrast.shape)
    step = max(1, round(math.sqrt(rows * cols / 30_000)))  # a 30k-pixel sample measures the noise well
    noise = robust_noise(smooth[::step, ::step])
    # Whitened magnitude z² = Σ_c (S_c/σ_c)² per pixel (cv2.transform sums the channels with weights 1/σ_c²).
    inv_var = (1.0 / noise.astype(np.float64) ** 2).reshape(1, channels)
    src = smooth if channels > 1 else smooth.reshape(rows, cols)
    z2 = (cv2.transform(cv2.multiply(src, src), inv_var).reshape(rows, cols) if channels > 1
          else cv2.multiply(src, src, scale=float(inv_var[0, 0])))
    gradient_noise = _gradient_noise(src, z2, inv_var, step, channels)
    off = cv2.compare(z2, float(params.min_z**2), cv2.CMP_GE)
    # Gradients only where something is (most of a tile is bare substrate): each blob of off-substrate pixels
    # big enough for a flake (its half-height contour lies inside the 6 σ one, give or take noise).
    _n_off, off_comp, off_stats, _ = cv2.connectedComponentsWithStats(off, connectivity=8)
    candidates: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
    for i in np.flatnonzero(off_stats[1:, cv2.CC_STAT_AREA] >= 0.9 * min_area_px) + 1:
        candidates += _blob_seeds(i, _box(off_stats, i), off_comp, src, z2, inv_var, gradient_noise, params,
                                  min_area_px)
    if max_contrast is not None:
        candidates = _thin_first(candidates, smooth, max_contrast, witnesses)
    plateaus: list[Plateau] = []
    for mask, bbox in candidates:
        for seed, box in _split_seed(mask, bbox, smooth, noise, params):
            plateau = _describe(seed, box, contrast, smooth, noise, params, min_area_px)
            if plateau is not None:
                if saturated is not None:
                    sr0, sc0, sr1, sc1 = box
                    plateau.saturated = float(saturated[sr0:sr1, sc0:sc1][seed].mean())
                plateaus.append(plateau)
    plateaus = merge_pieces(plateaus, noise, (rows, cols))
    return PlateauImage(plateaus, noise, gradient_noise, (rows, cols))


def _padded(mask: np.ndarray) -> np.ndarray:
    """A uint8 mask with a one-pixel border of zeros (``np.pad(mask, 1)``, without its overhead)."""
    u8 = mask.view(np.uint8) if mask.dtype == bool else mask
    return cv2.copyMakeBorder(u8, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)


def deep_pixels(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The pixels a plateau's contrast is measured on (at least CORE_DEPTH_PX inside its edge, or its ridge when
    narrower: the blurred rim pulls a small flake's median towards the substrate), and the deepest one's depth."""
    dist = cv2.distanceTransform(_padded(mask), cv2.DIST_L2, 3)[1:-1, 1:-1]
    return dist >= min(CORE_DEPTH_PX, float(dist.max()) - 0.5), float(dist.max())


@functools.cache
def _disc(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _median(values: np.ndarray) -> np.ndarray:
    """Per-channel median of (N, channels) values, from at most ``MEDIAN_SAMPLE`` of them (evenly spaced):
    a thick flake's thousands of pixels say no more about its level than a few hundred."""
    if len(values) > MEDIAN_SAMPLE:
        values = values[:: len(values) // MEDIAN_SAMPLE]
    return median0(values)


def median0(values: np.ndarray) -> Any:
    """``np.median(values, axis=0)``, bit for bit, from a sort: four times faster on the few hundred finite
    values of one region (no partition, no NaN check), which matters at hundreds of regions per tile."""
    ordered = np.sort(values, axis=0)
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


def _shape(mask: np.ndarray, area: int) -> tuple[float, float]:
    """Elongation (√ of the second-moment eigenvalue ratio) and solidity (area over convex hull) of a mask."""
    m = cv2.moments(mask, binaryImage=True)
    mu20, mu02, mu11 = m["mu20"] / area, m["mu02"] / area, m["mu11"] / area
    root = math.sqrt(max((mu20 - mu02) ** 2 + 4 * mu11**2, 0.0))
    l1, l2 = (mu20 + mu02 + root) / 2, max((mu20 + mu02 - root) / 2, 1e-6)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull_area = cv2.contourArea(cv2.convexHull(np.vstack(contours))) if contours else 0.0
    return math.sqrt(l1 / l2), min(1.0, area / max(hull_area, 1.0))


def merge_pieces(plateaus: list[Plateau], noise: np.ndarray, shape: tuple[int, int], gap_px: int = 1) -> list[Plateau]:
    """Plateaus that touch and share a level are one region cut in pieces (noise broke its flat seed, or a
    small flake's peak lies beside its flat part): join them, so that shape rules see the whole (a scratch
    is long only as a whole)."""
    floor = float(np.sqrt(np.mean(noise**2)))

    def same_level(p: Plateau, q: Plateau) -> bool:
        tolerance = 3.0 * math.hypot(p.uncertainty, q.uncertainty, floor) + 0.05 * float(
            min(np.linalg.norm(p.contrast), np.linalg.norm(q.contrast)))
        return bool(np.linalg.norm(p.contrast - q.contrast) <= tolerance)

    groups = touching_groups(plateaus, lambda i, j: same_level(plateaus[i], plateaus[j]), gap_px)
    return [plateaus[g[0]] if len(g) == 1 else _union([plateaus[i] for i in g], shape) for g in groups]


def touching_groups(plateaus: Sequence[Plateau], alike: Callable[[int, int], bool], gap_px: int) -> list[list[int]]:
    """Indices of the plateaus in groups: i and j join when ``alike(i, j)`` holds and their masks come within
    ``gap_px``, and groups joined through a third are one (union-find). Groups in order of their first member."""
    parent = list(range(len(plateaus)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, p in enumerate(plateaus):
        for j in range(i):
            q = plateaus[j]
            if boxes_near(p.bbox, q.bbox, gap_px) and alike(i, j) and masks_touch(p, q, gap_px):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(plateaus)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def boxes_near(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    """Whether two (r0, c0, r1, c1) boxes come within ``gap`` pixels of each other."""
    return a[0] <= b[2] + gap and b[0] <= a[2] + gap and a[1] <= b[3] + gap and b[1] <= a[3] + gap


def masks_touch(p: Plateau, q: Plateau, gap: int) -> bool:
    """Whether two plateaus' regions come within ``gap`` pixels of each other."""
    r0, c0 = min(p.bbox[0], q.bbox[0]) - gap, min(p.bbox[1], q.bbox[1]) - gap
    r1, c1 = max(p.bbox[2], q.bbox[2]) + gap, max(p.bbox[3], q.bbox[3]) + gap
    a = np.zeros((r1 - r0, c1 - c0), np.uint8)
    b = np.zeros_like(a)
    a[p.bbox[0] - r0 : p.bbox[2] - r0, p.bbox[1] - c0 : p.bbox[3] - c0] = p.mask
    b[q.bbox[0] - r0 : q.bbox[2] - r0, q.bbox[1] - c0 : q.bbox[3] - c0] = q.mask
    return bool(np.any(cv2.dilate(a, np.ones((2 * gap + 1, 2 * gap + 1), np.uint8)) & b))


def _union(pieces: list[Plateau], shape: tuple[int, int]) -> Plateau:
    """One plateau from touching pieces: masks united, levels weighted by area, shape measured anew."""
    r0, c0 = min(p.bbox[0] for p in pieces), min(p.bbox[1] for p in pieces)
    r1, c1 = max(p.bbox[2] for p in pieces), max(p.bbox[3] for p in pieces)
    mask = np.zeros((r1 - r0, c1 - c0), np.uint8)
    interior = np.zeros_like(mask, dtype=bool)
    for p in pieces:
        window = (slice(p.bbox[0] - r0, p.bbox[2] - r0), slice(p.bbox[1] - c0, p.bbox[3] - c0))
        mask[window] |= p.mask.view(np.uint8)
        interior[window] |= p.interior
    area = int(mask.sum())
    w = np.array([p.area_px for p in pieces], float)
    w /= w.sum()

    def mean(values: list[Any]) -> Any:
        return sum(wi * np.asarray(v, float) for wi, v in zip(w, values, strict=True))

    rr, cc = np.nonzero(mask)
    elongation, solidity = _shape(mask, area)
    dist = cv2.distanceTransform(_padded(mask), cv2.DIST_L2, 3)
    return Plateau(
        contrast=mean([p.contrast for p in pieces]),
        spread=np.max([p.spread for p in pieces], axis=0),
        area_px=area,
        interior_px=sum(p.interior_px for p in pieces),
        bbox=(r0, c0, r1, c1),
        mask=mask > 0,
        interior=interior,
        centroid=(float(rr.mean()) + r0, float(cc.mean()) + c0),
        sharpness=float(mean([p.sharpness for p in pieces])),
        step_z=float(mean([p.step_z for p in pieces])),
        z=float(mean([p.z for p in pieces])),
        elongation=elongation,
        width_px=2.0 * float(dist.max()),
        solidity=solidity,
        surround=mean([p.surround for p in pieces]),
        surround_stronger=float(mean([p.surround_stronger for p in pieces])),
        texture=max(p.texture for p in pieces),
        touches_border=bool(r0 == 0 or c0 == 0 or r1 == shape[0] or c1 == shape[1]),
        saturated=float(mean([p.saturated for p in pieces])),
        uncertainty=float(1.0 / math.sqrt(sum(1.0 / max(p.uncertainty, 1e-6) ** 2 for p in pieces))),
    )


def _box(stats: np.ndarray, i: int) -> tuple[int, int, int, int]:
    c0, r0 = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
    return r0, c0, r0 + int(stats[i, cv2.CC_STAT_HEIGHT]), c0 + int(stats[i, cv2.CC_STAT_WIDTH])


def _thin_first(
    candidates: list[tuple[np.ndarray, tuple[int, int, int, int]]], smooth: np.ndarray, max_contrast: float,
    witnesses: int,
) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """The seeds within ``max_contrast``, and the ``witnesses`` largest of those beyond it."""
    within, beyond = [], []
    for mask, (r0, c0, r1, c1) in candidates:
        level = smooth[r0:r1, c0:c1][mask].mean(axis=0)
        (within if float(np.linalg.norm(level)) <= max_contrast else beyond).append((mask, (r0, c0, r1, c1)))
    beyond.sort(key=lambda item: -int(item[0].sum()))
    return within + beyond[:witnesses]


def _gradient_noise(src: np.ndarray, z2: np.ndarray, inv_var: np.ndarray, step: int, channels: int) -> float:
    """Median whitened gradient (per px) of the substrate, from central differences on every ``step``-th row."""
    rows = np.arange(1, src.shape[0] - 1, 2 * step)
    cols = np.arange(1, src.shape[1] - 1, 2)
    d_col = 0.5 * (src[rows][:, cols + 1] - src[rows][:, cols - 1])
    d_row = 0.5 * (src[rows + 1][:, cols] - src[rows - 1][:, cols])
    g2 = (d_col**2 + d_row**2).reshape(len(rows), len(cols), channels) @ inv_var[0].astype(np.float32)
    substrate = z2[rows][:, cols] < 9.0 * channels
    return float(np.sqrt(np.median(g2[substrate]))) if substrate.any() else 1.0


def _blob_seeds(
    label: int, box: tuple[int, int, int, int], off_comp: np.ndarray, src: np.ndarray, z2: np.ndarray,
    inv_var: np.ndarray, gradient_noise: float, params: PlateauParams, min_area_px: float,
) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Seeds (mask, bbox) in one off-substrate blob: its flat parts, and peaks where it never goes flat.

    Flat: the whitened gradient below ``flat_factor`` times the substrate's own, or below ``flat_ratio`` of
    the pixel's whitened contrast per px (bright flakes carry texture). 8-connected: the flat top of a small
    blurred flake is a ring of pixels around its exact centre. A small flake's blurred top never goes flat:
    where part of the blob big enough for a flake lies beyond the reach of the flat seeds (a small flake may
    touch a big one), its pixels within 10 % of their peak contrast are a seed too.
    """
    rows, cols = z2.shape
    r0, c0, r1, c1 = box
    wr0, wc0, wr1, wc1 = max(r0 - 1, 0), max(c0 - 1, 0), min(r1 + 1, rows), min(c1 + 1, cols)
    blob_u8 = cv2.compare(off_comp[wr0:wr1, wc0:wc1], float(label), cv2.CMP_EQ)  # 255 on the blob
    win = src[wr0:wr1, wc0:wc1]
    zw = z2[wr0:wr1, wc0:wc1]
    gx = cv2.Sobel(win, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    gy = cv2.Sobel(win, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    g2 = cv2.multiply(gx, gx)
    cv2.accumulateSquare(gy, g2)
    grad2 = (cv2.transform(g2, inv_var) if g2.ndim == 3 else cv2.multiply(g2, float(inv_var[0, 0])))
    grad2 = grad2.reshape(blob_u8.shape)
    limit = cv2.max(cv2.multiply(zw, params.flat_ratio**2), float((params.flat_factor * gradient_noise) ** 2))
    seeds = cv2.bitwise_and(cv2.compare(grad2, limit, cv2.CMP_LT), blob_u8)
    _count, comp, stats, _ = cv2.connectedComponentsWithStats(seeds, connectivity=8)
    out = []
    reached = np.zeros(blob_u8.shape, np.uint8)
    for i in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= max(params.min_seed_px, 1)) + 1:
        sr0, sc0, sr1, sc1 = _box(stats, i)
        mask = comp[sr0:sr1, sc0:sc1] == i
        reached[sr0:sr1, sc0:sc1] |= mask.view(np.uint8)
        out.append((mask, (wr0 + sr0, wc0 + sc0, wr0 + sr1, wc0 + sc1)))
    left = blob_u8
    if out:
        left = cv2.bitwise_and(blob_u8, cv2.compare(cv2.dilate(reached, _disc(2 * params.grow_px + 3)), 0, cv2.CMP_EQ))
        if cv2.countNonZero(left) < 0.7 * min_area_px:
            return out
    _n_left, left_comp, left_stats, _ = cv2.connectedComponentsWithStats(left, connectivity=8)
    for j in np.flatnonzero(left_stats[1:, cv2.CC_STAT_AREA] >= 0.7 * min_area_px) + 1:
        lr0, lc0, lr1, lc1 = _box(left_stats, j)
        local = np.where(left_comp[lr0:lr1, lc0:lc1] == j, zw[lr0:lr1, lc0:lc1], 0.0)
        pr, pc = np.unravel_index(int(np.argmax(local)), local.shape)
        peak = float(local[pr, pc])
        if peak < (2.0 * params.min_z) ** 2:
            continue  # a blob that barely leaves the substrate: noise or shading, not a flake's top
        ar, ac = wr0 + lr0 + pr, wc0 + lc0 + pc
        # A true peak, not the foot of a stronger neighbour (the rim left around a seeded flake rises into it).
        if z2[max(ar - 2, 0) : ar + 3, max(ac - 2, 0) : ac + 3].max() > 1.05 * peak:
            continue
        out.append((local >= 0.81 * peak, (wr0 + lr0, wc0 + lc0, wr0 + lr1, wc0 + lc1)))
    return out


def _split_seed(
    mask: np.ndarray, bbox: tuple[int, int, int, int], smooth: np.ndarray, noise: np.ndarray, params: PlateauParams,
) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """The seed (``mask`` within ``bbox``) as (mask, bbox), or its parts where it holds two levels (split
    along the main colour axis)."""
    r0, c0, r1, c1 = bbox
    all_values = smooth[r0:r1, c0:c1][mask] / noise
    values = all_values[:: max(1, len(all_values) // MEDIAN_SAMPLE)]  # the split is decided on a sample
    if len(values) < 4 * params.min_seed_px:
        return [(mask, bbox)]
    centre = median0(values)
    dev = values - centre
    spread = float(np.sqrt(median0(np.sum(dev**2, axis=1))))
    if spread < params.split_z / 2:
        return [(mask, bbox)]
    # Two-means along the principal axis of the values.
    _, _, vt = np.linalg.svd(dev - dev.mean(axis=0), full_matrices=False)
    t = dev @ vt[0]
    cut = float(median0(t))
    for _ in range(8):
        lo, hi = t[t <= cut], t[t > cut]
        if len(lo) == 0 or len(hi) == 0:
            return [(mask, bbox)]
        new = 0.5 * (float(median0(lo)) + float(median0(hi)))
        if abs(new - cut) < 1e-3:
            break
        cut = new
    lo, hi = t[t <= cut], t[t > cut]
    gap = float(median0(hi) - median0(lo))
    within = 1.4826 * float(median0(np.abs(np.r_[lo - median0(lo), hi - median0(hi)]))) + 1e-3
    if gap < params.split_z * within or gap < params.split_z:
        return [(mask, bbox)]
    parts: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
    side = np.zeros(mask.shape, np.int8)
    side[mask] = np.where((all_values - centre) @ vt[0] > cut, 2, 1)
    for value in (1, 2):
        _n, sub, sub_stats, _ = cv2.connectedComponentsWithStats((side == value).astype(np.uint8), connectivity=4)
        for j in np.flatnonzero(sub_stats[1:, cv2.CC_STAT_AREA] >= params.min_seed_px) + 1:
            sc0, sr0 = int(sub_stats[j, cv2.CC_STAT_LEFT]), int(sub_stats[j, cv2.CC_STAT_TOP])
            sc1, sr1 = sc0 + int(sub_stats[j, cv2.CC_STAT_WIDTH]), sr0 + int(sub_stats[j, cv2.CC_STAT_HEIGHT])
            parts.append((sub[sr0:sr1, sc0:sc1] == j, (r0 + sr0, c0 + sc0, r0 + sr1, c0 + sc1)))
    return parts


def _describe(
    seed: np.ndarray,
    bbox: tuple[int, int, int, int],
    contrast: np.ndarray,
    smooth: np.ndarray,
    noise: np.ndarray,
    params: PlateauParams,
    min_area_px: float = 0.0,
) -> Plateau | None:
    """Grow a seed back to its half-height edge and measure it (None when it is smaller than ``min_area_px``:
    most seeds of a dusty tile are, and measuring them would cost more than finding them)."""
    rows, cols = contrast.shape[:2]
    grow = params.grow_px
    pad = grow + 3
    r0, c0, r1, c1 = bbox
    wr0, wc0, wr1, wc1 = max(r0 - pad, 0), max(c0 - pad, 0), min(r1 + pad, rows), min(c1 + pad, cols)
    core = np.zeros((wr1 - wr0, wc1 - wc0), np.uint8)
    core[r0 - wr0 : r1 - wr0, c0 - wc0 : c1 - wc0] = seed
    win = smooth[wr0:wr1, wc0:wc1]
    level = win[core > 0].mean(axis=0)  # a flat seed has no outliers to fear
    kernel = _disc(2 * grow + 1)
    near = cv2.dilate(core, kernel)
    ring = cv2.dilate(near, np.ones((3, 3), np.uint8)) > 0
    ring &= near == 0
    outside = _median(win[ring]) if ring.any() else np.zeros_like(level)
    step = level - outside
    step2 = float(step @ step)
    if step2 <= 0:
        return None
    # Half-height contour between the plateau and what surrounds it.
    t = (win - outside) @ (step / step2)
    region = ((near > 0) & (t >= 0.5)) | (core > 0)
    region_u8 = region.astype(np.uint8)
    # Keep the part connected to the seed (growth must not jump onto a neighbour of the same colour).
    n, lab = cv2.connectedComponents(region_u8, connectivity=8)
    if n > 2:
        keep = np.unique(lab[core > 0])
        region = np.isin(lab, keep[keep > 0])
        region_u8 = region.astype(np.uint8)
    area = int(region_u8.sum())
    if area < min_area_px:
        return None
    rr, cc = np.nonzero(region)
    br0, bc0, br1, bc1 = int(rr.min()), int(cc.min()), int(rr.max()) + 1, int(cc.max()) + 1
    sub = region_u8[br0:br1, bc0:bc1]
    deep, deepest = deep_pixels(sub)  # the plateau's contrast: the unsmoothed values of its deep pixels
    raw = contrast[wr0 + br0 : wr0 + br1, wc0 + bc0 : wc0 + bc1][deep]
    raw = raw[:: max(1, len(raw) // MEDIAN_SAMPLE)]
    median = _median(raw)
    mad = 1.4826 * _median(np.abs(raw - median))
    # Texture: the interior's spread in units of the substrate noise (mean absolute deviation × 1.25 ≈ σ).
    inner = win[core > 0]
    texture = float(np.sqrt(np.mean((1.25 * np.mean(np.abs(inner - level), axis=0) / noise) ** 2)))
    # Sharpness: how steeply the step rises across the rim, in step heights per pixel (mean over the 3-px
    # band around the half-height contour; for a step blurred by σ ≳ 1.5 px it falls roughly as 1/σ).
    # The contrast projected on the step is 0 outside and 1 inside; noise adds about 0.7/step_z to it.
    grown = cv2.dilate(region_u8, np.ones((3, 3), np.uint8)) > 0
    shrunk = cv2.erode(region_u8, np.ones((3, 3), np.uint8)) > 0
    rim = grown & ~shrunk
    step_z = float(np.linalg.norm(step / noise))
    rr_rim, cc_rim = np.nonzero(rim)
    if rr_rim.size:
        # Central differences of t at the rim pixels only (t is defined on the whole window).
        tr, tc = t.shape
        up, down = np.maximum(rr_rim - 1, 0), np.minimum(rr_rim + 1, tr - 1)
        left, right = np.maximum(cc_rim - 1, 0), np.minimum(cc_rim + 1, tc - 1)
        d_row = (t[down, cc_rim] - t[up, cc_rim]) / np.maximum(down - up, 1)
        d_col = (t[rr_rim, right] - t[rr_rim, left]) / np.maximum(right - left, 1)
        sharpness = float(np.mean(np.hypot(d_row, d_col)))
    else:
        sharpness = 0.0
    elongation, solidity = _shape(sub, area)
    width = 2.0 * deepest
    ring_vals = win[ring]
    stronger = float(np.mean(np.linalg.norm(ring_vals / noise, axis=1) > np.linalg.norm(level / noise) + 3)) if len(
        ring_vals) else 0.0
    cr, cc_ = float(rr.mean()) + wr0, float(cc.mean()) + wc0
    abs_box = (wr0 + br0, wc0 + bc0, wr0 + br1, wc0 + bc1)
    interior = core[br0:br1, bc0:bc1] > 0
    return Plateau(
        contrast=median.astype(float),
        spread=mad.astype(float),
        area_px=area,
        interior_px=int(seed.sum()),
        bbox=abs_box,
        mask=region[br0:br1, bc0:bc1],
        interior=interior,
        centroid=(cr, cc_),
        sharpness=sharpness,
        step_z=step_z,
        z=float(np.linalg.norm(level / noise)),
        elongation=elongation,
        width_px=width,
        solidity=solidity,
        surround=outside.astype(float),
        surround_stronger=stronger,
        texture=texture,
        touches_border=bool(abs_box[0] == 0 or abs_box[1] == 0 or abs_box[2] == rows or abs_box[3] == cols),
        uncertainty=float(np.sqrt(np.mean(mad**2)) * 1.25 / math.sqrt(max(len(raw), 1))),
    )


@dataclass(frozen=True)
class RejectRules:
    """What is not a flake, by shape and texture (lengths in pixels, heights in noise σ)."""

    min_area_px: float = 12.0
    min_interior_px: int = 3
    min_step_z: float = 6.0
    min_width_px: float = 2.5  # narrower than this: a scratch, a line of tape residue, a rim
    line_elongation: float = 10.0  # longer than this many widths and ...
    line_width_px: float = 5.0  # ... narrower than this: a line (scratch, tape edge, fold)
    rim_stronger: float = 0.5  # a band with more than half its surround stronger than itself ...
    rim_width_px: float = 6.0  # ... and narrower than this runs along a thicker region's edge
    max_texture: float = 4.0  # interior spread in units of the substrate's noise
    halo_ratio: float = 0.45  # an edge this much softer than the image's own sharp edges: haze, not a flake


def reject_reason(plateau: Plateau, rules: RejectRules, reference_sharpness: float | None = None) -> str | None:
    """Why ``plateau`` is not a flake candidate, or None when it may be one."""
    if plateau.area_px < rules.min_area_px:
        return "small"
    if plateau.saturated > 0.1:
        return "saturated"
    if plateau.interior_px < rules.min_interior_px:
        return "no interior"
    if plateau.step_z < rules.min_step_z:
        return "faint step"
    if plateau.width_px < rules.min_width_px:
        return "narrow"
    if plateau.elongation > rules.line_elongation and plateau.width_px < rules.line_width_px:
        return "line"
    if plateau.surround_stronger > rules.rim_stronger and plateau.width_px < rules.rim_width_px:
        return "rim of a thicker region"
    if plateau.texture > rules.max_texture:
        return "textured"
    if reference_sharpness is not None and plateau.sharpness < rules.halo_ratio * reference_sharpness:
        return "soft edge"
    return None
