"""What the CNN detectors see: background-normalised contrast on a grid of about `GRID_UM` µm per pixel.

The same function prepares training images and detector input, so that a network never meets an image
prepared differently from the ones it learnt on:

1. the image (grey or RGB, any bit depth) is averaged in blocks of ``factor`` x ``factor`` pixels, where
   ``factor`` = `grid_factor` (pixel size); the grid is 1.5-3 µm per pixel for every camera from 0.3 to
   2.5 µm/px, fine enough for a 50 µm² flake (about ten grid pixels) and coarse enough to be fast;
2. each channel's background (illumination, vignetting, substrate colour) is a smooth surface fitted
   robustly to block means (`background`), and the contrast is C = I / background − 1; white balance and
   exposure cancel in the ratio;
3. the network input is C times `INPUT_GAIN`, clipped to ± `INPUT_LIMIT` (bulk flakes saturate there).

Classes of a segmentation (`CLASSES`): substrate, 1L, 2L, 3L, few (4-20 layers), bulk (> 20 layers) and junk
(residue, dust, scratches); 255 marks pixels to ignore (`IGNORE`), as in label images (DESIGN.md §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from flakehunter.training.images import to_float_rgb

#: Target size of a grid pixel in µm.
GRID_UM = 2.2
#: Segmentation classes, in the order of the network's outputs.
CLASSES: tuple[str, ...] = ("substrate", "1L", "2L", "3L", "few", "bulk", "junk")
SUBSTRATE, JUNK = 0, 6
THIN_CLASSES = (1, 2, 3)
#: Label value of a pixel that is not scored (label images, DESIGN.md §4).
IGNORE = 255
INPUT_GAIN = 5.0
INPUT_LIMIT = 5.0
#: Layer counts up to this are "few"; thicker is "bulk" (as `layer_class` of the simulator).
FEW_MAX_LAYERS = 20


def grid_factor(pixel_size_um: float | None, grid_um: float = GRID_UM) -> int:
    """How many image pixels (per side) make one grid pixel: round(grid / pixel size), at least 1.

    An unknown pixel size counts as 1 µm (a 5-10x objective on a common camera).
    """
    p = pixel_size_um if pixel_size_um and pixel_size_um > 0 else 1.0
    return max(1, round(grid_um / p))


def class_of_layers(layers: int) -> int:
    """Segmentation class of a layer count: 0 substrate, 1-3 for 1-3L, 4 few, 5 bulk."""
    if layers <= 0:
        return SUBSTRATE
    if layers <= 3:
        return layers
    return 4 if layers <= FEW_MAX_LAYERS else 5


def classes_from_layer_image(labels: np.ndarray) -> np.ndarray:
    """A label image (pixel = layer count, 0 substrate, 255 ignore) as a class map (uint8, 255 ignore)."""
    lut = np.array([class_of_layers(n) for n in range(256)], np.uint8)
    lut[IGNORE] = IGNORE
    return lut[np.asarray(labels, np.uint8)]


def block_average(image: np.ndarray, factor: int) -> np.ndarray:
    """(rows, cols, C) float32 -> (ceil(rows/f), ceil(cols/f), C) block means; the last partial blocks are
    padded by repeating the edge, so every image pixel lands in exactly one grid pixel."""
    if factor == 1:
        return np.ascontiguousarray(image, np.float32)
    rows, cols = image.shape[:2]
    pr, pc = (-rows) % factor, (-cols) % factor
    if pr or pc:
        image = cv2.copyMakeBorder(image, 0, pr, 0, pc, cv2.BORDER_REPLICATE)
        if image.ndim == 2:
            image = image[..., None]
    out = cv2.resize(image, (image.shape[1] // factor, image.shape[0] // factor), interpolation=cv2.INTER_AREA)
    return out.reshape(image.shape[0] // factor, image.shape[1] // factor, -1).astype(np.float32, copy=False)


def class_fractions_to_grid(classes: np.ndarray, factor: int, num_classes: int = len(CLASSES),
                            min_fraction: float = 0.5) -> np.ndarray:
    """A full-resolution class map (255 ignore) on the grid: the majority class of each block, or 255 where no
    class covers ``min_fraction`` of it (mixed boundary pixels are not scored)."""
    if factor == 1:
        return classes.astype(np.uint8)
    onehot = np.zeros((*classes.shape, num_classes), np.float32)
    valid = classes != IGNORE
    onehot[valid, classes[valid].astype(np.int64)] = 1.0
    grid = block_average(onehot, factor)
    best: np.ndarray = grid.argmax(axis=2).astype(np.uint8)
    best[grid.max(axis=2) < min_fraction] = IGNORE
    return best


# ----------------------------------------------------------------------------------------- background


def _design(rows: np.ndarray, cols: np.ndarray, degree: int) -> np.ndarray:
    return np.stack([rows**i * cols**j for i in range(degree + 1) for j in range(degree + 1 - i)], axis=1)


def background(grid: np.ndarray, cells: int = 40, degree: int = 4, iterations: int = 5) -> np.ndarray:
    """Smooth per-channel background of a (rows, cols, C) image (float32), robust to what lies on it.

    Block means (about ``cells`` along the longer side) are fitted by a 2-D polynomial per channel: first a
    quadratic through the blocks near the histogram mode of their brightness (the bare substrate), then
    ``iterations`` rounds of Tukey-biweight reweighting at ``degree`` (vignetting 1 − a r² − b r⁴ is exactly
    degree 4). Blocks far from the surface (flakes, dust, residue) end with weight 0.
    """
    rows, cols, channels = grid.shape
    block = max(1, math.ceil(max(rows, cols) / cells))
    means = block_average(grid, block)
    br, bc = means.shape[:2]
    r = (np.arange(br) + 0.5) * block / rows * 2 - 1
    c = (np.arange(bc) + 0.5) * block / cols * 2 - 1
    rr, cc = np.meshgrid(np.clip(r, -1, 1), np.clip(c, -1, 1), indexing="ij")
    y = means.reshape(-1, channels).astype(np.float64)
    level = y.sum(axis=1)
    lo, hi = np.percentile(level, [1, 99])
    hist, edges = np.histogram(level, bins=64, range=(lo, hi + 1e-9))
    mode = 0.5 * (edges[hist.argmax()] + edges[hist.argmax() + 1])
    weights = (np.abs(level / max(mode, 1e-9) - 1.0) < 0.12).astype(np.float64)
    if weights.sum() < 12:
        weights[:] = 1.0
    coef = np.zeros((1, channels))
    for step in range(iterations + 1):
        deg = 2 if step == 0 else degree
        design = _design(rr.ravel(), cc.ravel(), deg)
        sw = np.sqrt(weights)[:, None]
        coef, *_ = np.linalg.lstsq(design * sw, y * sw, rcond=None)
        fit = design @ coef
        rel = y / np.maximum(fit, 1e-9) - 1.0
        scale = 1.4826 * np.median(np.abs(rel[weights > 0]), axis=0) if (weights > 0).any() else np.full(channels, 1.0)
        scale = np.maximum(scale, 0.004)  # never tighter than the block means' own noise
        u = np.abs(rel) / (4.685 * scale)
        weights = np.prod(np.where(u < 1, (1 - u**2) ** 2, 0.0), axis=1)
        if weights.sum() < 12:
            weights = np.ones_like(weights)
    # Evaluate the surface on the full grid as R @ A @ C.T per channel (pixel centres in the blocks' frame).
    fr = (np.arange(rows) + 0.5) / rows * 2 - 1
    fc = (np.arange(cols) + 0.5) / cols * 2 - 1
    powers_r = np.stack([fr**i for i in range(degree + 1)], axis=1)
    powers_c = np.stack([fc**j for j in range(degree + 1)], axis=1)
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    out = np.empty((rows, cols, channels), np.float32)
    for ch in range(channels):
        a = np.zeros((degree + 1, degree + 1))
        for k, (i, j) in enumerate(terms):
            a[i, j] = coef[k, ch]
        out[..., ch] = powers_r @ a @ powers_c.T
    return out


# ----------------------------------------------------------------------------------------- contrast


@dataclass
class GridContrast:
    """An image's contrast on the analysis grid.

    Attributes:
        contrast: (rows, cols, 3) float32, C = I / background − 1 per channel.
        factor: image pixels per grid pixel (per side).
        shape: the image's (rows, cols).
        background: (rows, cols, 3) float32 background on the grid, in the image's [0, 1] units.
        noise: (3,) robust per-channel noise of C on the grid.
    """

    contrast: np.ndarray
    factor: int
    shape: tuple[int, int]
    background: np.ndarray
    noise: np.ndarray

    def background_at(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """The background over an image-pixel box (row0, col0, row1, col1), interpolated from the grid."""
        r0, c0, r1, c1 = box
        f = self.factor
        rows = (np.arange(r0, r1) + 0.5) / f - 0.5
        cols = (np.arange(c0, c1) + 0.5) / f - 0.5
        map_r = np.repeat(rows[:, None], len(cols), axis=1).astype(np.float32)
        map_c = np.repeat(cols[None, :], len(rows), axis=0).astype(np.float32)
        out = cv2.remap(self.background, map_c, map_r, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(r1 - r0, c1 - c0, -1)


def contrast_grid(image: np.ndarray, pixel_size_um: float | None, grid_um: float = GRID_UM,
                  factor: int | None = None) -> GridContrast:
    """The contrast image of ``image`` (grey or RGB, uint8/uint16/float) on the analysis grid."""
    rgb = to_float_rgb(image)
    f = factor or grid_factor(pixel_size_um, grid_um)
    grid = block_average(rgb, f)
    bg = np.maximum(background(grid), 1e-4)
    contrast = grid / bg - 1.0
    sample = contrast[:: max(1, contrast.shape[0] // 128), :: max(1, contrast.shape[1] // 128)].reshape(-1, 3)
    noise = 1.4826 * np.median(np.abs(sample - np.median(sample, axis=0)), axis=0)
    return GridContrast(contrast.astype(np.float32), f, (int(image.shape[0]), int(image.shape[1])), bg,
                        noise.astype(np.float32))


def network_input(contrast: np.ndarray) -> np.ndarray:
    """(rows, cols, 3) contrast -> the (3, rows, cols) float32 array a segmentation network takes."""
    x = np.clip(contrast * INPUT_GAIN, -INPUT_LIMIT, INPUT_LIMIT)
    return np.ascontiguousarray(x.transpose(2, 0, 1), np.float32)
