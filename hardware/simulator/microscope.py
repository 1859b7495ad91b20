"""A simulator stage and camera over one chip, outside a scan: frames rendered at chosen stage positions.

For tests, benchmarks and training-data generation that need images (and their truth) without running a
whole scan.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flakehunter.devices import AxisRange, DeviceContext, TravelLimits
from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.camera import SimulatorCamera, SimulatorCameraOptions
from flakehunter.hardware.simulator.chip import ChipLayout
from flakehunter.hardware.simulator.stage import SimulatorStage, SimulatorStageOptions


class SimulatedMicroscope:
    """A simulated stage (instant moves, travel wide open) and camera looking at ``layout``."""

    def __init__(
        self,
        layout: ChipLayout,
        *,
        material: str = "graphene",
        oxide_nm: float = 90.0,
        seed: int = 0,
        transform: PixelTransform | None = None,
        **camera_options: Any,
    ) -> None:
        self.layout = layout
        self.transform = transform or PixelTransform(1.15)
        ctx = DeviceContext(transform=self.transform, material=material, oxide_nm=oxide_nm, seed=seed)
        self.stage = SimulatorStage(SimulatorStageOptions(time_scale=0), ctx)
        wide = AxisRange(-1e7, 1e7)
        self.stage.limits = TravelLimits(wide, wide, wide)
        ctx.stage = self.stage
        self.camera = SimulatorCamera(SimulatorCameraOptions(**camera_options), ctx)
        self.camera.layout = layout
        self.camera.connect()

    @property
    def shape(self) -> tuple[int, int]:
        """Frame (rows, cols)."""
        return self.camera.shape

    def snap_at(self, x_um: float, y_um: float, defocus_um: float = 0.0) -> np.ndarray:
        """Move to (x, y), focused on the chip there (plus ``defocus_um``), and take a frame."""
        self.stage.move_to_um(x_um, y_um, float(self.layout.focus_z_um_at(x_um, y_um)) + defocus_um)
        return self.camera.snap()

    def label_image_at(self, x_um: float, y_um: float) -> np.ndarray:
        """The ground-truth label image (DESIGN.md §4) of the frame at (x, y)."""
        return self.camera.label_image(x_um, y_um)
