"""How much the optics' blur dims a small plateau, measured on the image itself.

A flake a few blur widths across never reaches its full contrast: the point-spread function mixes its rim
with the substrate, and the median of even its deepest pixels stays short of the layer's contrast, so it
falls between the rungs (docs/detection.md §3: the misses of foreign setup 3, diagnosed).
Two steps undo that:

* `edge_blur_px`: the image's blur σ from its edge-spread function. Around the strong, large plateaus the
  contrast, projected on each one's step, is binned by signed distance from the plateau's half-height
  contour and fitted with a + b·Φ((d − δ)/σ) (the asymptotes are fitted too: the ring around a plateau is
  not always the bare substrate).
* `blur_attenuation`: the plateau's outline blurred by that σ, averaged over the pixels its contrast is
  measured on (`plateaus.deep_pixels`): the share of the layer's contrast those pixels show.

The outline is the half-height contour of the blurred flake, a little smaller than the flake for the
smallest ones, so the correction is uncertain in proportion to its size (`corrected`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares
from scipy.special import erf

from flakehunter.plugins.contrast.plateaus import Plateau, deep_pixels

#: Plateaus whose edges measure the blur: steps this many noise σ high, interiors this large (px).
EDGE_MIN_STEP_Z = 25.0
EDGE_MIN_INTERIOR_PX = 400
#: At most this many of them (the strongest steps), and pixels this far from the contour (px).
EDGE_PLATEAUS = 6
EDGE_REACH_PX = 8.0
#: A blur outside this range (px) is not believed (no edge to measure, or a fit gone astray).
BLUR_RANGE_PX = (0.3, 6.0)
#: Plateaus wider than this many blur σ are left as measured (their deep pixels are beyond the blur's reach).
MAX_CORRECTED_WIDTH = 8.0
#: Plateaus dimmed less than this are left as measured.
MIN_CORRECTION = 0.03
#: The correction's own uncertainty, as a share of the correction (1/f − 1) times the contrast.
CORRECTION_UNCERTAINTY = 0.3


def edge_blur_px(contrast: np.ndarray, plateaus: list[Plateau]) -> float | None:
    """The image's blur σ (px) from the edges of its strong, large plateaus; None without such edges."""
    strong = sorted((p for p in plateaus if p.step_z >= EDGE_MIN_STEP_Z and p.interior_px >= EDGE_MIN_INTERIOR_PX),
                    key=lambda p: -p.step_z)[:EDGE_PLATEAUS]
    rows, cols = contrast.shape[:2]
    pad = int(EDGE_REACH_PX) + 1
    distances, values = [], []
    for p in strong:
        r0, c0, r1, c1 = p.bbox
        wr0, wc0, wr1, wc1 = max(r0 - pad, 0), max(c0 - pad, 0), min(r1 + pad, rows), min(c1 + pad, cols)
        mask = np.zeros((wr1 - wr0, wc1 - wc0), np.uint8)
        mask[r0 - wr0 : r1 - wr0, c0 - wc0 : c1 - wc0] = p.mask
        inside = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
        outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5)
        signed = np.where(mask > 0, inside - 0.5, 0.5 - outside)
        step = (p.contrast - p.surround).astype(np.float32)
        window = contrast[wr0:wr1, wc0:wc1].reshape(-1, contrast.shape[2])
        projected = ((window - p.surround.astype(np.float32)) @ step) / float(step @ step)
        signed = signed.ravel()
        near = np.abs(signed) <= EDGE_REACH_PX
        distances.append(signed[near])
        values.append(projected[near])
    if not distances:
        return None
    # The edge-spread profile: the median projected contrast per half-pixel of signed distance.
    bins, which = np.unique(np.round(np.concatenate(distances) * 2.0) / 2.0, return_inverse=True)
    if len(bins) < 8:
        return None
    profile = np.asarray(ndimage.median(np.concatenate(values), which, np.arange(len(bins))), float)

    def misfit(q: np.ndarray) -> np.ndarray:
        return q[0] + q[1] * 0.5 * (1.0 + erf((bins - q[2]) / (abs(q[3]) * math.sqrt(2.0)))) - profile

    fit = least_squares(misfit, [profile[0], profile[-1] - profile[0], 0.0, 1.0])
    sigma = abs(float(fit.x[3]))
    return sigma if BLUR_RANGE_PX[0] <= sigma <= BLUR_RANGE_PX[1] and fit.x[1] > 0 else None


def blur_attenuation(p: Plateau, sigma_px: float) -> float:
    """The share of its layer's contrast that a plateau's measured pixels show under a blur of ``sigma_px``."""
    pad = math.ceil(3.0 * sigma_px) + 1
    outline = np.pad(p.mask.astype(np.float32), pad)
    blurred = cv2.GaussianBlur(outline, (0, 0), sigma_px)[pad:-pad, pad:-pad]
    return float(np.clip(blurred[deep_pixels(p.mask)[0]].mean(), 0.05, 1.0))


def corrected(p: Plateau, sigma_px: float | None) -> tuple[np.ndarray, float, float]:
    """(contrast, its uncertainty, the share of its contrast the blur left) of a plateau with the blur's
    dimming undone; as measured (share 1) when the blur is unknown or dims it by less than ``MIN_CORRECTION``."""
    if sigma_px is None or p.width_px > MAX_CORRECTED_WIDTH * sigma_px:
        return p.contrast, p.uncertainty, 1.0
    share = blur_attenuation(p, sigma_px)
    if share > 1.0 - MIN_CORRECTION:
        return p.contrast, p.uncertainty, 1.0
    contrast = p.contrast / share
    extra = CORRECTION_UNCERTAINTY * (1.0 / share - 1.0) * float(np.sqrt(np.mean(p.contrast**2)))
    return contrast, float(math.hypot(p.uncertainty, extra)), share
