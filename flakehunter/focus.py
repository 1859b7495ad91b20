"""Autofocus: sharpness metrics, a coarse-to-fine z search, and a focus map used during scans.

**Metrics** (reference note §9) score how sharp a frame is; each peaks at best focus:

* ``tenengrad`` (default): mean of Gx² + Gy² with 3x3 Sobel kernels (Micro-Manager, Squid);
* ``laplacian``: mean squared Laplacian after a 1-pixel Gaussian, the "energy of the Laplacian" (Squid's
  LAPE) made robust to shot noise;
* ``normalized_variance``: σ²/µ of the grey image (Micro-Manager OughtaFocus), insensitive to lamp level
  but, on low-magnification frames, dominated by vignetting and large objects: on the simulator's
  tilted chip it missed focus by up to 25 µm where tenengrad stayed within 1.6 µm.

**Search** (`autofocus`): a coarse sweep over ``range_um`` around a seed, then a fine sweep around the
coarse peak, then a parabola through the log-scores of the best fine step and its neighbours. Every
sweep, and the final move, approaches z **from below** (after going ``backlash_um`` under the first z),
so lead-screw backlash shifts every measurement the same way (OpenFlexure, Squid). A result is
refused (``valid = False``) when the frame has no structure to focus on (the best score is less than
``min_contrast`` times the worst) or when the peak lies at the edge of the range (focus may be outside).

**Focus map** (`FocusMap`): a plane (≥ 3 points) or a quadratic surface (≥ 6 points) fitted to measured
(x, y, z) points. Implausible points, those that leave the surface by more than ``max_slope_um_per_mm``
times their distance to the nearest other point (OpenFlexure's ``limit_focus_change``), are rejected one
at a time, worst first, while enough points remain.

**During a scan** (`make_focus_strategy`, ``focus:`` in the config): ``none`` and ``plane`` keep the
planned z; ``map`` autofocuses at a grid of points (or the given ``map_points_um``) before the first tile
and takes every tile's z from the fitted surface; ``autofocus`` does that and also refocuses every
``every_n_tiles`` tiles at the tile itself, seeded by the map, accepting the result only if it is
plausible and adding it to the map.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import cv2
import numpy as np

from flakehunter.errors import ConfigError, HardwareError

if TYPE_CHECKING:
    from pathlib import Path

    from flakehunter.config import FocusConfig, RegionConfig
    from flakehunter.devices import Camera, Stage, TravelLimits
    from flakehunter.geometry import TilePlan

log = logging.getLogger(__name__)


# -- sharpness metrics ----------------------------------------------------------------------------------


def _grey(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr.mean(axis=2, dtype=np.float32)
    return arr.astype(np.float32, copy=False)


def normalized_variance(image: np.ndarray) -> float:
    """σ²/µ of the grey image."""
    g = _grey(image)
    mean = float(g.mean())
    return float(g.var()) / mean if mean > 0 else 0.0


def laplacian_energy(image: np.ndarray) -> float:
    """Mean squared Laplacian of the grey image after a 1-pixel Gaussian (energy of the LoG).

    Without the pre-blur the pixel-scale shot noise dominates the energy on low-magnification frames
    and a 0.5 % lamp flicker moves the peak by tens of µm (measured on the simulator).
    """
    grey = cv2.GaussianBlur(_grey(image), (0, 0), 1.0)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    return float(np.mean(lap * lap))


def tenengrad(image: np.ndarray) -> float:
    """Mean of Gx² + Gy² with 3x3 Sobel kernels."""
    g = _grey(image)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.mean(gx * gx + gy * gy))


METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "normalized_variance": normalized_variance,
    "laplacian": laplacian_energy,
    "tenengrad": tenengrad,
}


# -- the z search ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSettings:
    """How `autofocus` searches; the fields of the config's ``focus:`` section of the same names."""

    metric: str = "tenengrad"
    range_um: float = 100.0
    coarse_step_um: float = 10.0
    fine_step_um: float = 2.0
    backlash_um: float = 20.0
    min_contrast: float = 1.1


@dataclass
class FocusResult:
    """One autofocus run at (x_um, y_um): the best z, whether to trust it, and every score measured."""

    x_um: float
    y_um: float
    z_um: float
    valid: bool
    reason: str = ""
    scores: list[tuple[float, float]] = field(default_factory=list)  # (z_um, metric), in measuring order

    @property
    def frames(self) -> int:
        return len(self.scores)


