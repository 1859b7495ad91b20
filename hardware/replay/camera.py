"""A camera that serves recorded tiles by stage position: re-run a real scan offline.

Point ``source`` at a previous run directory (its ``tiles/``) or any folder of images that carry their
stage position (OME-TIFF ``Plane PositionX/Y``, Micro-Manager's metadata, or flakehunter's own). On
every `snap` the camera asks the configured stage where it is and returns the recorded image whose
centre lies nearest, if it lies within ``tolerance_um``; otherwise it raises `HardwareError`, because
serving a tile from somewhere else would be a silent wrong image. It works with any stage plugin, so
a real driver talking to a protocol emulator can be tested end to end on real pictures.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flakehunter.devices import DeviceContext, Stage
from flakehunter.errors import HardwareError, InputError

log = logging.getLogger(__name__)


class ReplayCameraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Path = Field(description="A run directory (uses its tiles/) or a folder of positioned images")
    tolerance_um: float = Field(2.0, gt=0, description="Largest stage-to-tile-centre distance served")
    z_tolerance_um: float | None = Field(
        None, gt=0, description="Also require |z - tile z| within this; default: z is not compared"
    )
    frame_time_s: float = Field(0.01, ge=0, description="Reported time of one snap (for plans)")
    exposure_ms: float = Field(
        0.0, ge=0, le=60_000, description="Wait this long per snap, as a real camera exposes (timing studies)"
    )


class ReplayCamera:
    """Serves the recorded tile under the stage."""

    Options = ReplayCameraOptions
    name = "replay"

    def __init__(self, options: ReplayCameraOptions, context: DeviceContext) -> None:
        if context.stage is None:
            raise InputError("the replay camera needs a stage to read the position from")
        self.options = options
        self.stage: Stage = context.stage
        root = context.resolve_path(options.source)
        self.folder = root / "tiles" if (root / "tiles").is_dir() else root
        self.pixel_size_um = context.transform.pixel_size_um
        self.exposure_ms: float | None = options.exposure_ms or None
        self._index()
        self.connected = False
        self.served: list[Path] = []

    def _index(self) -> None:
        from flakehunter.tiles import iter_image_files, read_geometry

        if not self.folder.is_dir():
            raise InputError(f"camera.options.source: {self.folder} is not a folder of recorded tiles")
        paths, centres, zs, shapes = [], [], [], set()
        for path in iter_image_files([self.folder]):
            geometry = read_geometry(path)
            if geometry is None or geometry[1].x_um is None or geometry[1].y_um is None:
                log.warning("replay camera: %s has no stage position; skipped", path)
                continue
            shape, meta = geometry
            paths.append(path)
            centres.append((meta.x_um, meta.y_um))
            zs.append(math.nan if meta.z_um is None else meta.z_um)
            shapes.add(shape)
            if meta.pixel_size_um and abs(meta.pixel_size_um - self.pixel_size_um) > 1e-3 * self.pixel_size_um:
                log.warning("replay camera: %s was recorded at %.4f µm/px, the config says %.4f",
                            path, meta.pixel_size_um, self.pixel_size_um)
        if not paths:
            raise InputError(f"camera.options.source: no images with a stage position in {self.folder}")
        if len(shapes) != 1:
            raise InputError(f"camera.options.source: the images in {self.folder} differ in size: {sorted(shapes)}")
        self.paths = paths
        self.centres_um = np.asarray(centres, float)
        self.z_um = np.asarray(zs, float)
        self.shape = shapes.pop()

    # -- device contract --------------------------------------------------------------------------
    def connect(self) -> None:
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def frame_time_s(self) -> float:
        return max(self.options.frame_time_s, self.options.exposure_ms / 1000)

    def snap(self) -> np.ndarray:
        from flakehunter.tiles import read_image

        if not self.connected:
            raise HardwareError("replay camera: snap() before connect()")
        x, y, z = self.stage.position_um()
        distance = np.hypot(self.centres_um[:, 0] - x, self.centres_um[:, 1] - y)
        best = int(np.argmin(distance))
        if distance[best] > self.options.tolerance_um:
            raise HardwareError(
                f"replay camera: no recorded tile within {self.options.tolerance_um:g} µm of the stage at "
                f"({x:.2f}, {y:.2f}) µm; the nearest, {self.paths[best].name}, is {distance[best]:.2f} µm away"
            )
        ztol = self.options.z_tolerance_um
        if ztol is not None and not math.isnan(self.z_um[best]) and abs(self.z_um[best] - z) > ztol:
            raise HardwareError(
                f"replay camera: {self.paths[best].name} was recorded at z={self.z_um[best]:.2f} µm, "
                f"the stage is at z={z:.2f} µm (more than {ztol:g} µm apart)"
            )
        started = time.perf_counter()
        image, _ = read_image(self.paths[best])
        self.served.append(self.paths[best])
        # A real camera takes at least its exposure; reading the recorded file counts towards it.
        time.sleep(max(0.0, self.options.exposure_ms / 1000 - (time.perf_counter() - started)))
        return image
