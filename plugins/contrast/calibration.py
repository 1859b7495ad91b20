"""The oxide thickness whose thin-film curve passes closest to measured per-layer contrasts.

A material profile (`profile`) records, besides its measured per-layer contrasts, the oxide that best
explains them: `fit_oxide` finds the oxide thickness (and, optionally, a small per-channel gain for another
lamp or camera) whose curve of 1..K layers passes closest to the points, with a truncated quadratic loss
so that points off the curve (thick flakes, residue) do not pull it, within ±``search_nm`` of the nominal
value. The detector itself no longer fits the oxide this way: it learns a layer ladder from the data
(`ladder`), which searches every oxide and the camera's response.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flakehunter.materials import Material


@dataclass(frozen=True)
class Calibration:
    """How the layer model was set up: method, oxide, per-channel gain, and the evidence behind it."""

    method: str  # "nominal", "self-calibrated", "profile"
    oxide_nm: float
    channel_gain: tuple[float, ...] = (1.0, 1.0, 1.0)
    regions: int = 0
    inliers: int = 0
    residual: float = float("nan")
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        out = {
            "method": self.method,
            "oxide_nm": round(self.oxide_nm, 2),
            "channel_gain": [round(g, 4) for g in self.channel_gain],
            "regions": self.regions,
            "inliers": self.inliers,
            "residual": None if math.isnan(self.residual) else round(self.residual, 4),
        }
        if self.note:
            out["note"] = self.note
        out.update(self.extra)
        return out


def curve_nodes(material: Material, oxide_nm: float, max_layers: int, channels: int = 3) -> np.ndarray:
    """(max_layers + 1, channels) predicted contrasts of 0..max_layers layers."""
    from flakehunter.optics import layer_contrast
    from flakehunter.plugins.contrast.layers import MONO_WEIGHTS

    rgb = np.array([layer_contrast(material, n, round(oxide_nm, 2)) for n in range(1, max_layers + 1)])
    nodes = rgb if channels == 3 else (rgb @ MONO_WEIGHTS)[:, None]
    return np.vstack([np.zeros((1, channels)), nodes])


def distance_to_curve(points: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Distance of each point to the polyline through ``nodes``."""
    best = np.full(len(points), np.inf)
    for a, b in itertools.pairwise(nodes):
        ab = b - a
        t = np.clip((points - a) @ ab / float(ab @ ab), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best


def fit_oxide(
    points: np.ndarray,
    weights: np.ndarray,
    material: Material,
    nominal_oxide_nm: float,
    *,
    search_nm: float = 15.0,
    fit_gain: bool = True,
    max_layers: int = 15,
    tolerance: float = 0.03,
    min_inliers: int = 8,
) -> Calibration:
    """The oxide thickness (and channel gains) whose thin-film curve best fits the plateau points.

    ``tolerance`` is the truncation of the loss: points farther than that from the curve (thick
    flakes, residue, dust) add a constant. A calibration needs ``min_inliers`` points on the curve
    that are not bare substrate; otherwise the nominal oxide is returned with a note.
    """
    from scipy.optimize import minimize

    points = np.asarray(points, float)
    weights = np.asarray(weights, float)
    channels = points.shape[1] if points.ndim == 2 and len(points) else 3
    if len(points) == 0:
        return Calibration("nominal", nominal_oxide_nm, note="no uniform regions found to calibrate on")

    def cost(oxide: float, gain: np.ndarray) -> tuple[float, np.ndarray]:
        nodes = curve_nodes(material, oxide, max_layers, channels) * gain[None, :]
        d = distance_to_curve(points, nodes)
        return float(np.sum(weights * np.minimum(d, tolerance) ** 2)), d

    unit = np.ones(channels)
    grid = np.arange(nominal_oxide_nm - search_nm, nominal_oxide_nm + search_nm + 1e-9, 0.5)
    costs = [cost(d, unit)[0] for d in grid]
    best = float(grid[int(np.argmin(costs))])
    if abs(best - nominal_oxide_nm) >= search_nm - 0.25:
        # The data pull beyond the plausible range: another oxide, material or camera than the config says,
        # or regions that are not this material at all. A fit pinned at the edge of the range means nothing.
        return Calibration(
            "nominal", nominal_oxide_nm, regions=len(points),
            note=f"the best fit lies at the edge of the search range ({best:g} nm for a nominal "
            f"{nominal_oxide_nm:g} ± {search_nm:g} nm); check material and oxide_nm, or calibrate a profile",
        )
    oxide, gain = best, unit
    if fit_gain and channels > 1:
        prior = 0.05 * float(np.sum(weights)) * tolerance**2  # a 5 % gain error costs about one outlier's worth

        def objective(x: np.ndarray) -> float:
            return cost(float(x[0]), x[1:])[0] + prior * float(np.sum(((x[1:] - 1) / 0.05) ** 2))

        res = minimize(objective, np.r_[best, unit], method="Nelder-Mead",
                       options={"xatol": 0.05, "fatol": 1e-9, "maxiter": 400})
        if abs(res.x[0] - nominal_oxide_nm) <= search_nm + 1 and np.all(np.abs(res.x[1:] - 1) < 0.3):
            oxide, gain = float(res.x[0]), np.asarray(res.x[1:], float)
    _total, d = cost(oxide, gain)
    inlier = d < tolerance
    first = curve_nodes(material, oxide, 1, channels)[1] * gain
    layered = inlier & (np.linalg.norm(points, axis=1) > 0.5 * np.linalg.norm(first))
    residual = float(np.sqrt(np.average(d[inlier] ** 2, weights=weights[inlier]))) if inlier.any() else math.nan
    if layered.sum() < min_inliers:
        return Calibration(
            "nominal", nominal_oxide_nm, regions=len(points), inliers=int(layered.sum()), residual=residual,
            note=f"only {int(layered.sum())} flake regions on the thin-film curve (need {min_inliers})",
        )
    return Calibration(
        "self-calibrated", oxide, tuple(float(g) for g in gain), regions=len(points),
        inliers=int(layered.sum()), residual=residual,
    )
