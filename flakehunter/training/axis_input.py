"""What the crystal-axis network sees: one flake's contrast, scaled so that the flake is 1 and the substrate 0.

A square window around the flake (`window_box`) is cut from the image at full resolution and divided by
the background (`segment_input.GridContrast`), giving the contrast C per channel. Projected on the flake's
own contrast vector v (its median contrast against the substrate), t = C·v / |v|² is 1 on the flake and
0 on the substrate whatever the camera, oxide or material; a thicker neighbour (the body a terrace grows
from) is clipped at `T_RANGE`'s top. The window is resized to ``size_px`` squares (an isotropic resize
keeps every angle) and stored as 8 bits (`to_uint8`), which is what ``flakehunter train --task angle``
reads and what the cnn-axis detector feeds its network.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from flakehunter.training.images import crop_box, to_float_rgb
from flakehunter.training.segment_input import GridContrast

#: t is clipped to this range before it is stored as 8 bits.
T_RANGE = (-1.0, 3.0)
#: The window is this much larger than the flake's bounding box (so every edge is inside it).
WINDOW_MARGIN = 1.4
MIN_WINDOW_PX = 24
CROP_PX = 64


def window_box(bbox: tuple[int, int, int, int], margin: float = WINDOW_MARGIN,
               min_px: int = MIN_WINDOW_PX) -> tuple[int, int, int, int]:
    """A square (row0, col0, row1, col1) window around a (row0, col0, row1, col1) box, ``margin`` times its
    longer side (at least ``min_px``), centred on it. It may reach outside the image (mirrored in)."""
    r0, c0, r1, c1 = bbox
    side = max(min_px, math.ceil(margin * max(r1 - r0, c1 - c0)))
    rc, cc = (r0 + r1) / 2, (c0 + c1) / 2
    top, left = round(rc - side / 2), round(cc - side / 2)
    return top, left, top + side, left + side


def window_contrast(image: np.ndarray, grid: GridContrast, box: tuple[int, int, int, int]) -> np.ndarray:
    """(side, side, 3) contrast C of the image over ``box`` (image pixels), against the grid's background."""
    crop = to_float_rgb(crop_box(np.asarray(image), box))
    bg = grid.background_at(box)  # smooth: held constant beyond the image's border
    contrast: np.ndarray = crop / np.maximum(bg, 1e-4) - 1.0
    return contrast


def flake_vector(contrast: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The flake's contrast against the surrounding substrate: median over ``mask`` (default: the central
    disc of a fifth of the window) minus the median of the window's outer ring."""
    side = contrast.shape[0]
    rr, cc = np.mgrid[:side, : contrast.shape[1]]
    dist = np.hypot(rr - (side - 1) / 2, cc - (contrast.shape[1] - 1) / 2)
    inner = mask if mask is not None and mask.any() else dist <= max(1.5, side / 10)
    ring = dist >= 0.45 * side
    v: np.ndarray = np.median(contrast[inner], axis=0) - np.median(contrast[ring], axis=0)
    return v


def flake_coordinate(contrast: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """t = C·v / |v|², clipped to `T_RANGE`: 1 on the flake, 0 on the substrate; (side, side) float32."""
    v = np.asarray(vector, np.float32).reshape(-1)
    norm2 = max(float(v @ v), 1e-8)
    t = (contrast.reshape(-1, contrast.shape[-1]) @ v).reshape(contrast.shape[:2]) / norm2
    clipped: np.ndarray = np.clip(t, *T_RANGE).astype(np.float32)
    return clipped


def to_uint8(t: np.ndarray, size_px: int = CROP_PX) -> np.ndarray:
    """A t window resized to ``size_px`` squares and stored as 8 bits (0 = T_RANGE[0], 255 = T_RANGE[1])."""
    side = t.shape[0]
    interp = cv2.INTER_AREA if side > size_px else cv2.INTER_LINEAR
    small = cv2.resize(t, (size_px, size_px), interpolation=interp) if side != size_px else t
    lo, hi = T_RANGE
    return np.clip(np.rint((small - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
