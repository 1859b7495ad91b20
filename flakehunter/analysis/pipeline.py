"""The detector pipeline and the one factory that builds it from a config (scan, detect and watch alike).

`PipelineSpec` says what to build (material, nominal oxide, detector sections, pixel size fallback,
compute device, seed, flat field, and the config file that relative paths resolve against);
`build_pipeline` validates every detector's options through the registry and instantiates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flakehunter.analysis.detector import (
    BatchDetector,
    CalibratingDetector,
    Detection,
    DetectionContext,
    Detector,
    StatefulDetector,
)
from flakehunter.config import DetectorSection, validate_plugin_options
from flakehunter.errors import ConfigError, InputError

if TYPE_CHECKING:
    from flakehunter.config import DetectConfig, ScanConfig
    from flakehunter.registry import Registry
    from flakehunter.tiles import ImageMeta


class DetectionPipeline:
    """Detectors in config order; each refines what the previous ones returned."""

    def __init__(self, detectors: Sequence[Detector], context: DetectionContext) -> None:
        if not detectors:
            raise InputError("detectors: at least one detector is needed")
        self.detectors = list(detectors)
        self.context = context

    @property
    def batch_size(self) -> int:
        """How many images the pipeline wants per call (1 unless a detector batches)."""
        return max([1, *(d.batch_size for d in self.detectors if isinstance(d, BatchDetector))])

    def run(self, image: np.ndarray, meta: ImageMeta) -> list[Detection]:
        return self.run_batch([image], [meta])[0]

    def run_batch(self, images: Sequence[np.ndarray], metas: Sequence[ImageMeta]) -> list[list[Detection]]:
        """Every detector over every image; a batching detector sees them together."""
        found: list[list[Detection]] = [[] for _ in images]
        for detector in self.detectors:
            if isinstance(detector, BatchDetector) and len(images) > 1:
                found = detector.detect_batch(images, metas, found)
            else:
                found = [detector.detect(im, m, d) for im, m, d in zip(images, metas, found, strict=True)]
        return found

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


#: What a detector is told when the user does not state the oxide (with ``oxide_stated = False``).
DEFAULT_OXIDE_NM = 90.0


@dataclass(frozen=True)
class PipelineSpec:
    """What a run's detector pipeline is built from.

    Attributes:
        material: registry name of the material.
        oxide_nm: nominal SiO2 thickness the user gave; None when not stated.
        detectors: the config's detector sections, in order.
        pixel_size_um: the configured pixel size, or None where only the files' metadata tell.
        device: "auto", "cpu" or "cuda".
        seed: the run's seed.
        flatfield: images of bare substrate (relative paths resolve like the config's own).
        config_path: the config file the settings came from (errors name it; relative paths in options
            resolve against its folder); None for command-line settings, which resolve against the
            working directory.
    """

    material: str
    oxide_nm: float | None
    detectors: tuple[DetectorSection, ...] = (DetectorSection(name="contrast"),)
    pixel_size_um: float | None = None
    device: str = "auto"
    seed: int = 0
    flatfield: tuple[Path, ...] = ()
    config_path: Path | None = field(default=None)

    @classmethod
    def from_scan(cls, config: ScanConfig, config_path: Path, device: str = "auto") -> PipelineSpec:
        return cls(
            material=config.material.name,
            oxide_nm=config.material.oxide_nm,
            detectors=tuple(config.detectors),
            pixel_size_um=config.optics.pixel_size_um,
            device=device,
            seed=config.seed,
            flatfield=tuple(config.optics.flatfield),
            config_path=config_path,
        )

    @classmethod
    def from_detect(cls, config: DetectConfig, config_path: Path | None) -> PipelineSpec:
        return cls(
            material=config.material.name,
            oxide_nm=config.material.oxide_nm,
            detectors=tuple(config.detectors),
            pixel_size_um=config.pixel_size_um,
            device=config.device,
            seed=config.seed,
            flatfield=tuple(config.flatfield),
            config_path=config_path,
        )

    @property
    def config_dir(self) -> Path:
        return self.config_path.parent if self.config_path is not None else Path.cwd()

    def describe(self) -> dict[str, Any]:
        return {
            "material": self.material,
            "oxide_nm": self.oxide_nm,
            "detectors": [d.model_dump(mode="json") for d in self.detectors],
            "pixel_size_um": self.pixel_size_um,
            "device": self.device,
            "seed": self.seed,
            "flatfield": [str(p) for p in self.flatfield],
        }


def build_pipeline(spec: PipelineSpec, registry: Registry, run_dir: Path | None = None) -> DetectionPipeline:
    """Validate every detector section through the registry and instantiate the pipeline.

    Errors name the config file and field (``detectors[1].options.profile``), or the command-line
    option when the settings came from the command line.
    """
    where = spec.config_path
    try:
        material = registry.material(spec.material)
    except InputError as exc:
        if where is None:
            raise InputError(f"--material: {exc}") from None
        raise ConfigError(where, "material.name", str(exc)) from None
    base = spec.config_dir
    context = DetectionContext(
        material=material,
        oxide_nm=DEFAULT_OXIDE_NM if spec.oxide_nm is None else spec.oxide_nm,
        oxide_stated=spec.oxide_nm is not None,
        pixel_size_um=spec.pixel_size_um,
        device=spec.device,
        run_dir=run_dir,
        seed=spec.seed,
        config_dir=base,
        flatfield=tuple(p.expanduser() if p.expanduser().is_absolute() else base / p for p in spec.flatfield),
    )
    detectors = []
    for i, section in enumerate(spec.detectors):
        name = f"detectors[{i}]"
        try:
            factory = registry.get("detector", section.name).obj
        except InputError as exc:
            if where is None:
                raise InputError(f"--detectors: {exc}") from None
            raise ConfigError(where, f"{name}.name", str(exc)) from None
        options = validate_plugin_options(factory, section.options, where, f"{name}.options")
        try:
            detectors.append(factory(options, context))
        except InputError as exc:
            raise ConfigError(where, f"{name}.options", str(exc)) from None
    return DetectionPipeline(detectors, context)