def _sweep(
    stage: Stage, camera: Camera, x_um: float, y_um: float, zs: np.ndarray, metric: Callable[[np.ndarray], float],
    backlash_um: float, z_min: float, scores: list[tuple[float, float]],
) -> np.ndarray:
    """Measure the metric at ``zs`` (ascending), approaching the first from ``backlash_um`` below."""
    stage.move_to_um(x_um, y_um, max(z_min, float(zs[0]) - backlash_um))
    values = []
    for z in zs:
        stage.move_to_um(x_um, y_um, float(z))
        value = metric(camera.snap())
        scores.append((float(z), value))
        values.append(value)
    return np.asarray(values)


def _parabola_peak(zs: np.ndarray, values: np.ndarray, i: int) -> float:
    """Vertex of the parabola through the log-scores at i-1, i, i+1 (a Gaussian peak's exact fit)."""
    if i <= 0 or i >= len(zs) - 1:
        return float(zs[i])
    y0, y1, y2 = np.log(np.maximum(values[i - 1 : i + 2], 1e-30))
    denom = y0 - 2 * y1 + y2
    if denom >= 0:  # not a maximum
        return float(zs[i])
    step = float(zs[i + 1] - zs[i])
    offset = float(0.5 * step * (y0 - y2) / denom)
    return float(zs[i]) + offset


def autofocus(
    stage: Stage, camera: Camera, x_um: float, y_um: float, z_seed_um: float, settings: SearchSettings,
) -> FocusResult:
    """Find the sharpest z at (x_um, y_um) by a coarse then a fine sweep around ``z_seed_um``.

    The search window is kept inside the stage's z soft limits (a search range, not a move target);
    every move goes through ``stage.move_to_um``, which refuses anything outside them. The stage is
    left at the returned z (approached from below) when the result is valid, else at the seed.
    """
    metric = METRICS[settings.metric]
    z_lo_limit, z_hi_limit = stage.limits.z.min_um, stage.limits.z.max_um
    half = settings.range_um / 2
    lo = max(z_seed_um - half, z_lo_limit + settings.backlash_um)
    hi = min(z_seed_um + half, z_hi_limit)
    if hi - lo < 2 * settings.coarse_step_um:
        raise HardwareError(
            f"autofocus at ({x_um:.0f}, {y_um:.0f}) µm: the z search {z_seed_um - half:.1f}..{z_seed_um + half:.1f} µm "
            f"does not fit inside the stage's z limits [{z_lo_limit:g}, {z_hi_limit:g}] µm"
        )
    scores: list[tuple[float, float]] = []
    coarse = np.arange(lo, hi + 1e-9, settings.coarse_step_um)
    values = _sweep(stage, camera, x_um, y_um, coarse, metric, settings.backlash_um, z_lo_limit, scores)
    i = int(np.argmax(values))
    contrast = float(values.max() / values.min()) if values.min() > 0 else math.inf
    if contrast < settings.min_contrast:
        stage.move_to_um(x_um, y_um, z_seed_um)
        return FocusResult(x_um, y_um, z_seed_um, False,
                           f"no structure to focus on (best/worst score {contrast:.3f})", scores)
    at_edge = i == 0 or i == len(coarse) - 1
    fine = np.arange(coarse[i] - settings.coarse_step_um, coarse[i] + settings.coarse_step_um + 1e-9,
                     settings.fine_step_um)
    fine = fine[(fine >= lo) & (fine <= hi)]
    fine_values = _sweep(stage, camera, x_um, y_um, fine, metric, settings.backlash_um, z_lo_limit, scores)
    j = int(np.argmax(fine_values))
    best = min(max(_parabola_peak(fine, fine_values, j), lo), hi)
    if at_edge and (j == 0 or j == len(fine) - 1):
        stage.move_to_um(x_um, y_um, z_seed_um)
        return FocusResult(x_um, y_um, z_seed_um, False,
                           f"sharpest at the edge of the search range ({best:.1f} µm); focus may lie outside", scores)
    stage.move_to_um(x_um, y_um, max(z_lo_limit, best - settings.backlash_um))
    stage.move_to_um(x_um, y_um, best)
    return FocusResult(x_um, y_um, best, True, "", scores)


# -- the focus map --------------------------------------------------------------------------------------


