"""A simulated XYZ stage with travel limits and realistic move timing.

Moves follow a trapezoidal velocity profile per axis (the slowest axis decides), then settle;
`move_to_um` blocks for that long (scaled by ``time_scale``), so scans on the simulator have the
same rhythm as on hardware. Zero speed, zero settle or ``time_scale: 0`` make moves instant for tests.
"""

from __future__ import annotations

import math
import threading
import time

from pydantic import BaseModel, ConfigDict, Field

from flakehunter.devices import AxisRange, DeviceContext, Position, TravelLimits


class SimulatorStageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speed_um_s: float = Field(20000.0, ge=0, description="XY top speed; 0 = instantaneous")
    acceleration_um_s2: float = Field(100000.0, gt=0)
    z_speed_um_s: float = Field(2000.0, ge=0, description="Z top speed; 0 = instantaneous")
    settle_s: float = Field(0.02, ge=0, description="Wait after each move before reporting idle")
    time_scale: float = Field(1.0, ge=0, description="Multiplies every wait; 0 for instant tests")
    start_um: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _axis_time_s(distance_um: float, speed: float, accel: float) -> float:
    """Duration of a trapezoidal (or triangular) move over ``distance_um``."""
    d = abs(distance_um)
    if d == 0 or speed == 0:
        return 0.0
    ramp = speed * speed / accel  # distance spent accelerating and decelerating to full speed
    if d <= ramp:
        return 2.0 * math.sqrt(d / accel)
    return 2.0 * speed / accel + (d - ramp) / speed


class SimulatorStage:
    """The simulator's stage. It refuses moves outside its soft limits, never clips them."""

    Options = SimulatorStageOptions
    name = "simulator"

    def __init__(self, options: SimulatorStageOptions, context: DeviceContext) -> None:
        self.options = options
        wide = AxisRange(-math.inf, math.inf)
        self.limits = TravelLimits(wide, wide, wide)  # the scan engine sets the configured limits
        self._position = Position(*options.start_um)
        self._lock = threading.Lock()
        self.connected = False
        self.moves: list[Position] = []  # every target reached, for tests and replays

    def connect(self) -> None:
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def position_um(self) -> Position:
        with self._lock:
            return self._position

    def estimate_move_s(self, start: Position, end: Position) -> float:
        o = self.options
        xy = max(
            _axis_time_s(end.x_um - start.x_um, o.speed_um_s, o.acceleration_um_s2),
            _axis_time_s(end.y_um - start.y_um, o.speed_um_s, o.acceleration_um_s2),
        )
        z = _axis_time_s(end.z_um - start.z_um, o.z_speed_um_s, o.acceleration_um_s2)
        moved = start != end
        return (max(xy, z) + (o.settle_s if moved else 0.0)) * o.time_scale

    def move_to_um(self, x_um: float, y_um: float, z_um: float | None = None) -> None:
        self.limits.check(x_um, y_um, z_um, device="simulator stage")
        with self._lock:
            start = self._position
            target = Position(float(x_um), float(y_um), start.z_um if z_um is None else float(z_um))
            wait = self.estimate_move_s(start, target)
            if wait > 0:
                time.sleep(wait)
            self._position = target
            self.moves.append(target)
