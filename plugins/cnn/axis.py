"""The ``cnn-axis`` detector: the crystal axis of each candidate from a crop regressor, refined on its edges.

For every candidate before it, a square window around the flake (`training.axis_input`) becomes the flake's
contrast scaled to 1 (substrate 0), 64 x 64 pixels; a small CNN (``flakehunter train --task angle``) predicts
(cos, sin) of 2π·θ/P, P the material's edge symmetry (30° graphene and hBN, 60° TMDs), and the length of
that vector is its confidence. Windows of all images in a batch go through the network together.

The network's angle is then refined on the full-resolution window (`refine_axis`): the directions of the
flake's edges (gradients of the scaled contrast, smoothed over 3 % of the window), folded modulo P and
weighted by edge strength, are averaged within ``window_deg`` of it, then within half and a third of that;
the share of all its edge strength within ±1.5° of the result (``edge_fraction``; a torn, round outline
puts 3°/P there) says whether the flake has straight edges at all. A candidate gets
the refined angle when the network is confident and the edges gather. Otherwise the straight-edge estimate of
the detector before it (the classical fallback) is checked the same way, refined around itself: kept (refined)
where the edges gather there too, dropped where they do not (``verify_classical``; it stays in
``extra["axis_classical_deg"]`` for reference either way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from flakehunter.analysis.detector import Detection, DetectionContext
from flakehunter.plugins.cnn.model_store import choose_device, load_model, resolve_weights
from flakehunter.plugins.cnn.options import AxisOptions
from flakehunter.plugins.cnn.segmentation import shared_grid
from flakehunter.tiles import ImageMeta
from flakehunter.training.angles import angle_error_deg
from flakehunter.training.axis_input import flake_coordinate, flake_vector, to_uint8, window_box, window_contrast
from flakehunter.training.segment_input import GridContrast


@dataclass
class AxisResult:
    """One window's answer: the network's angle and confidence, the refined angle and the share of edge strength
    near it; the classical angle refined on the same edges and its share (None without a classical angle)."""

    cnn_deg: float
    confidence: float
    refined_deg: float | None
    edge_fraction: float
    classical_refined_deg: float | None = None
    classical_fraction: float | None = None


class CnnAxisDetector:
    """Crystal axis of earlier candidates (see the module docstring)."""

    Options = AxisOptions
    name = "cnn-axis"

    def __init__(self, options: AxisOptions, context: DetectionContext) -> None:
        self.options = options
        self.context = context
        self.period = float(context.material.edge_symmetry_deg)
        role = "axis-30" if math.isclose(self.period, 30.0) else "axis-60"
        self.device = choose_device(context.device, self.name)
        self.model = load_model(resolve_weights(options.weights, role, context.config_dir), self.device, "angle")
        own = self.model.period_deg
        if own is None or not math.isclose(own, self.period):
            raise ValueError(f"weights: the model predicts angles modulo {own}°, {context.material.name} needs "
                             f"{self.period}°")
        pre = self.model.card["preprocess"]
        self.size_px = int(pre.get("image_size") or 64)
        self.mean = np.asarray(pre["mean"], np.float32)
        self.std = np.asarray(pre["std"], np.float32)
        self.batch_size = options.batch_size or (16 if self.device == "cuda" else 1)

    def detect(self, image: np.ndarray, meta: ImageMeta, detections: list[Detection]) -> list[Detection]:
        return self.detect_batch([image], [meta], [detections])[0]

    def detect_batch(self, images: Sequence[np.ndarray], metas: Sequence[ImageMeta],
                     detections: Sequence[list[Detection]]) -> list[list[Detection]]:
        jobs: list[tuple[Detection, np.ndarray]] = []
        for image, meta, dets in zip(images, metas, detections, strict=True):
            grid: GridContrast | None = None
            for d in dets:
                if d.layers is None and d.layer_class != "thin":
                    continue
                b = d.bbox
                if min(b[2] - b[0], b[3] - b[1]) < self.options.min_window_px // 2 or \
                        max(b[2] - b[0], b[3] - b[1]) < self.options.min_window_px:
                    continue
                grid = grid or shared_grid(image, meta.pixel_size_um or self.context.pixel_size_um)
                jobs.append((d, self._window(image, grid, d)))
        if jobs:
            results = self._predict([t for _, t in jobs])
            for (d, t), res in zip(jobs, results, strict=True):
                refined, share = refine_axis(t, res[0], self.period, self.options.window_deg)
                result = AxisResult(res[0], res[1], refined, share)
                if d.orientation_deg is not None:
                    result.classical_refined_deg, result.classical_fraction = refine_axis(
                        t, float(d.orientation_deg), self.period, self.options.window_deg)
                self._apply(d, result)
        return [list(d) for d in detections]

    def _window(self, image: np.ndarray, grid: GridContrast, d: Detection) -> np.ndarray:
        box = window_box(d.bbox)
        contrast = window_contrast(image, grid, box)
        ring_vector = flake_vector(contrast)
        if d.contrast_rgb is not None:
            side = contrast.shape[0]
            rr, cc = np.mgrid[:side, :side]
            ring = np.hypot(rr - (side - 1) / 2, cc - (side - 1) / 2) >= 0.45 * side
            vector = np.asarray(d.contrast_rgb, np.float32) - np.median(contrast[ring], axis=0)
            if float(np.linalg.norm(vector)) < 0.25 * float(np.linalg.norm(ring_vector)):
                vector = ring_vector
        else:
            vector = ring_vector
        return flake_coordinate(contrast, vector)

    def _predict(self, windows: list[np.ndarray]) -> list[tuple[float, float]]:
        x = np.stack([self._tensor(t) for t in windows])
        out: list[tuple[float, float]] = []
        network = self.model.network
        chunk = 256
        with torch.inference_mode():
            for start in range(0, len(x), chunk):
                batch = torch.from_numpy(x[start : start + chunk])
                if self.device == "cuda":
                    batch = batch.pin_memory().to("cuda", non_blocking=True)
                    with torch.autocast(device_type="cuda", dtype=torch.float16):
                        raw = network(batch).float()
                else:
                    raw = network(batch)
                raw = raw.cpu()
                phase = torch.atan2(raw[:, 1], raw[:, 0])
                degrees = torch.remainder(phase * self.period / (2 * math.pi), self.period)
                lengths = raw.norm(dim=1).clamp(max=1.0)
                out.extend(zip(degrees.tolist(), lengths.tolist(), strict=True))
        return out

    def _tensor(self, t: np.ndarray) -> np.ndarray:
        """As `training.predict.Predictor.tensor` prepares an 8-bit grey image, from the t window."""
        grey = to_uint8(t, self.size_px).astype(np.float32) / 255.0
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        return np.ascontiguousarray(((rgb - self.mean) / self.std).transpose(2, 0, 1), np.float32)

    def _apply(self, d: Detection, res: AxisResult) -> None:
        classical = d.orientation_deg
        d.extra["axis_classical_deg"] = None if classical is None else round(float(classical), 3)
        d.extra["axis_cnn_deg"] = round(res.cnn_deg, 3)
        d.extra["axis_confidence"] = round(res.confidence, 3)
        d.extra["axis_edge_fraction"] = round(res.edge_fraction, 3)
        trusted = (res.refined_deg is not None and res.confidence >= self.options.min_confidence
                   and res.edge_fraction >= self.options.min_edge_fraction)
        if trusted:
            assert res.refined_deg is not None
            d.orientation_deg = float(res.refined_deg)
            d.extra["axis_source"] = self.name
        elif classical is not None and not self.options.verify_classical:
            d.extra["axis_source"] = d.detector or "before"
        elif classical is not None:
            supported = res.classical_refined_deg is not None and (res.classical_fraction or 0.0) >= \
                self.options.min_edge_fraction
            d.orientation_deg = res.classical_refined_deg if supported else None
            d.extra["axis_source"] = f"{d.detector or 'before'} (checked)" if supported else "none: edges disagree"


def edge_directions(t: np.ndarray, period_deg: float, smooth_px: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(folded edge directions in [0, period), weights) of a t window's boundary pixels.

    The edge direction is perpendicular to the gradient, as an image angle (from +col towards +row); weights are
    the squared gradient magnitude on the flake's own boundary (t between 0.15 and 0.85 after smoothing, by
    ``smooth_px``, default 3 % of the window and at least a pixel: per-pixel noise averages out, a straight edge
    stays straight).
    """
    sigma = max(1.0, 0.03 * t.shape[0]) if smooth_px is None else smooth_px
    s = cv2.GaussianBlur(t.astype(np.float32), (0, 0), sigma) if sigma > 0 else t.astype(np.float32)
    g_row = cv2.Scharr(s, cv2.CV_32F, 0, 1)
    g_col = cv2.Scharr(s, cv2.CV_32F, 1, 0)
    boundary = (s > 0.15) & (s < 0.85)
    weight = (g_row**2 + g_col**2)[boundary].astype(np.float64)
    direction = np.degrees(np.arctan2(g_row[boundary], g_col[boundary])) + 90.0
    return np.mod(direction, period_deg), weight


def refine_axis(t: np.ndarray, start_deg: float, period_deg: float, window_deg: float = 5.0
                ) -> tuple[float | None, float]:
    """The weighted mean edge direction within ``window_deg`` of ``start_deg`` (then within half and within
    three tenths of that, around the last mean), modulo the period, and the share of all edge strength within
    ±1.5° of it. (None, 0) when no edge lies near."""
    folded, weight = edge_directions(t, period_deg)
    total = float(weight.sum())
    if total <= 0 or len(weight) < 6:
        return None, 0.0
    angle = float(start_deg)
    for width in (window_deg, window_deg / 2, 0.3 * window_deg):
        delta = angle_error_deg(folded, angle, period_deg)
        near = np.abs(delta) <= width
        if weight[near].sum() <= 0:
            return None, 0.0
        angle = float(np.mod(angle + np.average(delta[near], weights=weight[near]), period_deg))
    delta = angle_error_deg(folded, angle, period_deg)
    return angle, float(weight[np.abs(delta) <= 1.5].sum() / total)