class FocusMap:
    """z(x, y) from measured points: a plane, or a quadratic surface once there are ≥ 6 points.

    Args:
        surface: ``"plane"`` or ``"quadratic"`` (falls back to a plane with fewer than 6 points).
        max_slope_um_per_mm: how steeply focus may plausibly change between neighbouring points.
        tolerance_um: a floor on what counts as implausible, for points very close together.
    """

    def __init__(self, surface: str = "plane", max_slope_um_per_mm: float = 50.0, tolerance_um: float = 5.0) -> None:
        if surface not in ("plane", "quadratic"):
            raise ValueError(f"surface must be 'plane' or 'quadratic', got {surface!r}")
        self.surface = surface
        self.max_slope = max_slope_um_per_mm / 1000.0
        self.tolerance_um = tolerance_um
        self.points: list[tuple[float, float, float]] = []
        self.rejected: list[tuple[float, float, float]] = []
        self._coef: np.ndarray | None = None
        self._centre = (0.0, 0.0)
        self._scale = 1.0

    def _terms(self, x: np.ndarray, y: np.ndarray, quadratic: bool) -> np.ndarray:
        u = (np.asarray(x, float) - self._centre[0]) / self._scale
        v = (np.asarray(y, float) - self._centre[1]) / self._scale
        cols = [np.ones_like(u), u, v]
        if quadratic:
            cols += [u * u, u * v, v * v]
        return np.column_stack(cols)

    @property
    def quadratic(self) -> bool:
        return self.surface == "quadratic" and len(self.points) >= 6

    def fit(self, points: list[tuple[float, float, float]]) -> FocusMap:
        """Fit the surface to ``points``, dropping implausible ones (worst first)."""
        pts = [(float(x), float(y), float(z)) for x, y, z in points]
        if len(pts) < 1:
            raise ValueError("a focus map needs at least one point")
        self.rejected = []
        while True:
            self._solve(pts)
            if len(pts) <= 3:
                break
            worst, excess = self._worst(pts)
            if excess <= 0:
                break
            self.rejected.append(pts.pop(worst))
            log.info("focus map: rejected implausible point %s", self.rejected[-1])
        self.points = pts
        self._solve(pts)
        return self

    def add(self, point: tuple[float, float, float]) -> None:
        """Add one measurement already found plausible, and refit (without re-screening the others)."""
        x, y, z = point
        self._solve([*self.points, (float(x), float(y), float(z))])

    def _solve(self, pts: list[tuple[float, float, float]]) -> None:
        arr = np.asarray(pts, float)
        self.points = list(pts)
        self._centre = (float(arr[:, 0].mean()), float(arr[:, 1].mean()))
        spread = float(np.hypot(arr[:, 0] - self._centre[0], arr[:, 1] - self._centre[1]).max())
        self._scale = spread if spread > 0 else 1.0
        if len(pts) < 3:
            self._coef = np.array([arr[:, 2].mean(), 0.0, 0.0])
            return
        a = self._terms(arr[:, 0], arr[:, 1], self.quadratic)
        self._coef, *_ = np.linalg.lstsq(a, arr[:, 2], rcond=None)

    def _worst(self, pts: list[tuple[float, float, float]]) -> tuple[int, float]:
        """Index of the least plausible point and how far beyond plausible it is (≤ 0: fine)."""
        arr = np.asarray(pts, float)
        excess = []
        for i, (x, y, z) in enumerate(arr):
            others = np.delete(arr, i, axis=0)
            fit = FocusMap(self.surface, self.max_slope * 1000.0, self.tolerance_um)
            fit._solve([tuple(p) for p in others])
            nearest = float(np.hypot(others[:, 0] - x, others[:, 1] - y).min())
            allowed = max(self.tolerance_um, self.max_slope * nearest)
            excess.append(abs(z - fit.z_at(x, y)) - allowed)
        i = int(np.argmax(excess))
        return i, float(excess[i])

    def z_at(self, x_um: float, y_um: float) -> float:
        if self._coef is None:
            raise ValueError("the focus map has not been fitted")
        terms = self._terms(np.array([x_um], float), np.array([y_um], float), len(self._coef) == 6)
        return float((terms @ self._coef)[0])

    def plausible(self, x_um: float, y_um: float, z_um: float) -> bool:
        """Whether a new measurement agrees with the map within the slope limit."""
        if not self.points:
            return True
        arr = np.asarray(self.points, float)
        nearest = float(np.hypot(arr[:, 0] - x_um, arr[:, 1] - y_um).min())
        return abs(z_um - self.z_at(x_um, y_um)) <= max(self.tolerance_um, self.max_slope * nearest)

    def tilt_um_per_mm(self) -> float:
        """The steepest slope of the surface over the span of its points (µm of z per mm of xy)."""
        if self._coef is None or len(self.points) < 3:
            return 0.0
        arr = np.asarray(self.points, float)
        xs = np.linspace(arr[:, 0].min(), arr[:, 0].max(), 5)
        ys = np.linspace(arr[:, 1].min(), arr[:, 1].max(), 5)
        h = max(self._scale * 1e-3, 1e-3)
        steepest = 0.0
        for x in xs:
            for y in ys:
                gx = (self.z_at(x + h, y) - self.z_at(x - h, y)) / (2 * h)
                gy = (self.z_at(x, y + h) - self.z_at(x, y - h)) / (2 * h)
                steepest = max(steepest, math.hypot(gx, gy))
        return 1000.0 * steepest

    def residuals_um(self) -> list[float]:
        return [z - self.z_at(x, y) for x, y, z in self.points]


