"""Illumination: per-tile background and a flat field learnt from the scan's own tiles.

Vignetting (10-30 %) is larger than the contrast of a monolayer (5-15 %), so every image is
divided by its background before contrast is measured. The background of one tile is a smooth
surface fitted to block means with robust weights, started from the blocks near each channel's
histogram mode (the bare substrate), so flakes, dust and residue do not pull it. Across tiles, the
normalised surfaces are averaged into a flat field; once a few tiles are in, each tile only fits its
level and a gentle tilt on top of that flat field, which stays right on a tile crowded with thick flakes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np

from flakehunter.errors import InputError

BLOCK_PX = 16  # block size for the background fit; much larger than noise, much smaller than vignetting
FULL_DEGREE = 4  # a radial 1 - a r² - b r⁴ fall-off is exactly a degree-4 polynomial
MIN_TILES_FOR_FLAT = 3
#: Background fits remembered per setup: calibration fits its images, and the detection pass that follows
#: fits the same images under the same flat field again (the flat field is put back and relearnt in order).
REMEMBERED_FITS = 32


def block_means(image: np.ndarray, block_px: int = BLOCK_PX) -> np.ndarray:
    """(rows/b, cols/b, channels) means of non-overlapping blocks, as float32."""
    rows, cols = image.shape[:2]
    if _whole_integer_blocks(image, block_px):
        return _integer_block_means(image, block_px)
    size = (max(cols // block_px, 1), max(rows // block_px, 1))
    out = cv2.resize(image.astype(np.float32, copy=False), size, interpolation=cv2.INTER_AREA)
    return out.reshape(size[1], size[0], -1)


def _whole_integer_blocks(image: np.ndarray, block_px: int) -> bool:
    """Whether ``image`` is 8- or 16-bit with sides of whole blocks, and a block's sum stays below 2^24 (exact
    in float32, in any order of addition)."""
    rows, cols = image.shape[:2]
    return (image.dtype in (np.uint8, np.uint16) and rows >= block_px and cols >= block_px
            and rows % block_px == 0 and cols % block_px == 0
            and int(np.iinfo(image.dtype).max) * block_px**2 < 2**24)


def _integer_block_means(image: np.ndarray, block_px: int) -> np.ndarray:
    """`block_means` from integer sums: the same float32 values as OpenCV's area resize (every partial sum is
    exact), in half the time, without a float copy of the image."""
    rows, cols = image.shape[:2]
    row_sums = image.reshape(rows // block_px, block_px, -1).sum(axis=1, dtype=np.uint32)  # (R, cols * channels)
    sums = row_sums.reshape(rows // block_px, cols // block_px, block_px, -1).sum(axis=2)  # (R, C, channels)
    means: np.ndarray = sums.astype(np.float32) * np.float32(1.0 / block_px**2)
    return means


def _basis(n: int, degree: int) -> np.ndarray:
    """Powers 0..degree of coordinates normalised to [-1, 1], shape (n, degree + 1)."""
    t = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    return np.stack([t**k for k in range(degree + 1)], axis=1)


def _terms(degree: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]


def robust_surface(
    values: np.ndarray, degree: int, iterations: int = 6, start_window: float | None = None, trimmed: bool = True,
    start_centre: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a 2-D polynomial to a (rows, cols) grid with Tukey-biweight reweighting.

    With ``start_window`` (and ``trimmed``), the fit starts from the better of two least-trimmed-squares
    starts (the half of the cells that the surface fits best, refined a few times): one from the cells within
    ``start_window`` of the values' histogram mode (the bare substrate), one from all cells. The mode alone
    can mislead: a large uniform flake makes a sharper histogram peak than substrate spread out by
    vignetting. Without ``trimmed``, the first fit uses the cells near the mode only. ``start_centre``
    replaces the mode where the substrate's level is known beforehand.
    Returns (coefficient matrix A of shape (degree+1, degree+1) for ``R @ A @ C.T``, inlier weights
    of the grid). Grid cells far from the surface (flakes, dust) end with weight 0.
    """
    rows, cols = values.shape
    br, bc = _basis(rows, degree), _basis(cols, degree)
    terms = _terms(degree)
    design = np.stack([np.outer(br[:, i], bc[:, j]).ravel() for i, j in terms], axis=1)
    y = values.ravel().astype(np.float64)
    w = np.ones_like(y)

    def solve(weights: np.ndarray) -> np.ndarray:
        # Weighted normal equations: k x k, far cheaper than a least-squares solve on all cells.
        dw = design * weights[:, None]
        return np.linalg.solve(dw.T @ design + 1e-9 * np.eye(len(terms)), dw.T @ y)

    centre = start_centre if start_centre is not None else (histogram_mode(y) if start_window is not None else 0.0)
    if start_window is not None and not trimmed:
        near_mode = np.abs(y - centre) <= start_window
        if near_mode.sum() > len(terms) * 3:
            w = near_mode.astype(float)
    elif start_window is not None and len(y) > len(terms) * 6:
        near_mode = np.abs(y - centre) <= start_window
        starts = [near_mode.astype(float)] if near_mode.sum() > len(terms) * 3 else []
        starts.append(np.ones_like(y))
        best_cost = np.inf
        for start in starts:
            keep = start
            for _ in range(4):  # concentration steps on the best-fitting half
                resid = np.abs(y - design @ solve(keep))
                keep = (resid <= np.median(resid)).astype(float)
            cost = float(np.sum(np.sort(resid)[: len(y) // 2] ** 2))
            if cost < best_cost:
                best_cost, w = cost, keep
    coef = np.zeros(len(terms))
    for _ in range(iterations):
        coef = solve(w)
        resid = y - design @ coef
        scale = 1.4826 * np.median(np.abs(resid[w > 0])) + 1e-6
        u = resid / (4.685 * scale)
        w = np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0)
    a = np.zeros((degree + 1, degree + 1))
    for (i, j), c in zip(terms, coef, strict=True):
        a[i, j] = c
    return a, w.reshape(rows, cols)


def evaluate_surface(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Evaluate ``robust_surface`` coefficients on a (rows, cols) grid."""
    degree = a.shape[0] - 1
    return (_basis(rows, degree) @ a @ _basis(cols, degree).T).astype(np.float32)


def histogram_mode(values: np.ndarray, bins: int = 256) -> float:
    """Mode of a 1-D sample's histogram, refined by a parabola through the peak bin."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        return float(lo)
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    hist = np.convolve(hist, np.ones(3) / 3, mode="same")  # steady the peak against noise
    k = int(np.argmax(hist))
    offset = 0.0
    if 0 < k < bins - 1:
        y0, y1, y2 = hist[k - 1], hist[k], hist[k + 1]
        denom = y0 - 2 * y1 + y2
        offset = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
    width = edges[1] - edges[0]
    return float(edges[k] + (0.5 + offset) * width)


def expand(surfaces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (rows/b, cols/b, channels) surface from `BackgroundModel.surface` at full ``size`` (rows, cols)."""
    rows, cols = size
    full = cv2.resize(surfaces, (cols, rows), interpolation=cv2.INTER_LINEAR)
    return full.reshape(rows, cols, surfaces.shape[2])


def _fit_key(blocks: np.ndarray, flat: np.ndarray | None, expected: np.ndarray | None) -> bytes:
    """What a background fit depends on, hashed: the block means, the flat field, and the substrate's expected
    level (used only on top of a flat field)."""
    parts = [blocks]
    if flat is not None:
        parts.append(flat)
        if expected is not None:
            parts.append(np.asarray(expected))
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(f"{part.shape}{part.dtype.str}".encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.digest()


class BackgroundModel:
    """Estimates each image's background and learns the flat field across images of one shape."""

    def __init__(self, min_tiles: int = MIN_TILES_FOR_FLAT, min_inliers: float = 0.6) -> None:
        self.min_tiles = min_tiles
        self.min_inliers = min_inliers
        self._sum_log: np.ndarray | None = None
        self._count = 0
        self._shape: tuple[int, ...] | None = None
        self._measured: np.ndarray | None = None  # a flat field from images of bare substrate
        self._fits: OrderedDict[bytes, tuple[np.ndarray, float]] = OrderedDict()  # see `_fit_key`

    def use_flat_field(self, image: np.ndarray) -> None:
        """Use a measured flat field (bare substrate, same camera and objective) instead of learning one."""
        img = image.astype(np.float32) if image.ndim == 3 else image.astype(np.float32)[..., None]
        blocks = block_means(img)
        self._measured = (blocks / blocks.mean(axis=(0, 1), keepdims=True)).astype(np.float32)

    @property
    def tiles_learnt(self) -> int:
        return self._count

    def flat_field(self) -> np.ndarray | None:
        """The learnt flat field on the block grid, mean 1 per channel, or None before enough tiles."""
        if self._sum_log is None or self._count < self.min_tiles:
            return None
        flat = np.exp(self._sum_log / self._count)
        return (flat / flat.mean(axis=(0, 1), keepdims=True)).astype(np.float32)

    def background(self, image: np.ndarray, blocks: np.ndarray | None = None, learn: bool = True,
                   expected: np.ndarray | None = None) -> np.ndarray:
        """Background intensity of ``image`` (rows, cols, channels) as float32, and learn from it.

        ``blocks``: the image's `block_means`, when the caller has them already. ``learn=False`` keeps an
        atypical image (one mostly covered by a flake) out of the flat field. ``expected``: the substrate's
        level per channel, when known from earlier images: on top of a learnt flat field the fit starts
        from it rather than from the histogram's mode, which a big uniform flake can take over."""
        img = image if image.ndim == 3 else image[..., None]
        blocks = block_means(img) if blocks is None else blocks
        return expand(self.surface(img.shape, blocks, learn=learn, expected=expected), img.shape[:2])

    def surface(self, shape: tuple[int, ...], blocks: np.ndarray, learn: bool = True,
                expected: np.ndarray | None = None) -> np.ndarray:
        """`background` on the block grid (`expand` makes it full size): what must be computed image after
        image, in order, since the flat field learns from each; the full-size division can wait."""
        rows, cols = shape[:2]
        channels = blocks.shape[2]
        if self._measured is not None:
            if self._measured.shape != blocks.shape:
                raise InputError(
                    f"flat field: it is {self._measured.shape[1] * BLOCK_PX} x {self._measured.shape[0] * BLOCK_PX}"
                    f" px with {self._measured.shape[2]} channel(s); the image is {cols} x {rows} with {channels}"
                )
            flat = self._measured
        else:
            if self._shape != blocks.shape:
                self._shape, self._sum_log, self._count = blocks.shape, None, 0
            flat = self.flat_field()
        key = _fit_key(blocks, flat, expected)
        fit = self._fits.get(key)
        if fit is None:
            fit = self._fit(blocks, flat, expected)
            self._fits[key] = fit
            if len(self._fits) > REMEMBERED_FITS:
                self._fits.popitem(last=False)
        surfaces, inliers = fit
        if learn and inliers >= self.min_inliers and self._measured is None:
            self._learn(surfaces)
        return surfaces.copy()

    @staticmethod
    def _fit(blocks: np.ndarray, flat: np.ndarray | None, expected: np.ndarray | None) -> tuple[np.ndarray, float]:
        """The background surface on the block grid under ``flat`` (None: not learnt yet), and the smallest
        share of inlier blocks among the channels."""
        channels = blocks.shape[2]
        log_blocks = np.log(np.maximum(blocks, 1e-3))
        surfaces = np.empty_like(blocks)
        inliers = np.empty(channels)
        for ch in range(channels):
            if flat is None:
                # Substrate spans the vignetting (up to ~30 %) around the mode; thick flakes lie further.
                a, w = robust_surface(log_blocks[..., ch], FULL_DEGREE, start_window=0.3)
                surfaces[..., ch] = np.exp(evaluate_surface(a, *blocks.shape[:2]))
            else:
                # Level and a gentle tilt (oxide gradient) on top of the learnt flat field.
                # (a flat field learnt from several tiles leaves only a gentle correction: no trimmed start)
                a, w = robust_surface(log_blocks[..., ch] - np.log(flat[..., ch]), 1, start_window=0.08,
                                      trimmed=False,
                                      start_centre=None if expected is None else float(np.log(expected[ch])))
                surfaces[..., ch] = flat[..., ch] * np.exp(evaluate_surface(a, *blocks.shape[:2]))
            inliers[ch] = float((w > 0.5).mean())
        return surfaces, float(inliers.min())

    def _learn(self, surfaces: np.ndarray) -> None:
        # float64 throughout, so that the state saved with each tile restores bit for bit.
        surfaces64 = surfaces.astype(np.float64)
        shape_only = np.log(surfaces64) - np.log(np.median(surfaces64, axis=(0, 1), keepdims=True))
        self._sum_log = shape_only if self._sum_log is None else self._sum_log + shape_only
        self._count += 1

    def state(self) -> dict[str, Any]:
        if self._sum_log is None:
            return {"count": 0}
        return {"count": self._count, "sum_log": self._sum_log}

    def load_state(self, state: dict[str, Any]) -> None:
        self._count = int(state.get("count", 0))
        sum_log = state.get("sum_log")
        self._sum_log = None if sum_log is None else np.asarray(sum_log, np.float64)
        self._shape = None if sum_log is None else tuple(self._sum_log.shape)
