"""The classical contrast detector: background, contrast, per-layer windows, regions.

Steps per image:

1. background per channel (robust surface fit, then the flat field learnt from earlier tiles);
2. contrast C = I / background − 1, lightly smoothed against shot noise;
3. each pixel is given a layer count if its contrast lies in that layer's window of the material's
   thin-film model, "substrate" near zero, "other" elsewhere (thick flakes, residue, dust);
4. per reported layer count, connected regions after a majority filter;
5. rejection of halos: the blurred rim of any flake passes through thinner layers' colours, so a
   region must keep a core outside a band around every pixel of another class;
6. layer count from the region's median core contrast, area, and a score from how well the
   contrast fits its window.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flakehunter.detection.background import BackgroundModel
from flakehunter.detection.base import Detection, DetectionContext
from flakehunter.detection.layers import LayerModel
from flakehunter.tiles import ImageMeta

log = logging.getLogger(__name__)


class ContrastOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report_layers: list[int] | None = Field(None, description="Layer counts to report; default: the material's targets")
    max_model_layers: int = Field(12, ge=1, le=40, description="Thickest class modelled, so thicker is not mistaken")
    min_area_um2: float = Field(25.0, gt=0, description="Smallest region reported (a ~5 µm flake)")
    smoothing_px: int = Field(1, ge=1, description="Box filter on the contrast image (odd); 1 = none")
    majority_px: int = Field(1, ge=1, description="Median filter on the label image (odd); 1 = none")
    halo_px: int = Field(2, ge=0, description="Band around other classes where a region cannot have its core")
    min_core_fraction: float = Field(0.2, ge=0, le=1)
    min_chroma_ratio: float = Field(
        0.4, ge=0, description="Reject regions greyer than this fraction of the class's predicted colourfulness"
    )


class ContrastDetector:
    """Finds thin flakes by their optical contrast against the substrate."""

    Options = ContrastOptions
    name = "contrast"

    def __init__(self, options: ContrastOptions, context: DetectionContext) -> None:
        self.options = options
        self.context = context
        self.material = context.material
        self.report_layers = tuple(options.report_layers or self.material.target_layers)
        self.background_model = BackgroundModel()
        self._models: dict[int, LayerModel] = {}

    def layer_model(self, channels: int) -> LayerModel:
        if channels not in self._models:
            max_layers = max(self.options.max_model_layers, *self.report_layers)
            self._models[channels] = LayerModel.from_thin_film(
                self.material, self.context.oxide_nm, max_layers, channels=channels
            )
        return self._models[channels]

    # -- the StatefulDetector contract --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return self.background_model.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.background_model.load_state(state)

    # -- detection ------------------------------------------------------------------------------
    def contrast_image(self, image: np.ndarray) -> np.ndarray:
        """C = I / background − 1 per channel, float32 (rows, cols, channels)."""
        img = image.astype(np.float32)
        if img.ndim == 2:
            img = img[..., None]
        background = self.background_model.background(img)
        contrast = img / np.maximum(background, 1e-3) - 1.0
        k = self.options.smoothing_px | 1
        if k > 1:
            contrast = cv2.blur(contrast, (k, k), borderType=cv2.BORDER_REFLECT).reshape(contrast.shape)
        return contrast

    def detect(self, image: np.ndarray, meta: ImageMeta, detections: list[Detection]) -> list[Detection]:
        contrast = self.contrast_image(image)
        model = self.layer_model(contrast.shape[-1])
        labels, coord = model.classify(contrast)
        # Majority filter on uint8 codes that keep the order substrate 0 < layers < other 255.
        codes = np.where(labels < 0, 255, np.minimum(labels, 254)).astype(np.uint8)
        if self.options.majority_px > 1:
            codes = cv2.medianBlur(codes, self.options.majority_px | 1)
        small = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        # "Other" that matters (thick flakes, residue) is more than a stray noisy pixel.
        other = cv2.morphologyEx((codes == 255).astype(np.uint8), cv2.MORPH_OPEN, small)
        pixel_um = meta.pixel_size_um or self.context.pixel_size_um or 1.0
        min_area_px = max(self.options.min_area_um2 / pixel_um**2, 4.0)
        halo = self.options.halo_px
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * halo + 1, 2 * halo + 1)) if halo else None
        out = list(detections)
        rows, cols = codes.shape
        for layers in self.report_layers:
            mask = (codes == layers).astype(np.uint8)
            if not mask.any():
                continue
            # Rims of thicker flakes (and of anything else) blur through this class's colour.
            foreign = (((codes > layers) & (codes != 255)) | (other > 0)).astype(np.uint8)
            band = cv2.dilate(foreign, kernel) if kernel is not None else foreign
            count, comp, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for i in range(1, count):
                area = stats[i, cv2.CC_STAT_AREA]
                if area < min_area_px:
                    continue
                c0, r0 = stats[i, cv2.CC_STAT_LEFT], stats[i, cv2.CC_STAT_TOP]
                c1, r1 = c0 + stats[i, cv2.CC_STAT_WIDTH], r0 + stats[i, cv2.CC_STAT_HEIGHT]
                region = comp[r0:r1, c0:c1] == i
                core = region & (band[r0:r1, c0:c1] == 0)
                core_px = int(core.sum())
                if core_px < max(4, self.options.min_core_fraction * area):
                    log.debug(
                        "%dL region at %s: rim or halo (core %d of %d px)", layers, _at(centroids[i]), core_px, area
                    )
                    continue  # a halo or rim: no interior of its own
                inner = _interior(core)
                median = np.median(contrast[r0:r1, c0:c1][inner], axis=0)
                s_med = float(np.nanmedian(coord[r0:r1, c0:c1][inner]))
                _, (distance,) = model.project(median[None, :])
                fitted = round(s_med)
                if fitted not in self.report_layers or distance > 0.5 * model.tube_radius:
                    log.debug("%dL region at %s: plateau fits %.2f layers, %.3f off the curve", layers,
                              _at(centroids[i]), s_med, distance)
                    continue
                if model.channels == 3 and _chroma(median) < self.options.min_chroma_ratio * _chroma(
                    model.centroid(fitted)
                ):
                    log.debug("%dL region at %s: achromatic (dust)", layers, _at(centroids[i]))
                    continue  # achromatic where the material is coloured: dust or debris
                fit_score = float(np.exp(-0.5 * (distance / (0.25 * model.tube_radius)) ** 2))
                layer_score = float(np.exp(-0.5 * ((s_med - fitted) / 0.25) ** 2))
                size_score = float(area / (area + min_area_px))
                out.append(
                    Detection(
                        row=float(centroids[i, 1]),
                        col=float(centroids[i, 0]),
                        area_px=float(area),
                        layers=fitted,
                        layer_class=f"{fitted}L",
                        score=fit_score * layer_score * (0.5 + 0.5 * size_score),
                        bbox=(int(r0), int(c0), int(r1), int(c1)),
                        touches_border=bool(r0 == 0 or c0 == 0 or r1 == rows or c1 == cols),
                        contrast_rgb=_as_rgb(median),
                        detector=self.name,
                        extra={"core_px": core_px, "layer_coordinate": round(s_med, 3)},
                    )
                )
        return out


def _interior(core: np.ndarray, depth_px: float = 2.0) -> np.ndarray:
    """The pixels of ``core`` at least ``depth_px`` from its edge (the plateau, not the blurred rim);
    for a region too small to have such pixels, its deeper half."""
    dist = cv2.distanceTransform(np.pad(core, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    inner = dist >= depth_px
    if inner.sum() >= 3:
        return inner
    return core & (dist >= np.median(dist[core]))


def _at(centroid: np.ndarray) -> str:
    return f"row {centroid[1]:.0f}, col {centroid[0]:.0f}"


def _chroma(rgb: np.ndarray) -> float:
    """Spread of the channel contrasts relative to their mean: 0 for a grey (achromatic) object."""
    rgb = np.asarray(rgb, float)
    return float((rgb.max() - rgb.min()) / max(abs(rgb.mean()), 1e-3))


def _as_rgb(median: np.ndarray) -> tuple[float, float, float]:
    values = [float(v) for v in np.ravel(median)]
    return (values[0], values[0], values[0]) if len(values) == 1 else (values[0], values[1], values[2])
