"""Device contracts: what the scan engine expects of a stage and a camera.

Stage coordinates are micrometres everywhere public; a driver converts to its controller's steps.
Moves block until the stage is idle and settled, so an image is never taken while it moves. Soft
travel limits are checked before a command is sent; a move outside them raises
`StageLimitError`, it is never clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

import numpy as np

from flakehunter.errors import StageLimitError

if TYPE_CHECKING:
    from flakehunter.geometry import PixelTransform


class Position(NamedTuple):
    """A stage position in µm."""

    x_um: float
    y_um: float
    z_um: float


@dataclass(frozen=True)
class AxisRange:
    """Inclusive soft limits of one axis, in µm."""

    min_um: float
    max_um: float

    def contains(self, value_um: float) -> bool:
        return self.min_um <= value_um <= self.max_um


@dataclass(frozen=True)
class TravelLimits:
    """Soft travel limits of a stage, in µm."""

    x: AxisRange
    y: AxisRange
    z: AxisRange

    def check(self, x_um: float | None, y_um: float | None, z_um: float | None, *, device: str) -> None:
        """Raise `StageLimitError` naming the axis if a target lies outside the limits."""
        for axis, value in (("x", x_um), ("y", y_um), ("z", z_um)):
            if value is None:
                continue
            rng: AxisRange = getattr(self, axis)
            if not np.isfinite(value) or not rng.contains(value):
                raise StageLimitError(
                    f"{device}: move to {axis}={value:.3f} µm refused: outside soft limits "
                    f"[{rng.min_um:g}, {rng.max_um:g}] µm"
                )


@runtime_checkable
class Stage(Protocol):
    """A motorized XYZ stage."""

    name: str
    limits: TravelLimits

    def connect(self) -> None:
        """Open the connection. Must not move the stage (no homing unless asked)."""

    def close(self) -> None:
        """Release the hardware; safe to call twice."""

    def position_um(self) -> Position:
        """Current position in µm."""

    def move_to_um(self, x_um: float, y_um: float, z_um: float | None = None) -> None:
        """Move and block until idle and settled. ``z_um=None`` keeps z.

        Raises `StageLimitError` before sending anything if the target is outside ``limits``,
        `HardwareError` on timeout or a controller error.
        """

    def estimate_move_s(self, start: Position, end: Position) -> float:
        """Seconds a move from ``start`` to ``end`` takes, settling included (for plans)."""


@runtime_checkable
class Camera(Protocol):
    """A camera that returns one frame per call."""

    name: str
    shape: tuple[int, int]
    """Frame size as (rows, cols)."""

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def snap(self) -> np.ndarray:
        """Expose and return one frame: (rows, cols) mono or (rows, cols, 3) RGB, uint8/uint16."""

    def frame_time_s(self) -> float:
        """Seconds one `snap` takes (exposure and readout), for plans."""


@dataclass
class DeviceContext:
    """What a stage or camera factory may need besides its own options.

    Attributes:
        stage: the configured stage (None while the stage itself is being built); cameras that
            render or replay what lies under the stage read its position.
        transform: the configured pixel-to-stage transform (pixel size, rotation, flips).
        material: name of the material on the chip; oxide_nm: its nominal oxide thickness.
        seed: the scan's seed, so simulated hardware is reproducible.
        run_dir: the run directory, where devices may leave artefacts.
        config_dir: folder of the config file; relative paths in options resolve against it.
    """

    transform: PixelTransform
    material: str
    oxide_nm: float
    seed: int
    run_dir: Path | None = None
    config_dir: Path | None = None
    stage: Stage | None = None

    def resolve_path(self, path: str | Path) -> Path:
        """A path from the options, relative to the config file's folder."""
        path = Path(path).expanduser()
        if not path.is_absolute() and self.config_dir is not None:
            path = self.config_dir / path
        return path
