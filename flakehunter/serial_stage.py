"""What every serial stage driver shares: µm in, controller units inside, safe blocking moves.

A vendor driver (``flakehunter.hardware.prior`` and friends) says how to talk to its controller; this
base class decides *when*, so the safety rules hold for every vendor alike:

* **Soft limits before any byte.** `move_to_um` checks the target against ``limits`` (set by the
  scan engine from ``stage.limits_um``) and refuses it with `StageLimitError` before the port is
  touched. Nothing is ever clipped.
* **Units.** µm in and out; steps (or the controller's unit) only inside, with a configurable
  resolution whose default is the controller's, and optional axis inversion.
* **Blocking moves that end where they should.** After the move command (Prior replies at the end
  of the move; ASI and Ludl acknowledge at once), the controller is polled until it reports idle
  *and* its position equals the target within ``position_tolerance_um``. A stage that reports idle
  without having moved (a lost command) gets the command again (bounded); one that stops elsewhere
  (a stalled motor) or is still moving at the deadline raises `HardwareError` naming the port, the
  command and both positions. Never a silent wrong position.
* **Settling.** ``settle_s`` after each move before the camera may expose (Micro-Manager PR #1293).
* **Homing only when asked** (`home`, or ``home_on_connect: true``); `connect` never moves.
* **One lock per port** for the whole move and its polls (`SerialLink`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flakehunter.devices import AxisRange, DeviceContext, Position, TravelLimits
from flakehunter.errors import HardwareError
from flakehunter.serial_link import SerialLink, SerialSettings

log = logging.getLogger(__name__)

Steps = tuple[int, int, int | None]


class SerialStageOptions(BaseModel):
    """Options every serial stage accepts (``stage.options`` in the config)."""

    model_config = ConfigDict(extra="forbid")

    port: str = Field(description="Serial device or pyserial URL: /dev/ttyUSB0, /dev/serial/by-id/..., COM3, "
                                  "socket://host:port, rfc2217://host:port")
    baudrate: int = Field(9600, gt=0)
    timeout_s: float = Field(0.5, gt=0, description="Reply timeout of ordinary commands")
    retries: int = Field(2, ge=0, le=10, description="Extra attempts after no reply or a garbled reply")
    reconnect_timeout_s: float = Field(10.0, ge=0, description="How long to wait for a dropped USB port")
    z_axis: bool = Field(False, description="The controller drives the focus (z) too")
    invert_x: bool = False
    invert_y: bool = False
    invert_z: bool = False
    speed_um_s: float = Field(2000.0, gt=0, description="Slowest expected XY speed: move timeouts and plans")
    z_speed_um_s: float = Field(200.0, gt=0, description="Slowest expected z speed")
    move_timeout_margin_s: float = Field(2.0, ge=0, description="Added to the expected move time")
    poll_interval_s: float = Field(0.02, ge=0, description="Pause between busy polls")
    settle_s: float = Field(0.05, ge=0, description="Wait after a move before the camera exposes")
    position_tolerance_um: float = Field(1.0, gt=0, description="How close a finished move must end")
    home_on_connect: bool = Field(False, description="Home (drive to the limit switches) when connecting")
    home_timeout_s: float = Field(120.0, gt=0)
    fixed_z_um: float = Field(0.0, description="The z reported when the controller has no z axis")


class SerialStage:
    """Base class of the serial stage drivers; see the module docstring for the rules it enforces.

    Subclasses set ``name``, ``Options`` and ``serial_settings`` and implement `_identify`,
    `_configure`, `_read_steps`, `_is_busy`, `_command_move` and `_command_home`.
    """

    Options: type[SerialStageOptions] = SerialStageOptions
    name = "serial"
    #: How long a stage may report idle right after a move command before it must have started.
    start_grace_s = 0.25
    #: True where the move command returns only when the move has ended (Prior's ``R``).
    reply_at_end_of_move = False

    def __init__(self, options: SerialStageOptions, context: DeviceContext | None = None) -> None:
        self.options = options
        wide = AxisRange(-math.inf, math.inf)
        self.limits = TravelLimits(wide, wide, wide)  # the scan engine sets the configured limits
        self.identity = ""
        self.link = SerialLink(
            options.port, self.serial_settings(), device=f"{self.name} stage", on_reconnect=self._on_reconnect
        )
        self.moves_sent = 0
        self.resends = 0

    # -- what subclasses provide -------------------------------------------------------------------
    def serial_settings(self, **protocol: Any) -> SerialSettings:
        """The link settings from the options, plus the controller's own (terminators, stop bits, ...)."""
        o = self.options
        return SerialSettings(baudrate=o.baudrate, timeout_s=o.timeout_s, retries=o.retries,
                              reconnect_timeout_s=o.reconnect_timeout_s, **protocol)

    def steps_per_um(self) -> tuple[float, float, float]:
        """Controller units per µm of x, y, z."""
        raise NotImplementedError

    def _identify(self) -> str:
        """Ask the controller who it is; raise if it is not the expected controller."""
        raise NotImplementedError

    def _configure(self) -> None:
        """Put the controller in the mode the driver expects (units, no unsolicited output...)."""

    def _read_steps(self) -> Steps:
        """Current position in controller units (z None without a z axis)."""
        raise NotImplementedError

    def _is_busy(self) -> bool:
        """Whether any axis is moving."""
        raise NotImplementedError

    def _command_move(self, target: Steps, current: Steps, timeout_s: float) -> str:
        """Send the move command(s); return the command text (for error messages)."""
        raise NotImplementedError

    def _command_home(self) -> str:
        raise NotImplementedError

    # -- the device contract -----------------------------------------------------------------------
    @property
    def describe_name(self) -> str:
        return f"{self.name} stage on {self.options.port}"

    def connect(self) -> None:
        """Open the port, identify the controller and configure it. Moves nothing unless
        ``home_on_connect`` is set."""
        self.link.open()
        try:
            self.identity = self._identify()
            self._configure()
            if self.options.home_on_connect:
                self.home()
        except BaseException:
            self.link.close()
            raise

    def close(self) -> None:
        self.link.close()

    def position_um(self) -> Position:
        return self._to_um(self._read_steps())

    def estimate_move_s(self, start: Position, end: Position) -> float:
        o = self.options
        xy = max(abs(end.x_um - start.x_um), abs(end.y_um - start.y_um)) / o.speed_um_s
        z = abs(end.z_um - start.z_um) / o.z_speed_um_s if o.z_axis else 0.0
        moved = start != end
        return max(xy, z) + (o.settle_s if moved else 0.0)

    def move_to_um(self, x_um: float, y_um: float, z_um: float | None = None) -> None:
        """Move and block until the controller is idle at the target (see the module docstring)."""
        # Both checks come before any byte is sent.
        self.limits.check(x_um, y_um, z_um, device=self.describe_name)
        o = self.options
        if z_um is not None and not o.z_axis and abs(z_um - o.fixed_z_um) > o.position_tolerance_um:
            raise HardwareError(
                f"{self.describe_name}: move to z={z_um:.3f} µm refused: this stage has no z axis "
                f"(stage.options.z_axis: false); its z stays at {o.fixed_z_um:g} µm"
            )
        target_z = z_um if (z_um is not None and o.z_axis) else None
        with self.link.transaction():
            current = self._read_steps()
            target = self._to_steps(x_um, y_um, target_z, keep_z=current[2])
            self._move_steps(target, current)
        if o.settle_s > 0:
            time.sleep(o.settle_s)

    def home(self) -> None:
        """Drive to the limit switches and zero there (only ever when asked)."""
        with self.link.transaction():
            command = self._command_home()
            self._wait_idle(command, self.options.home_timeout_s)

    def describe(self) -> dict[str, Any]:
        """What ``flakehunter hardware check`` reports."""
        spu = self.steps_per_um()
        return {
            "plugin": self.name,
            "port": self.options.port,
            "identity": self.identity,
            "steps_per_um": {"x": spu[0], "y": spu[1], "z": spu[2] if self.options.z_axis else None},
            "reconnects": self.link.reconnects,
        }

    # -- conversions -------------------------------------------------------------------------------
    def _to_steps(self, x_um: float, y_um: float, z_um: float | None, *, keep_z: int | None) -> Steps:
        o = self.options
        sx, sy, sz = self.steps_per_um()
        x = round(x_um * sx) * (-1 if o.invert_x else 1)
        y = round(y_um * sy) * (-1 if o.invert_y else 1)
        z = keep_z if z_um is None else round(z_um * sz) * (-1 if o.invert_z else 1)
        return (int(x), int(y), None if z is None else int(z))

    def _to_um(self, steps: Steps) -> Position:
        o = self.options
        sx, sy, sz = self.steps_per_um()
        x = steps[0] / sx * (-1 if o.invert_x else 1)
        y = steps[1] / sy * (-1 if o.invert_y else 1)
        z = o.fixed_z_um if steps[2] is None else steps[2] / sz * (-1 if o.invert_z else 1)
        return Position(float(x), float(y), float(z))

    def _tolerance_steps(self) -> tuple[float, float, float]:
        tol = self.options.position_tolerance_um
        return tuple(max(0.5, tol * s) for s in self.steps_per_um())  # type: ignore[return-value]

    def _at(self, position: Steps, target: Steps) -> bool:
        tol = self._tolerance_steps()
        for axis in range(3):
            if target[axis] is None or position[axis] is None:
                continue
            if abs(position[axis] - target[axis]) > tol[axis]:  # type: ignore[operator]
                return False
        return True

    def _move_time_s(self, target: Steps, current: Steps) -> float:
        """Generous time a move may take: expected duration at the slowest speed plus a margin."""
        o = self.options
        sx, sy, sz = self.steps_per_um()
        xy = max(abs(target[0] - current[0]) / sx, abs(target[1] - current[1]) / sy) / o.speed_um_s
        z = 0.0
        if target[2] is not None and current[2] is not None:
            z = abs(target[2] - current[2]) / sz / o.z_speed_um_s
        return 1.5 * (xy + z) + o.move_timeout_margin_s + o.timeout_s

    def _show(self, steps: Steps) -> str:
        p = self._to_um(steps)
        z = "" if steps[2] is None else f", {p.z_um:.3f}"
        return f"({p.x_um:.3f}, {p.y_um:.3f}{z}) µm"

    # -- moving ------------------------------------------------------------------------------------
    def _move_steps(self, target: Steps, current: Steps) -> None:
        timeout = self._move_time_s(target, current)
        attempts = 1 + self.options.retries
        for attempt in range(1, attempts + 1):
            command = self._command_move(target, current, timeout)
            self.moves_sent += 1
            outcome, position = self._wait_arrival(command, target, current, timeout)
            if outcome == "arrived":
                return
            # Idle where it started: the command never arrived (no reply, or no ack to lose).
            current = position
            if attempt < attempts:
                self.resends += 1
                log.warning("%s: %s: the stage did not start moving; sending it again (attempt %d of %d)",
                            self.describe_name, command, attempt + 1, attempts)
        raise HardwareError(
            f"{self.link.where(command)}: the stage never started moving towards {self._show(target)}; "
            f"it stays at {self._show(current)} after {1 + self.options.retries} attempt(s)"
        )

    def _wait_arrival(self, command: str, target: Steps, start: Steps, timeout_s: float) -> tuple[str, Steps]:
        """Poll until idle at the target. Returns ("arrived"|"not_started", position)."""
        began = time.monotonic()
        deadline = began + timeout_s
        seen_busy = self.reply_at_end_of_move
        position = start
        while True:
            busy = self._is_busy()
            seen_busy = seen_busy or busy
            if not busy:
                position = self._read_steps()
                if self._at(position, target):
                    return "arrived", position
                idle_for = time.monotonic() - began
                if not seen_busy and self._at(position, start) and idle_for >= self.start_grace_s:
                    return "not_started", position
                if seen_busy and idle_for >= self.start_grace_s and self._stopped_short(position, target):
                    raise HardwareError(
                        f"{self.link.where(command)}: the stage stopped at {self._show(position)} instead of "
                        f"{self._show(target)} (stalled, blocked or halted)"
                    )
            if time.monotonic() >= deadline:
                position = self._read_steps()
                state = "still moving" if busy else "idle"
                raise HardwareError(
                    f"{self.link.where(command)}: {state} at {self._show(position)} after {timeout_s:.1f} s; "
                    f"expected to reach {self._show(target)}"
                )
            if self.options.poll_interval_s > 0:
                time.sleep(self.options.poll_interval_s)

    def _stopped_short(self, position: Steps, target: Steps) -> bool:
        """An idle stage away from its target: confirm with a second look (odemis PR #2473: some
        controllers report 'not moving' for a moment half-way through a move)."""
        time.sleep(max(self.options.poll_interval_s, 0.02))
        if self._is_busy():
            return False
        return not self._at(self._read_steps(), target)

    def _wait_idle(self, command: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._is_busy():
            if time.monotonic() >= deadline:
                raise HardwareError(f"{self.link.where(command)}: still moving after {timeout_s:.1f} s")
            time.sleep(max(self.options.poll_interval_s, 0.005))

    def _on_reconnect(self) -> None:
        """After a USB drop the controller may have been power-cycled: configure it again."""
        self._configure()


def split_numbers(text: str, count: int, *, separator: str | None = None) -> list[float]:
    """Exactly ``count`` numbers from a reply; `GarbledReply` otherwise."""
    from flakehunter.serial_link import GarbledReply

    parts = [p for p in (text.split(separator) if separator else text.split()) if p]
    if len(parts) != count:
        raise GarbledReply(f"expected {count} numbers, got {len(parts)}")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise GarbledReply("not numbers") from None
