"""A layer ladder learnt from the data: which plateau contrast means 1, 2, 3 ... layers on this setup.

The plateaus of a scan (`plateaus`) cluster at a few contrasts: substrate-like residue, the thin layers,
thick flakes. The thin layers form a *ladder*: 1L, 2L, 3L ... lie on a curve from zero whose steps are
nearly equal (few-layer contrast grows almost linearly with layer count). The thin-film model
(`flakehunter.optics`) says in which colour direction that curve starts and how it bends, but its
magnitudes depend on what a new setup never tells: the oxide (anything from 50 to 320 nm, the user's
nominal value perhaps 15 nm off, or a guess), the camera's spectral response and tone curve, white
balance, the index data. So the model is a prior on direction and spacing only; `ladder_search` finds the
ladder (thin-film with oxide, tone curve and gains as nuisance parameters, or a plain linear ladder) that
best explains the clustered plateau contrasts, and the rungs the data support are then moved onto the data.

A fit reports each rung's contrast, spread and support (how many plateaus' worth of weight sit on it) and
a confidence: how much better the chosen ladder explains the data than the best ladder that puts the
heaviest cluster on another rung. `LadderLearner` keeps a setup's pool of plateaus and refits as images
arrive, with a state of plain arrays and JSON values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from flakehunter.materials import Material
from flakehunter.plugins.contrast.ladder_search import (
    FLOOR_SPREAD,
    GAMMAS,
    SCORED_RUNGS,
    THICKNESS_SCALES,
    TRUNCATE,
    Best,
    anchors,
    rung_spread,
    score,
    search_linear,
    search_thin_film,
    tone,
)

if TYPE_CHECKING:
    from flakehunter.optics import Film

#: Oxide range searched, nm (thermal oxides in use run from ~50 to ~320 nm).
OXIDE_RANGE_NM = (50.0, 320.0)
OXIDE_STEP_NM = 2.0
#: Rungs modelled; thicker plateaus are "other" for the ladder.
MODEL_RUNGS = 6
#: A rung's spread across the ladder (in colour), relative to its spread along it.
CROSS_SPREAD = 0.75


@dataclass
class LadderFit:
    """A ladder: the contrast of each rung (layer count 1..K), its spread and support.

    ``method``: "self-calibrated" (learnt from the data), "profile" (measured on this setup), "nominal" (the thin-film
    model at the nominal oxide), or "none" (no ladder found: thin plateaus are reported unclassified).
    """

    method: str
    rungs: np.ndarray  # (K, channels)
    spread: np.ndarray  # (K,) radius of one σ around each rung, contrast units
    support: np.ndarray  # (K,) plateaus on each rung (weighted)
    confidence: float = 0.0
    oxide_nm: float | None = None
    gamma: float | None = None
    gain: np.ndarray | None = None
    cost: float = float("nan")
    note: str = ""
    family: str = ""
    thickness_scale: float | None = None

    @property
    def usable(self) -> bool:
        return self.method != "none" and len(self.rungs) > 0

    def classify(self, points: np.ndarray, max_distance: float = TRUNCATE, uncertainty: np.ndarray | float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest rung (layer count, 0 for none within ``max_distance``) and the distance, in spreads.

        ``uncertainty``: each point's own standard error (a small plateau's median is less certain), added in
        quadrature to the rung's spread.

        Flakes of one layer count scatter mostly along the ladder (brightness: oxide gradients, vignetting
        left over); across it, in colour, they scatter less (``CROSS_SPREAD`` of the spread), so dust of the
        right darkness but the wrong colour stays off the rung.
        """
        points = np.asarray(points, float).reshape(-1, self.rungs.shape[1] if self.usable else points.shape[-1])
        if not self.usable:
            return np.zeros(len(points), int), np.full(len(points), np.inf)
        diff = points[:, None, :] - self.rungs[None, :, :]  # (N, K, C)
        unit = self.rungs / np.maximum(np.linalg.norm(self.rungs, axis=1, keepdims=True), 1e-9)
        along = np.einsum("nkc,kc->nk", diff, unit)
        across2 = np.maximum(np.einsum("nkc,nkc->nk", diff, diff) - along**2, 0.0)
        cross = CROSS_SPREAD if self.rungs.shape[1] > 1 else 1.0
        extra = np.broadcast_to(np.asarray(uncertainty, float), (len(points),))[:, None] ** 2
        spread2 = self.spread[None, :] ** 2 + extra
        d = np.sqrt(along**2 / spread2 + across2 / (cross**2 * self.spread[None, :] ** 2 + extra))
        best = np.argmin(d, axis=1)
        dist = d[np.arange(len(points)), best]
        layers = np.where(dist <= max_distance, best + 1, 0)
        return layers, dist

    def describe(self, report_layers: tuple[int, ...] | None = None) -> dict[str, Any]:
        """JSON-ready: per rung contrast, spread, support; the nuisance parameters; the confidence."""
        top = len(self.rungs) if report_layers is None else min(len(self.rungs), max(report_layers) + 1)
        out: dict[str, Any] = {
            "method": self.method,
            "confidence": round(float(self.confidence), 3),
            "ladder": [
                {
                    "layers": n + 1,
                    "contrast": [round(float(v), 4) for v in self.rungs[n]],
                    "spread": round(float(self.spread[n]), 4),
                    "support": round(float(self.support[n]), 1),
                }
                for n in range(top)
            ],
        }
        if self.oxide_nm is not None:
            out["oxide_nm"] = round(float(self.oxide_nm), 1)
        if self.gamma is not None:
            out["gamma"] = self.gamma
        if self.thickness_scale is not None:
            out["thickness_scale"] = self.thickness_scale
        if self.gain is not None:
            out["channel_gain"] = [round(float(g), 3) for g in self.gain]
        if self.family:
            out["family"] = self.family
        if self.note:
            out["note"] = self.note
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rungs": self.rungs.tolist(),
            "spread": self.spread.tolist(),
            "support": self.support.tolist(),
            "confidence": float(self.confidence),
            "oxide_nm": self.oxide_nm,
            "gamma": self.gamma,
            "gain": None if self.gain is None else self.gain.tolist(),
            "cost": None if math.isnan(self.cost) else float(self.cost),
            "note": self.note,
            "family": self.family,
            "thickness_scale": self.thickness_scale,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> LadderFit:
        channels = len(data["rungs"][0]) if data["rungs"] else 3
        return cls(
            data["method"],
            np.asarray(data["rungs"], float).reshape(-1, channels),
            np.asarray(data["spread"], float),
            np.asarray(data["support"], float),
            float(data.get("confidence", 0.0)),
            data.get("oxide_nm"),
            data.get("gamma"),
            None if data.get("gain") is None else np.asarray(data["gain"], float),
            float("nan") if data.get("cost") is None else float(data["cost"]),
            data.get("note", ""),
            data.get("family", ""),
            data.get("thickness_scale"),
        )


