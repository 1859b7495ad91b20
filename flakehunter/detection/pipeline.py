"""The detector pipeline: build detectors from config sections, run them, map results to stage µm."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from shapely.geometry import Polygon

from flakehunter.candidates import Candidate
from flakehunter.config import DetectorSection, validate_plugin_options
from flakehunter.detection.base import (
    CalibratingDetector,
    Detection,
    DetectionContext,
    Detector,
    StatefulDetector,
)
from flakehunter.errors import ConfigError, InputError

if TYPE_CHECKING:
    from flakehunter.geometry import PixelTransform
    from flakehunter.registry import Registry
    from flakehunter.tiles import ImageMeta


class DetectionPipeline:
    """Detectors in config order; each refines what the previous ones returned."""

    def __init__(self, detectors: Sequence[Detector], context: DetectionContext) -> None:
        if not detectors:
            raise InputError("detectors: at least one detector is needed")
        self.detectors = list(detectors)
        self.context = context

    @classmethod
    def from_sections(
        cls,
        sections: Sequence[DetectorSection],
        registry: Registry,
        context: DetectionContext,
        config_path: str | Path | None = None,
    ) -> DetectionPipeline:
        """Instantiate each ``{name, options}`` section through the registry, validating options."""
        detectors = []
        for i, section in enumerate(sections):
            field = f"detectors[{i}]"
            try:
                factory = registry.get("detector", section.name).obj
            except InputError as exc:
                raise ConfigError(config_path, f"{field}.name", str(exc)) from None
            options = validate_plugin_options(factory, section.options, config_path, f"{field}.options")
            detectors.append(factory(options, context))
        return cls(detectors, context)

    def run(self, image: np.ndarray, meta: ImageMeta) -> list[Detection]:
        detections: list[Detection] = []
        for detector in self.detectors:
            detections = detector.detect(image, meta, detections)
        return detections

    # -- calibration -------------------------------------------------------------------------------
    def _calibrating(self) -> list[CalibratingDetector]:
        return [d for d in self.detectors if isinstance(d, CalibratingDetector)]

    def needs_calibration(self) -> bool:
        return any(d.calibration_needed() for d in self._calibrating())

    @property
    def calibration_images(self) -> int:
        return max((d.calibration_images for d in self._calibrating() if d.calibration_needed()), default=0)

    def calibrate(self, samples: Sequence[tuple[np.ndarray, ImageMeta]]) -> list[dict[str, Any]]:
        """Calibrate every detector that needs it on the same sample images."""
        return [d.calibrate(samples) for d in self._calibrating() if d.calibration_needed()]

    def calibration_report(self) -> list[dict[str, Any]]:
        return [d.calibration_report() for d in self._calibrating()]

    def state(self) -> dict[str, Any]:
        """Learnt state of every stateful detector, keys prefixed by position and name."""
        out: dict[str, Any] = {}
        for i, det in enumerate(self.detectors):
            if isinstance(det, StatefulDetector):
                out.update({f"{i}:{det.name}:{k}": v for k, v in det.state().items()})
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        for i, det in enumerate(self.detectors):
            if isinstance(det, StatefulDetector):
                prefix = f"{i}:{det.name}:"
                det.load_state({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})


def bbox_polygon(
    bbox: tuple[int, int, int, int], transform: PixelTransform, centre_um: tuple[float, float], shape: tuple[int, int]
) -> Polygon:
    """A detection's pixel bounding box (row0, col0, row1, col1; exclusive) as a stage-µm polygon."""
    r0, c0, r1, c1 = bbox
    x, y = transform.pixel_to_stage(
        np.array([r0, r0, r1, r1], float) - 0.5, np.array([c0, c1, c1, c0], float) - 0.5, centre_um, shape
    )
    return Polygon(np.column_stack([x, y]))


def to_candidates(
    detections: Sequence[Detection],
    *,
    image: str,
    shape: tuple[int, int],
    centre_um: tuple[float, float],
    transform: PixelTransform,
    material: str,
    z_um: float | None = None,
    tile: int | None = None,
    positioned: bool = True,
    orientation_period_deg: float = 180.0,
) -> list[Candidate]:
    """Map pixel detections of one image to stage-µm candidates (ids are assigned by the sink).

    Orientations turn from image to stage directions and are reduced modulo ``orientation_period_deg``
    (the material's edge symmetry).
    """
    out = []
    area_px_um2 = transform.pixel_size_um**2
    for d in detections:
        x, y = transform.pixel_to_stage(d.row, d.col, centre_um, shape)
        c = d.contrast_rgb
        out.append(
            Candidate(
                id=0,
                x_um=float(x),
                y_um=float(y),
                material=material,
                layers=d.layers,
                layer_class=d.layer_class,
                score=float(min(max(d.score, 0.0), 1.0)),
                area_um2=float(d.area_px * area_px_um2),
                orientation_deg=None
                if d.orientation_deg is None or math.isnan(d.orientation_deg)
                else transform.angle_to_stage(d.orientation_deg) % orientation_period_deg,
                image=image,
                row=float(d.row),
                col=float(d.col),
                z_um=z_um,
                tile=tile,
                positioned=positioned,
                detector=d.detector,
                contrast_r=None if c is None else float(c[0]),
                contrast_g=None if c is None else float(c[1]),
                contrast_b=None if c is None else float(c[2]),
            )
        )
    return out
