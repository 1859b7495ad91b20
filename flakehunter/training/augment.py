"""Augmentation that keeps labels true.

* **Geometry:** the eight symmetries of the square (`angles.Dihedral`). A class label is unchanged; an
  angle label θ (modulo the material's period P) is mapped exactly: a transpose sends θ to 90° − θ, a
  quarter turn sends θ to θ − 90° (unchanged modulo 30°, shifted by 30° modulo 60°), a flip sends θ to −θ.
  Random crops translate only, which changes no label.
* **Photometry within physical limits:** an overall exposure gain and a small per-channel (white-balance)
  gain. Both multiply every pixel of a channel alike, so the optical contrast I/I_substrate − 1 that
  encodes a flake's thickness is unchanged. Hue shifts, saturation changes and additive offsets would
  change that contrast (and so the true layer count) and are deliberately not offered. Values are
  clipped at 1 as a sensor saturates.
* **Camera effects:** Gaussian read/shot noise and a slight defocus blur.

Every random choice comes from the ``numpy.random.Generator`` passed in, so a (seed, epoch, draw) key
reproduces an augmented sample exactly, whatever the worker or resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flakehunter.training.angles import Dihedral


class AugmentSpec(BaseModel):
    """Training-time augmentation; every amplitude is a maximum, drawn uniformly per sample."""

    model_config = ConfigDict(extra="forbid")

    dihedral: bool = Field(True, description="random rotations by 90° and flips (angle labels are mapped)")
    exposure: float = Field(0.1, ge=0, lt=1, description="overall gain in [1 − e, 1 + e]")
    white_balance: float = Field(0.02, ge=0, lt=0.5, description="per-channel gain in [1 − w, 1 + w]")
    noise: float = Field(0.01, ge=0, le=0.5, description="Gaussian noise sigma, in full-scale units")
    blur_sigma_px: float = Field(0.0, ge=0, le=5, description="defocus blur sigma (applied to half the samples)")


@dataclass(frozen=True)
class Augmenter:
    """Applies an `AugmentSpec` (training) or only the centre crop (``spec=None``, evaluation).

    ``crop_px``: output size; training crops at a random position, evaluation at the centre. ``task`` is
    "classify" or "angle" (then ``period_deg`` is used to map θ under the dihedral transforms).
    """

    spec: AugmentSpec | None
    crop_px: int | None
    task: str = "classify"
    period_deg: float = 30.0

    def __call__(
        self, image: np.ndarray, target: float, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, float]:
        if self.spec is None or rng is None:
            return centre_crop(image, self.crop_px), target
        spec = self.spec
        image = random_crop(image, self.crop_px, rng)
        if spec.dihedral:
            element = Dihedral(int(rng.integers(8)))
            image = element.image(image)
            if self.task == "angle":
                target = element.angle(float(target), self.period_deg)
        image = photometric(image, spec, rng)
        return image, target


def random_crop(image: np.ndarray, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """A size x size window at a uniformly random position (the whole image when size is None)."""
    if size is None:
        return image
    h, w = image.shape[:2]
    _check_size(h, w, size)
    r = int(rng.integers(h - size + 1))
    c = int(rng.integers(w - size + 1))
    return image[r : r + size, c : c + size]


def centre_crop(image: np.ndarray, size: int | None) -> np.ndarray:
    """The central size x size window (the whole image when size is None)."""
    if size is None:
        return image
    h, w = image.shape[:2]
    _check_size(h, w, size)
    r, c = (h - size) // 2, (w - size) // 2
    return image[r : r + size, c : c + size]


def _check_size(h: int, w: int, size: int) -> None:
    if size > h or size > w:
        raise ValueError(f"crop of {size} px does not fit a {h} x {w} image")


def photometric(image: np.ndarray, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """Exposure and white-balance gains, optional blur, noise; clipped to [0, 1]. Returns a new array."""
    out: np.ndarray = image.astype(np.float32, copy=True)  # wider than float32: cv2 is typed as returning MatLike
    gain = rng.uniform(1 - spec.exposure, 1 + spec.exposure) if spec.exposure else 1.0
    channel = rng.uniform(1 - spec.white_balance, 1 + spec.white_balance, size=3) if spec.white_balance else 1.0
    out *= (gain * np.asarray(channel)).astype(np.float32)
    if spec.blur_sigma_px and rng.random() < 0.5:
        sigma = float(rng.uniform(0.0, spec.blur_sigma_px))
        if sigma > 0.05:
            out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    if spec.noise:
        sigma = float(rng.uniform(0.0, spec.noise))
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
    np.clip(out, 0.0, 1.0, out=out)
    return out
