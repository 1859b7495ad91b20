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
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flakehunter.analysis.detector import Detection, DetectionContext
from flakehunter.config import ExistingFile
from flakehunter.errors import InputError
from flakehunter.plugins.contrast.axis import AxisEstimate, edge_sharpness, region_orientation
from flakehunter.plugins.contrast.background import BackgroundModel
from flakehunter.plugins.contrast.calibration import Calibration, fit_oxide, sample_plateaus
from flakehunter.plugins.contrast.layers import LayerModel
from flakehunter.plugins.contrast.profile import MaterialProfile, load_profile, profile_dirs
from flakehunter.tiles import ImageMeta

log = logging.getLogger(__name__)

#: A focused edge rises by about 1/(2.5 σ) per pixel; with σ of a pixel or more (the optics' blur sampled at
#: coarse pixels) that is ~0.3-0.4/px on the simulator, so a per-pixel threshold above this would flag focused tiles.
MAX_SHARPNESS_THRESHOLD_PX = 0.25


class ContrastOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report_layers: list[int] | None = Field(None, description="Layer counts to report; default: the material's targets")
    max_model_layers: int = Field(12, ge=1, le=40, description="Thickest class modelled, so thicker is not mistaken")
    min_area_um2: float = Field(25.0, gt=0, description="Smallest region reported (a ~5 µm flake)")
    smoothing_px: int = Field(1, ge=1, description="Box filter on the contrast image (odd); 1 = none")
    majority_px: int = Field(1, ge=1, description="Median filter on the label image (odd); 1 = none")
    halo_px: int = Field(2, ge=0, description="Band around other classes where a region cannot have its core")
    min_core_fraction: float = Field(0.2, ge=0, le=1)
    min_edge_sharpness_per_um: float = Field(
        0.22, ge=0,
        description="Edge steepness (plateau heights per µm) of an image in focus; an image whose regions are "
        "softer in the median is out of focus and reports nothing, a single region softer than 0.8x is dropped. "
        "Per pixel it is capped at 0.25, as steep as a focused edge looks at coarse pixels",
    )
    orientation: bool = Field(True, description="Estimate the crystal axis from straight edges")
    calibration: Literal["self", "nominal"] = Field(
        "self",
        description="self: fit the real oxide (and lamp colour) from the first images; nominal: trust the config",
    )
    calibration_images: int = Field(6, ge=1, description="Images examined to self-calibrate")
    calibration_search_nm: float = Field(15.0, ge=0, description="How far from nominal the real oxide may lie")
    profile: Annotated[str | None, ExistingFile(search=profile_dirs, suffix=".json")] = Field(
        None, description="A material profile (path or name) measured on this setup; replaces calibration"
    )
    min_edge_px: float = Field(7.0, gt=2, description="Shortest straight edge used for the crystal axis")
    single_edge_px: float = Field(
        15.0, gt=0, description="A lone edge must be this long to give the crystal axis; two that agree suffice"
    )
    max_orientation_error_deg: float = Field(
        0.6, gt=0, description="Report the crystal axis only when its standard error is below this"
    )
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
        if context.flatfield:
            self.background_model.use_flat_field(_mean_image(context.flatfield))
        self._models: dict[int, LayerModel] = {}
        self.calibration: Calibration | None = None
        self.profile: MaterialProfile | None = None
        if options.profile:
            self.profile = load_profile(options.profile, context.config_dir)
            if self.profile.material != self.material.name:
                raise InputError(
                    f"profile {options.profile!r} is for {self.profile.material}, not {self.material.name}"
                )
            self.calibration = Calibration(
                "profile", self.profile.oxide_nm or context.oxide_nm, note=f"profile {self.profile.name}",
                extra={"profile": str(options.profile), "profile_layers": sorted(self.profile.classes)},
            )
        elif options.calibration == "nominal":
            self.calibration = Calibration("nominal", context.oxide_nm, note="self-calibration switched off")
        self._pending: list[np.ndarray] = []  # plateau samples gathered by detect() before calibrating
        self._pending_weights: list[np.ndarray] = []
        self._pending_images = 0

    def layer_model(self, channels: int) -> LayerModel:
        if channels not in self._models and self.profile is not None:
            max_layers = max(self.options.max_model_layers, *self.report_layers)
            self._models[channels] = LayerModel.from_profile(
                self.profile, self.material, self.context.oxide_nm, max_layers, channels=channels
            )
        if channels not in self._models:
            max_layers = max(self.options.max_model_layers, *self.report_layers)
            cal = self.calibration
            self._models[channels] = LayerModel.from_thin_film(
                self.material,
                cal.oxide_nm if cal else self.context.oxide_nm,
                max_layers,
                channels=channels,
                channel_gain=cal.channel_gain if cal and channels == 3 else None,
            )
        return self._models[channels]

    # -- self-calibration ---------------------------------------------------------------------------
    def calibration_needed(self) -> bool:
        return self.calibration is None

    @property
    def calibration_images(self) -> int:
        return self.options.calibration_images

    def calibrate(self, samples: Iterable[tuple[np.ndarray, ImageMeta]]) -> dict[str, Any]:
        """Fit the oxide thickness (and lamp colour) from plateaus in ``samples``; freeze the model.

        The background model learns from the samples while they are examined and is then put back,
        so the images are analysed afterwards exactly as if calibration had not looked at them.
        """
        saved = self.background_model.state()
        for image, _meta in samples:
            self._gather(self.contrast_image(image))
        self.background_model.load_state(saved)
        self._freeze(final=True)
        assert self.calibration is not None
        return self.calibration.describe()

    def _gather(self, contrast: np.ndarray) -> None:
        if contrast.shape[-1] != 3:
            return  # the oxide fit reads colour; a mono image among colour ones neither helps nor hinders it
        gate = self.layer_model(contrast.shape[-1]).substrate_gate
        points, areas = sample_plateaus(contrast, gate)
        self._pending.append(points)
        self._pending_weights.append(np.sqrt(areas))
        self._pending_images += 1

    def _freeze(self, final: bool) -> None:
        points = np.concatenate(self._pending) if self._pending else np.zeros((0, 3))
        weights = np.concatenate(self._pending_weights) if self._pending_weights else np.zeros(0)
        fit = fit_oxide(
            points, weights, self.material, self.context.oxide_nm, search_nm=self.options.calibration_search_nm
        )
        if fit.method == "self-calibrated" or final:
            self.calibration = fit
            self._models.clear()
            self._pending, self._pending_weights = [], []
            if fit.method != "self-calibrated":
                log.warning("%s: self-calibration failed, using the nominal %g nm oxide: %s",
                            self.material.name, fit.oxide_nm, fit.note)

    def calibration_report(self) -> dict[str, Any]:
        cal = self.calibration or Calibration("nominal", self.context.oxide_nm, note="not calibrated yet")
        return {
            "detector": self.name,
            "material": self.material.name,
            "nominal_oxide_nm": self.context.oxide_nm,
            **cal.describe(),
        }

    # -- the StatefulDetector contract --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        state = dict(self.background_model.state())
        if self.calibration is not None:
            c = self.calibration
            state["calibration"] = {
                "method": c.method,
                "oxide_nm": c.oxide_nm,
                "channel_gain": list(c.channel_gain),
                "regions": c.regions,
                "inliers": c.inliers,
                "residual": None if np.isnan(c.residual) else c.residual,
                "note": c.note,
            }
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.background_model.load_state(state)
        cal = state.get("calibration")
        if cal:
            residual = cal.get("residual")
            self.calibration = Calibration(
                cal["method"],
                float(cal["oxide_nm"]),
                tuple(cal["channel_gain"]),
                int(cal["regions"]),
                int(cal["inliers"]),
                float("nan") if residual is None else float(residual),
                cal.get("note", ""),
            )
            self._models.clear()

    # -- detection ------------------------------------------------------------------------------
    def _orientation(
        self, contrast: np.ndarray, region: np.ndarray, bbox: tuple[int, int, int, int], plateau: np.ndarray
    ) -> AxisEstimate | None:
        """Crystal axis of one region from its straight edges, modulo the material's symmetry."""
        if not self.options.orientation:
            return None
        window = _window(bbox, region.shape, pad=6)
        estimate = region_orientation(
            contrast[window],
            region[window],
            plateau,
            self.material.edge_symmetry_deg,
            min_length_px=self.options.min_edge_px,
        )
        if estimate is None or estimate.error_deg > self.options.max_orientation_error_deg:
            return None  # no straight edge long enough to trust
        if len(estimate.edges) < 2 and estimate.edges[0].length_px < self.options.single_edge_px:
            return None  # one short edge may be a straight-looking piece of a torn one
        return estimate

    def contrast_image(self, image: np.ndarray) -> np.ndarray:
        """C = I / background − 1 per channel, float32 (rows, cols, channels)."""
        img = image.astype(np.float32)
        if img.ndim == 2:
            img = img[..., None]
        background = self.background_model.background(img)
        np.maximum(background, 1e-3, out=background)
        contrast = np.divide(img, background, out=img)  # in place: tiles are large
        contrast -= 1.0
        k = self.options.smoothing_px | 1
        if k > 1:
            contrast = cv2.blur(contrast, (k, k), borderType=cv2.BORDER_REFLECT).reshape(contrast.shape)
        return contrast

    def detect(self, image: np.ndarray, meta: ImageMeta, detections: list[Detection]) -> list[Detection]:
        contrast = self.contrast_image(image)
        if self.calibration is None:
            # No calibration pass was run (e.g. a watch folder): learn from the images as they come,
            # and freeze as soon as the evidence suffices (or after calibration_images images).
            self._gather(contrast)
            self._freeze(final=self._pending_images >= self.options.calibration_images)
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
        # Defocus blurs by a length in µm; at finer pixels (higher magnification, higher NA) a focused edge
        # spans more pixels, so the threshold is per µm (the simulator's 1.15 µm/px gives 0.25/px).
        min_sharpness_px = min(self.options.min_edge_sharpness_per_um * pixel_um, MAX_SHARPNESS_THRESHOLD_PX)
        halo = self.options.halo_px
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * halo + 1, 2 * halo + 1)) if halo else None
        out: list[Detection] = []
        sharpness_seen: list[float] = []
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
                    log.debug(
                        "%dL region at %s: plateau fits %.2f layers, %.3f off the curve",
                        layers,
                        _at(centroids[i]),
                        s_med,
                        distance,
                    )
                    continue
                window = _window((r0, c0, r1, c1), comp.shape, pad=4)
                sharpness = edge_sharpness(contrast[window], comp[window] == i, median)
                sharpness_seen.append(sharpness)
                if sharpness < 0.8 * min_sharpness_px:
                    log.debug("%dL region at %s: edge too soft (%.2f/px): out of focus", layers,
                              _at(centroids[i]), sharpness)
                    continue  # defocused: its plateau, and so its layer count, cannot be trusted
                if model.channels == 3 and _chroma(median) < self.options.min_chroma_ratio * _chroma(
                    model.centroid(fitted)
                ):
                    log.debug("%dL region at %s: achromatic (dust)", layers, _at(centroids[i]))
                    continue  # achromatic where the material is coloured: dust or debris
                axis = self._orientation(contrast, comp == i, (r0, c0, r1, c1), median)
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
                        orientation_deg=None if axis is None else axis.orientation_deg,
                        bbox=(int(r0), int(c0), int(r1), int(c1)),
                        touches_border=bool(r0 == 0 or c0 == 0 or r1 == rows or c1 == cols),
                        contrast_rgb=_as_rgb(median),
                        detector=self.name,
                        extra={
                            "core_px": core_px,
                            "layer_coordinate": round(s_med, 3),
                            "orientation_error_deg": None if axis is None else round(axis.error_deg, 3),
                            "straight_edges": 0 if axis is None else len(axis.edges),
                            "edge_sharpness": round(sharpness, 3),
                        },
                    )
                )
        if len(sharpness_seen) >= 3 and float(np.median(sharpness_seen)) < min_sharpness_px:
            # Most edges in this image are soft: it is out of focus, and no layer count in it can be trusted.
            warning = (
                f"out of focus (median edge steepness {float(np.median(sharpness_seen)) / pixel_um:.2f}/µm < "
                f"{min_sharpness_px / pixel_um:.2f}/µm); {len(out)} region(s) not reported"
            )
            meta.warnings.append(warning)
            log.warning("%s: %s", meta.provenance.get("tile_index", "image") if meta.provenance else "image", warning)
            return list(detections)
        return [*detections, *out]


def _mean_image(paths: tuple[Path, ...]) -> np.ndarray:
    """The average of one or more flat-field images (bare substrate), as float32."""
    from flakehunter.tiles import read_image

    images = [read_image(p)[0].astype(np.float32) for p in paths]
    if any(i.shape != images[0].shape for i in images):
        raise InputError(f"flat field: images {', '.join(map(str, paths))} differ in size")
    return np.mean(images, axis=0)


def _window(bbox: tuple[int, int, int, int], shape: tuple[int, int], pad: int) -> tuple[slice, slice]:
    r0, c0, r1, c1 = bbox
    return slice(max(r0 - pad, 0), min(r1 + pad, shape[0])), slice(max(c0 - pad, 0), min(c1 + pad, shape[1]))


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
