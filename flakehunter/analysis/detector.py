"""The detector contract and what a detector returns.

Detectors run as a pipeline, in the order the config lists them. Each receives the image, its
metadata and the detections of the detectors before it, and returns the new list: the first one
usually finds regions, later ones may re-classify thickness or fill in the crystal axis.
Detections are in the image's pixel coordinates (row, col); the analysis step maps them to stage µm.

A detector that works better on several images at once (a CNN batching crops on the GPU) also
implements `BatchDetector.detect_batch`; the pipeline then hands it up to ``batch_size`` images
together. A detector that only knows `Detector.detect` keeps working unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from flakehunter.materials import Material
    from flakehunter.tiles import ImageMeta


@dataclass(frozen=True)
class DetectionContext:
    """What a detector factory gets besides its options.

    Attributes:
        material: the material being hunted.
        oxide_nm: nominal SiO2 thickness of the chip.
        oxide_stated: False when the user did not state the oxide (``oxide_nm`` is then only a default
            guess); a detector should then search the whole oxide range.
        pixel_size_um: configured pixel size, or None when only per-file metadata will tell.
        device: compute device preference, "auto", "cpu" or "cuda"; CNN detectors resolve it
            with `flakehunter.compute.resolve_device` and fall back to the CPU under "auto".
        run_dir: the run directory (None for in-memory use).
        seed: the run's seed, for anything stochastic.
        config_dir: folder that relative paths in the detector options (profiles, flat fields) refer to.
        flatfield: image(s) of bare substrate taken with this microscope, if the user has them.
    """

    material: Material
    oxide_nm: float
    oxide_stated: bool = True
    pixel_size_um: float | None = None
    device: str = "auto"
    run_dir: Path | None = None
    seed: int = 0
    config_dir: Path | None = None
    flatfield: tuple[Path, ...] = ()


@dataclass
class Detection:
    """One candidate region in one image, in pixels.

    ``layers`` is an integer for thin flakes and None for bulk; ``layer_class`` is the label
    ("1L", "2L", "few", "bulk"); ``score`` is in [0, 1]; ``orientation_deg`` is the crystal-axis
    angle modulo the material's edge symmetry, None when no straight edge was found.
    ``touches_border`` tells the engine the region is cut by the image edge.
    """

    row: float
    col: float
    area_px: float
    layers: int | None
    layer_class: str
    score: float
    orientation_deg: float | None = None
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)  # row0, col0, row1, col1 (exclusive)
    touches_border: bool = False
    contrast_rgb: tuple[float, float, float] | None = None
    detector: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Detector(Protocol):
    """A stage of the detection pipeline."""

    name: str

    def detect(self, image: np.ndarray, meta: ImageMeta, detections: list[Detection]) -> list[Detection]:
        """Return the detections after this stage, given those of the stages before it.

        ``image`` is (rows, cols) or (rows, cols, 3) RGB, uint8 or uint16, as read from the file.
        """


@runtime_checkable
class BatchDetector(Detector, Protocol):
    """A detector that analyses several images in one call (e.g. crops batched on the GPU)."""

    #: How many images it wants per call; the analysis step collects up to this many before calling.
    batch_size: int

    def detect_batch(
        self, images: Sequence[np.ndarray], metas: Sequence[ImageMeta], detections: Sequence[list[Detection]]
    ) -> list[list[Detection]]:
        """`Detector.detect` for each image, in order: one list of detections per image."""


@runtime_checkable
class StatefulDetector(Detector, Protocol):
    """A detector that learns across images (e.g. a flat field). The engine saves its state with
    each finished image, so a resumed run continues exactly where it stopped."""

    def state(self) -> dict[str, Any]:
        """Numpy arrays and JSON values that capture what was learnt so far."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `state` returned."""


@runtime_checkable
class CalibratingDetector(Detector, Protocol):
    """A detector that calibrates itself on the first images of a run (e.g. the real oxide thickness).

    The analysis step (scan, detect and watch alike) calls `calibrate` once with the first
    ``calibration_images`` images of a run before analysing any, so every image is analysed with the
    same calibration, and saves the detector's state durably before any image counts as done. A
    detector must also cope without it (a run with fewer images), calibrating from the images as they
    come.
    """

    calibration_images: int

    def calibration_needed(self) -> bool:
        """True until calibrated (or restored from a saved state)."""

    def calibrate(self, samples: Iterable[tuple[np.ndarray, ImageMeta]]) -> dict[str, Any]:
        """Calibrate on ``samples`` and return a JSON-ready report."""

    def calibration_report(self) -> dict[str, Any]:
        """What calibration is in use, for the run manifest."""
