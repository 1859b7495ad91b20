"""The layer ladder cnn-thickness learns by itself when no detector before it classifies (it runs alone).

The thin regions the network finds (junk already set apart by the network) are pooled per setup and fitted
with the contrast plugin's ladder learner (`flakehunter.plugins.contrast.ladder.LadderLearner`, issue 12: the
thin-film model as a prior on direction and spacing only, oxide and camera unknown). A region then gets the
layer count of the rung its median contrast sits on; a region on no rung is not a thin flake of this setup.

A setup is what the images share: size, channels, pixel size and substrate colour (its chromaticity within a
few per cent), so a folder of photos from several microscopes gets a ladder per microscope.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from flakehunter.materials import Material
from flakehunter.training.segment_input import GridContrast

#: Substrate chromaticities (log ratios to the mean) closer than this belong to one setup.
CHROMA_TOLERANCE = 0.06
#: Rungs the ladder models (thicker regions are "other").
MODEL_RUNGS = 6


class OwnLadders:
    """Ladders per setup, learnt from the network's thin regions; state is plain arrays and JSON values."""

    def __init__(self, material: Material, nominal_oxide_nm: float) -> None:
        self.material = material
        self.nominal_oxide_nm = nominal_oxide_nm
        self.keys: list[dict[str, Any]] = []
        self.learners: list[Any] = []

    def setup_of(self, grid: GridContrast, channels: int, pixel_um: float | None) -> int:
        """The index of the setup an image belongs to (a new one when none matches)."""
        level = np.median(grid.background.reshape(-1, grid.background.shape[-1]), axis=0)
        logs = np.log(np.maximum(level, 1e-6))
        chroma = (logs - logs.mean()).tolist()
        key = {"shape": list(grid.shape), "channels": channels, "pixel_um": pixel_um, "chroma": chroma}
        for i, k in enumerate(self.keys):
            same = k["shape"] == key["shape"] and k["channels"] == channels and (
                (k["pixel_um"] is None and pixel_um is None) or (
                    k["pixel_um"] is not None and pixel_um is not None
                    and abs(math.log(k["pixel_um"] / pixel_um)) < 0.05))
            if same and max(abs(a - b) for a, b in zip(k["chroma"], chroma, strict=True)) <= CHROMA_TOLERANCE:
                return i
        from flakehunter.plugins.contrast.ladder import LadderLearner

        self.keys.append(key)
        self.learners.append(LadderLearner(self.material, self.nominal_oxide_nm, 3, MODEL_RUNGS))
        return len(self.keys) - 1

    def add(self, setup: int, points: np.ndarray, weights: np.ndarray, floor: float) -> None:
        self.learners[setup].add(np.asarray(points, float).reshape(-1, 3), np.asarray(weights, float), floor)

    def fit(self, setup: int) -> Any:
        """The setup's current ladder (a `LadderFit`; ``usable`` False when none was found)."""
        return self.learners[setup].update()

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"own_setups": [dict(k) for k in self.keys]}
        for i, learner in enumerate(self.learners):
            out.update(learner.state(f"own{i}:"))
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        keys = state.get("own_setups")
        if not isinstance(keys, list):
            return
        from flakehunter.plugins.contrast.ladder import LadderLearner

        self.keys = [dict(k) for k in keys]
        self.learners = []
        for i in range(len(self.keys)):
            learner = LadderLearner(self.material, self.nominal_oxide_nm, 3, MODEL_RUNGS)
            learner.load_state(state, f"own{i}:")
            self.learners.append(learner)