# -- focus during a scan --------------------------------------------------------------------------------


@runtime_checkable
class FocusStrategy(Protocol):
    """What the scan asks, tile by tile, for the z to acquire at."""

    mode: str

    def z_for(self, tile: TilePlan, stage: Stage, camera: Camera) -> float:
        """The z (µm) to acquire ``tile`` at; may move the stage (autofocus) before returning."""

    def describe(self) -> dict[str, Any]:
        """What the manifest records about how focus was found."""


class PlannedFocus:
    """``none`` and ``plane``: every tile at its planned z."""

    mode = "planned"

    def z_for(self, tile: TilePlan, stage: Stage, camera: Camera) -> float:
        return tile.z_um

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode}


class MapFocus:
    """``map`` and ``autofocus`` modes (see the module docstring)."""

    def __init__(
        self, config: FocusConfig, map_points: list[tuple[float, float]], *, refocus_every: int = 0,
    ) -> None:
        self.config = config
        self.mode: str = config.mode  # str, as FocusStrategy declares it (not the config's Literal)
        self.settings = SearchSettings(
            metric=config.metric, range_um=config.range_um, coarse_step_um=config.coarse_step_um,
            fine_step_um=config.fine_step_um, backlash_um=config.backlash_um, min_contrast=config.min_contrast,
        )
        self.map_points = map_points
        self.refocus_every = refocus_every
        self.map = FocusMap(config.surface, config.max_slope_um_per_mm, tolerance_um=max(2 * config.fine_step_um, 2.0))
        self.results: list[FocusResult] = []
        self._ready = False
        self._tiles_seen = 0

    def prepare(self, stage: Stage, camera: Camera) -> None:
        """Autofocus at the map points and fit the surface (once, before the first tile)."""
        measured: list[tuple[float, float, float]] = []
        seed = self.config.z_um
        for x, y in self.map_points:
            result = autofocus(stage, camera, x, y, seed, self.settings)
            self.results.append(result)
            if result.valid:
                measured.append((x, y, result.z_um))
                seed = result.z_um  # seed the next search from the latest good z (Squid issue #293)
            else:
                log.warning("focus map point (%.0f, %.0f) µm skipped: %s", x, y, result.reason)
        if not measured:
            raise HardwareError(
                f"focus map: autofocus failed at all {len(self.map_points)} points "
                f"({self.results[-1].reason if self.results else 'no points'}); check focus.z_um and focus.range_um"
            )
        self.map.fit(measured)
        tilt = self.map.tilt_um_per_mm()
        if tilt > self.config.max_slope_um_per_mm:
            # Three points cannot outvote a bad one; a surface this steep is not a chip, it is a failed search.
            raise HardwareError(
                f"focus map: the fitted surface tilts {tilt:.0f} µm/mm, more than focus.max_slope_um_per_mm "
                f"({self.config.max_slope_um_per_mm:g}), from {len(measured)} usable points "
                f"{[(round(x), round(y), round(float(z), 1)) for x, y, z in measured]}; check focus.z_um, range_um and "
                f"the metric, or add map points"
            )
        log.info("focus map: %d points, %d rejected, residuals %s µm", len(self.map.points), len(self.map.rejected),
                 [round(r, 2) for r in self.map.residuals_um()])
        self._ready = True

    def z_for(self, tile: TilePlan, stage: Stage, camera: Camera) -> float:
        if not self._ready:
            self.prepare(stage, camera)
        self._tiles_seen += 1
        z = self.map.z_at(tile.x_um, tile.y_um)
        if self.refocus_every and (self._tiles_seen - 1) % self.refocus_every == 0:
            result = autofocus(stage, camera, tile.x_um, tile.y_um, z, self.settings)
            self.results.append(result)
            if result.valid and self.map.plausible(tile.x_um, tile.y_um, result.z_um):
                self.map.add((tile.x_um, tile.y_um, result.z_um))
                return result.z_um
            log.warning("tile %d: autofocus result not used (%s); z from the focus map", tile.index,
                        result.reason or f"{result.z_um:.1f} µm is implausible next to the map's {z:.1f} µm")
        self._approach_from_below(stage, tile, z)
        return z

    def _approach_from_below(self, stage: Stage, tile: TilePlan, z: float) -> None:
        """Go under the target first when z must come down, so z is always reached moving up."""
        backlash = self.settings.backlash_um
        if backlash <= 0:
            return
        current = stage.position_um().z_um
        if current > z:
            stage.move_to_um(tile.x_um, tile.y_um, max(stage.limits.z.min_um, z - backlash))

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "surface": "quadratic" if self.map.quadratic else "plane",
            "points_um": [[round(v, 2) for v in p] for p in self.map.points],
            "rejected_um": [[round(v, 2) for v in p] for p in self.map.rejected],
            "autofocus_runs": len(self.results),
            "frames": sum(r.frames for r in self.results),
        }

    def estimate_s(self, frame_s: float, z_move_s: float, tiles: int) -> float:
        """Rough time the autofocus runs take: frames times (exposure + a z step)."""
        s = self.settings
        per_run = (s.range_um / s.coarse_step_um + 2 * s.coarse_step_um / s.fine_step_um + 4) * (frame_s + z_move_s)
        runs = len(self.map_points) + (math.ceil(tiles / self.refocus_every) if self.refocus_every else 0)
        return runs * per_run


