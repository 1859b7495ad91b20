"""Clipped pixels: a flake at the camera's full scale (or crushed to black) says nothing about its thickness."""

from __future__ import annotations

import cv2
import numpy as np


def saturation_mask(image: np.ndarray) -> np.ndarray | None:
    """Pixels clipped in any channel: at the camera's full scale, or at black (None when nothing is clipped).

    The full scale is the largest value present when enough pixels sit exactly on it (a clipped flake),
    which also finds the 4095 of 12-bit data stored in 16-bit words; black is the smallest value present,
    when it is within 3 % of the full scale from zero (a channel crushed to black by a thick flake).
    """
    top, bottom = int(image.max()), int(image.min())
    if top <= 0:
        return None
    channels = image.shape[2] if image.ndim == 3 else 1
    values = np.ascontiguousarray(image).reshape(image.shape[0], -1)  # every channel's values as one plane
    enough = max(20, image.shape[0] * image.shape[1] // 20000)
    clipped = None
    for level, cmp in ((top, cv2.CMP_GE), (bottom, cv2.CMP_LE)):
        if cmp == cv2.CMP_LE and bottom > 0.03 * top:
            continue
        hits = cv2.compare(values, level, cmp)
        if cv2.countNonZero(hits) < enough:
            continue  # fewer values at the level than pixels needed, so fewer clipped pixels (no mask to make)
        # A pixel clipped in any channel: the channels' 0/255 hits summed (saturating) into one plane.
        mask = hits if channels == 1 else cv2.transform(hits.reshape(image.shape), np.ones((1, channels)))
        if cv2.countNonZero(mask) >= enough:
            clipped = mask if clipped is None else cv2.bitwise_or(clipped, mask)
    return None if clipped is None else clipped > 0
