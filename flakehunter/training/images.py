"""Images as the networks see them: float32 (H, W, 3) arrays in [0, 1], RGB order, [row, col] axes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from flakehunter.errors import InputError
from flakehunter.tiles import read_image


def to_float_rgb(array: np.ndarray, source: str | Path = "image") -> np.ndarray:
    """Scale an image to float32 in [0, 1] by its dtype's range; grey becomes three equal channels."""
    arr = np.asarray(array)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype.kind == "f":
        out = np.clip(arr.astype(np.float32), 0.0, 1.0)
    else:
        raise InputError(f"{source}: unsupported pixel type {arr.dtype} (expected uint8, uint16 or float)")
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    if out.ndim != 3 or out.shape[2] != 3:
        raise InputError(f"{source}: expected a grey or RGB image, got shape {arr.shape}")
    return np.ascontiguousarray(out)


def load_rgb(path: Path, size_px: int | None = None) -> np.ndarray:
    """Read an image file as float32 (H, W, 3) in [0, 1]; resized to size_px x size_px when given."""
    array, _ = read_image(path)
    out = to_float_rgb(array, path)
    if size_px is not None and out.shape[:2] != (size_px, size_px):
        shrinking = out.shape[0] > size_px and out.shape[1] > size_px
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        out = cv2.resize(out, (size_px, size_px), interpolation=interp)
    return out


def crop_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (row0, col0, row1, col1) box of ``image``; parts outside the image are mirrored in."""
    r0, c0, r1, c1 = box
    h, w = image.shape[:2]
    pad_top, pad_left = max(0, -r0), max(0, -c0)
    pad_bottom, pad_right = max(0, r1 - h), max(0, c1 - w)
    if pad_top or pad_left or pad_bottom or pad_right:
        # Mirroring needs the image to be larger than the pad; a tiny image repeats its edge instead.
        mirror = max(pad_top, pad_bottom) < h and max(pad_left, pad_right) < w
        border = cv2.BORDER_REFLECT_101 if mirror else cv2.BORDER_REPLICATE
        image = cv2.copyMakeBorder(image, pad_top, pad_bottom, pad_left, pad_right, border)
        r0, r1, c0, c1 = r0 + pad_top, r1 + pad_top, c0 + pad_left, c1 + pad_left
    return np.ascontiguousarray(image[r0:r1, c0:c1])
