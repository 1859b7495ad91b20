"""Focus relative to the run: is this image softer than the sharpest images of the same setup?

How steep a focused edge looks depends on the objective, the pixel size, the camera and its processing
(JPEG, resizing): a threshold in absolute units declares the in-focus tiles of one microscope out of focus
and lets the soft ones of another through. What does not depend on the setup is the comparison: a tile of
the same scan, same objective and camera, whose edges are much softer than those of the run's sharpest
tiles is out of focus. So each setup keeps the edge sharpness of the images it has seen, and an image is
soft when its sharpness falls below ``SOFT_RATIO`` of the reference (a high quantile of that history).

An image's sharpness is the median rise per pixel, in step heights, across the rims of its plateaus with
a strong step (thick flakes make the best witnesses; a faint step's rim is mostly noise). An image with
fewer than ``MIN_WITNESSES`` such plateaus is not judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flakehunter.plugins.contrast.plateaus import Plateau

#: An image whose edges rise less than this fraction as steeply as the run's sharpest is out of focus.
#: Focused tiles of one run scatter by ~10-15 % (flake mix, JPEG, focus jitter); a blur 1.5x the focused
#: width gives ~0.7x (the sharpness is a mean over a 3-px band, which falls a little slower than 1/blur).
SOFT_RATIO = 0.7
#: Plateaus whose step stands this far above the noise (σ) are used to judge sharpness.
MIN_STEP_Z = 15.0
MIN_WITNESSES = 2
#: The reference is this quantile of the history (not its maximum: one freak value must not set it).
REFERENCE_QUANTILE = 0.8
HISTORY = 400


def image_sharpness(plateaus: Sequence[Plateau]) -> float | None:
    """Median edge steepness (step heights per pixel) of the plateaus with a strong step, or None."""
    values = [p.sharpness for p in plateaus if p.step_z >= MIN_STEP_Z and p.interior_px >= 12]
    if len(values) < MIN_WITNESSES:
        return None
    return float(np.median(values))


@dataclass
class FocusTracker:
    """The sharpness of the images of one setup so far, and the verdict on a new one."""

    history: list[float] = field(default_factory=list)

    def reference(self) -> float | None:
        if not self.history:
            return None
        if len(self.history) < 5:
            return float(max(self.history))
        return float(np.quantile(self.history, REFERENCE_QUANTILE))

    def judge(self, sharpness: float | None) -> tuple[bool, float | None]:
        """(soft, reference): soft when ``sharpness`` is below ``SOFT_RATIO`` of the reference so far."""
        reference = self.reference()
        if sharpness is None or reference is None:
            return False, reference
        return sharpness < SOFT_RATIO * reference, reference

    def observe(self, sharpness: float | None) -> None:
        if sharpness is not None:
            self.history.append(float(sharpness))
            del self.history[:-HISTORY]

    def state(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> FocusTracker:
        return cls([float(v) for v in data.get("history", [])])