def grid_points(region: RegionConfig, grid: tuple[int, int]) -> list[tuple[float, float]]:
    """A rows x cols lattice inside the region (cell centres of its bounding box, kept if inside)."""
    from shapely.geometry import Point

    from flakehunter.geometry import region_polygon

    polygon = region_polygon(region)
    xmin, ymin, xmax, ymax = polygon.bounds
    rows, cols = grid
    points = []
    for r in range(rows):
        order = range(cols) if r % 2 == 0 else range(cols - 1, -1, -1)  # snake: short moves between points
        for c in order:
            x = xmin + (c + 0.5) * (xmax - xmin) / cols
            y = ymin + (r + 0.5) * (ymax - ymin) / rows
            if polygon.contains(Point(x, y)):
                points.append((x, y))
    return points


def planning_focus(config: FocusConfig) -> FocusConfig:
    """The focus section the tile planner sees: map modes plan every tile at ``z_um`` (the seed)."""
    if config.mode in ("none", "plane"):
        return config
    return type(config)(mode="none", z_um=config.z_um)


def make_focus_strategy(
    config: FocusConfig, region: RegionConfig, limits: TravelLimits, path: Path | None = None,
) -> PlannedFocus | MapFocus:
    """The focus strategy a scan asks for each tile's z; checks the search fits the z limits."""
    if config.mode in ("none", "plane"):
        return PlannedFocus()
    z = limits.z
    lo = config.z_um - config.range_um / 2 - config.backlash_um
    hi = config.z_um + config.range_um / 2
    if lo < z.min_um or hi > z.max_um:
        raise ConfigError(
            path, "focus.range_um",
            f"the autofocus search {lo:g}..{hi:g} µm (z_um ± range_um/2, minus backlash_um) leaves the stage's "
            f"z limits [{z.min_um:g}, {z.max_um:g}] µm",
        )
    points = [tuple(p) for p in config.map_points_um] if config.map_points_um else grid_points(region, config.grid)
    if not points:
        raise ConfigError(path, "focus.grid", "no focus-map point falls inside the region")
    refocus = config.every_n_tiles if config.mode == "autofocus" else 0
    return MapFocus(config, points, refocus_every=refocus)  # type: ignore[arg-type]