def no_ladder(channels: int, note: str) -> LadderFit:
    return LadderFit("none", np.zeros((0, channels)), np.zeros(0), np.zeros(0), 0.0, note=note)


_TABLES: dict[tuple[int, int, int, float], tuple[Material, np.ndarray, np.ndarray]] = {}


def _model_table(material: Material, channels: int, rungs: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(oxides (D,), contrasts (D, rungs, channels)) of the thin-film model over the oxide range, each layer's
    thickness times ``scale`` (cached)."""
    key = (id(material), channels, rungs, scale)
    if key in _TABLES and _TABLES[key][0] is material:
        return _TABLES[key][1], _TABLES[key][2]
    from flakehunter.optics import rgb_contrast_over_oxides
    from flakehunter.plugins.contrast.layers import MONO_WEIGHTS

    oxides = np.arange(OXIDE_RANGE_NM[0], OXIDE_RANGE_NM[1] + 1e-9, OXIDE_STEP_NM)
    # Every oxide at once (a per-oxide loop took half a second of each process's start for five scales).
    table = np.stack([
        rgb_contrast_over_oxides(_scaled_films(material, n, scale), oxides) for n in range(1, rungs + 1)
    ], axis=1)
    if channels == 1:
        table = (table @ MONO_WEIGHTS)[..., None]
    _TABLES[key] = (material, oxides, table)
    return oxides, table


def model_rungs(material: Material, oxide_nm: float, rungs: int, channels: int, thickness_scale: float = 1.0
                ) -> np.ndarray:
    """(rungs, channels) thin-film contrasts of 1..rungs layers at one oxide (γ = 1, unit gain), each layer's
    thickness times ``thickness_scale``."""
    from flakehunter.plugins.contrast.layers import MONO_WEIGHTS

    table = np.array([_layer_model(material, n, round(float(oxide_nm), 2), thickness_scale)
                      for n in range(1, rungs + 1)])
    return table if channels == 3 else (table @ MONO_WEIGHTS)[:, None]


def _layer_model(material: Material, layers: int, oxide_nm: float, thickness_scale: float) -> np.ndarray:
    """R, G, B model contrast of ``layers`` layers, their thickness times ``thickness_scale``."""
    from flakehunter.optics import layer_contrast, rgb_contrast

    if thickness_scale == 1.0:
        return layer_contrast(material, layers, oxide_nm)
    return rgb_contrast(_scaled_films(material, layers, thickness_scale), oxide_nm)


def _scaled_films(material: Material, layers: int, thickness_scale: float) -> list[Film]:
    """The film stack of ``layers`` layers (`optics.material_films`), each film's thickness times
    ``thickness_scale``."""
    from flakehunter.optics import material_films

    return [(index, thickness_scale * nm) for index, nm in material_films(material, layers)]


@dataclass
class Clusters:
    """Plateau contrasts grouped into weighted clusters (greedy, heaviest first)."""

    centres: np.ndarray  # (J, channels)
    weights: np.ndarray  # (J,)
    counts: np.ndarray  # (J,)
    members: list[np.ndarray] = field(default_factory=list)


def cluster(points: np.ndarray, weights: np.ndarray, floor: float = FLOOR_SPREAD) -> Clusters:
    """Group plateau contrasts within about one rung spread of each other; deterministic."""
    points = np.asarray(points, float)
    weights = np.asarray(weights, float)
    channels = points.shape[1] if points.ndim == 2 else 3
    if len(points) == 0:
        return Clusters(np.zeros((0, channels)), np.zeros(0), np.zeros(0), [])
    radius = 1.5 * rung_spread(points, floor)
    order = np.lexsort((np.arange(len(points)), -weights))
    centres: list[np.ndarray] = []
    members: list[list[int]] = []
    for i in order:
        if centres:
            c = np.array(centres)
            d = np.linalg.norm(c - points[i], axis=1)
            j = int(np.argmin(d))
            if d[j] <= radius[i]:
                members[j].append(i)
                idx = np.array(members[j])
                centres[j] = np.average(points[idx], axis=0, weights=weights[idx])
                continue
        centres.append(points[i].copy())
        members.append([i])
    idx_lists = [np.array(m) for m in members]
    return Clusters(
        np.array(centres), np.array([weights[m].sum() for m in idx_lists]), np.array([len(m) for m in idx_lists]),
        idx_lists,
    )


def fit_ladder(
    points: np.ndarray,
    weights: np.ndarray,
    material: Material,
    nominal_oxide_nm: float,
    *,
    floor: float = FLOOR_SPREAD,
    rungs: int = MODEL_RUNGS,
    max_clusters: int = 24,
    min_support: float = 0.2,
) -> LadderFit:
    """The ladder that best explains the plateau contrasts ``points`` (N, channels) with ``weights`` (N,).

    ``floor`` is the smallest rung spread (raise it for noisy images). Returns a "none" fit when no
    ladder puts at least ``min_support`` of weight on its first rungs.
    """
    points = np.asarray(points, float)
    weights = np.asarray(weights, float)
    channels = points.shape[1] if points.ndim == 2 and len(points) else 3
    if len(points) == 0 or weights.sum() <= 0:
        return no_ladder(channels, "no plateaus to learn a ladder from")
    groups = cluster(points, weights, floor)
    # The search runs on the heaviest clusters (the rest are specks); the final rungs use every plateau.
    top = np.sort(np.argsort(-groups.weights, kind="stable")[:max_clusters])
    x, w = groups.centres[top], groups.weights[top]
    anchor_list = anchors(x, w, floor)
    if not anchor_list:
        return no_ladder(channels, f"no plateau stands clear of the substrate among {len(points)}")
    oxides, table = _model_table(material, channels, rungs)
    tables = np.stack([_model_table(material, channels, rungs, s)[1] for s in THICKNESS_SCALES])
    physics, cost_p, assign_p = search_thin_film(x, w, oxides, tables, THICKNESS_SCALES, floor, nominal_oxide_nm,
                                                  anchor_list)
    first = np.concatenate([tone(table[:, 0, :], g) for g in GAMMAS])
    linear, cost_l, assign_l = search_linear(x, w, rungs, floor, anchor_list, first)
    best = physics if physics.cost <= linear.cost else linear
    _, assign = score(x, w, best.rungs[None], floor)
    on = np.flatnonzero((assign[0] >= 0) & (assign[0] < SCORED_RUNGS))
    if not np.isfinite(best.cost) or w[on].sum() < min_support:
        return no_ladder(channels, f"no ladder explains the {len(points)} plateau(s)")
    # Confidence: against the best ladder (of either family) that puts the heaviest supporting cluster on
    # another rung.
    key = on[np.argmax(w[on])]
    rung_of_key = assign[0, key]
    costs = np.r_[cost_p, cost_l]
    keys = np.r_[assign_p[:, key], assign_l[:, key]]
    other = keys != rung_of_key
    delta = float(np.min(costs[other]) - best.cost) if other.any() else 50.0
    best.confidence = 1.0 / (1.0 + math.exp(-min(delta, 50.0)))
    _, full = score(groups.centres, groups.weights, best.rungs[None], floor)
    fit = _finish(points, weights, groups, full[0], best, floor)
    if best.family == "thin-film" and best.gamma is not None:
        fit.oxide_nm = _refine_oxide(fit, material, channels, best.oxide_nm or nominal_oxide_nm, best.gamma,
                                     best.thickness_scale)
    return fit


def _refine_oxide(fit: LadderFit, material: Material, channels: int, oxide_nm: float, gamma: float,
                  thickness_scale: float = 1.0) -> float:
    """The oxide (to 0.5 nm, within 8 nm of the search's) whose model rungs, scaled by one common factor,
    pass closest to the supported rungs: the search's per-channel gains can trade a few nm of oxide for a
    few % of colour, the common factor alone cannot."""
    supported = np.flatnonzero(fit.support > 0)
    if supported.size < 2:
        return oxide_nm
    data = fit.rungs[supported]
    weight = np.sqrt(fit.support[supported])[:, None]
    best, best_cost = oxide_nm, np.inf
    for oxide in np.arange(max(OXIDE_RANGE_NM[0], oxide_nm - 8.0), min(OXIDE_RANGE_NM[1], oxide_nm + 8.0) + 1e-9,
                           0.5):
        m = tone(model_rungs(material, float(oxide), int(supported.max()) + 1, channels, thickness_scale),
                 gamma)[supported]
        scale = float(np.sum(weight * data * m) / max(np.sum(weight * m * m), 1e-12))
        cost = float(np.sum(weight * (data - scale * m) ** 2))
        if cost < best_cost:
            best, best_cost = float(oxide), cost
    return best


def _finish(
    points: np.ndarray, weights: np.ndarray, groups: Clusters, assign: np.ndarray, best: Best, floor: float
) -> LadderFit:
    """Move supported rungs onto their data (shrunk towards the model) and measure spreads and support."""
    rung_model = best.rungs
    k = len(rung_model)
    rungs = rung_model.copy()
    spread = rung_spread(rung_model, floor)
    support = np.zeros(k)
    for n in range(k):
        clusters = np.flatnonzero(assign == n)
        if clusters.size == 0:
            continue
        idx = np.concatenate([groups.members[j] for j in clusters])
        wn = weights[idx]
        support[n] = float(wn.sum())
        mean = np.average(points[idx], axis=0, weights=wn)
        prior_weight = 1.0  # the model rung counts as one plateau
        rungs[n] = (prior_weight * rung_model[n] + wn.sum() * mean) / (prior_weight + wn.sum())
        if len(idx) >= 3:
            dev = np.linalg.norm(points[idx] - rungs[n], axis=1)
            measured = 1.4826 * float(np.median(dev)) / math.sqrt(points.shape[1])
            spread[n] = float(np.clip(measured, 0.7 * spread[n], 1.5 * spread[n]))
    note = "" if best.family == "thin-film" else "linear ladder: the thin-film model did not fit this setup"
    return LadderFit("self-calibrated", rungs, spread, support, best.confidence, best.oxide_nm, best.gamma,
                     best.gain, best.cost, note, best.family,
                     best.thickness_scale if best.family == "thin-film" else None)


def pinned_ladder(method: str, rungs: np.ndarray, spread: np.ndarray, note: str = "",
                  oxide_nm: float | None = None) -> LadderFit:
    """A ladder given from outside (a measured profile, or the model at the nominal oxide)."""
    rungs = np.asarray(rungs, float)
    return LadderFit(method, rungs, np.asarray(spread, float), np.zeros(len(rungs)), 1.0, oxide_nm, note=note)


#: A new search once the pool's weight has grown by this factor since the last one.
REFIT_GROWTH = 1.5
MAX_POOL = 3000


class LadderLearner:
    """The plateaus of one setup so far and the ladder they support; refits as images arrive.

    Deterministic given the images in order, and its whole state is plain arrays and JSON values, so a
    resumed run reaches the same ladder as an uninterrupted one.
    """

    def __init__(self, material: Material, nominal_oxide_nm: float, channels: int, max_rungs: int = MODEL_RUNGS):
        self.material = material
        self.nominal_oxide_nm = nominal_oxide_nm
        self.channels = channels
        self.max_rungs = max_rungs
        self.points = np.zeros((0, channels))
        self.weights = np.zeros(0)
        self.floors: list[float] = []
        self.fit: LadderFit | None = None
        self.fitted_weight = 0.0

    @property
    def images(self) -> int:
        return len(self.floors)

    def floor(self) -> float:
        return max(FLOOR_SPREAD, float(np.median(self.floors))) if self.floors else FLOOR_SPREAD

    def add(self, points: np.ndarray, weights: np.ndarray, floor: float) -> None:
        """Pool one image's plateau contrasts (N, channels), their weights and the image's noise floor."""
        self.floors.append(float(floor))
        if len(points):
            self.points = np.vstack([self.points, np.asarray(points, float).reshape(-1, self.channels)])[-MAX_POOL:]
            self.weights = np.concatenate([self.weights, np.asarray(weights, float)])[-MAX_POOL:]
        return True

    def update(self) -> LadderFit:
        """The current ladder, refitted when the pool has grown enough since the last search."""
        total = float(self.weights.sum())
        if self.fit is None or total >= REFIT_GROWTH * self.fitted_weight:
            self.fit = fit_ladder(self.points, self.weights, self.material, self.nominal_oxide_nm,
                                  floor=self.floor(), rungs=self.max_rungs)
            self.fitted_weight = total
        return self.fit

    def state(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}points": self.points.copy(),
            f"{prefix}weights": self.weights.copy(),
            f"{prefix}learner": {
                "floors": list(self.floors),
                "fitted_weight": self.fitted_weight,
                "fit": None if self.fit is None else self.fit.to_state(),
            },
        }

    def load_state(self, state: dict[str, Any], prefix: str) -> None:
        self.points = np.asarray(state[f"{prefix}points"], float).reshape(-1, self.channels)
        self.weights = np.asarray(state[f"{prefix}weights"], float)
        info = state[f"{prefix}learner"]
        self.floors = [float(v) for v in info["floors"]]
        self.fitted_weight = float(info["fitted_weight"])
        self.fit = None if info["fit"] is None else LadderFit.from_state(info["fit"])
