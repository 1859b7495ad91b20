"""Märzhäuser Tango stage driver.

Protocol (Micro-Manager ``DeviceAdapters/Marzhauser/Marzhauser.cpp`` and the Tango driver of the
``comet`` instrument library; reference note §2.4):

* ``\\r`` both ways. On connect the driver sends a bare ``\\r`` to clear the controller's receive
  buffer (as Micro-Manager does), checks that ``?version`` names a TANGO, turns unsolicited status
  lines off (``!autostatus 0``), and selects µm (``!dim 1 1``; ``!dim z 1`` with a z axis). All of it
  again after a reconnect, in case the controller was power-cycled.
* Positions are µm with ``decimals`` digits (comet sends three: 1 nm); ``!moa x y [z]`` moves and has
  **no reply**; ``?err`` then says whether it was accepted (0) or why not (comet's error table).
* ``?statusaxis`` -> one character per axis, ``M`` while moving; ``?pos`` -> ``x y [z]``.
* ``!cal x`` / ``!cal y`` drive to the limit switches (homing), only when asked.

A lost ``!moa`` cannot be noticed from a reply (there is none); the stage then stays idle where it
was, which the base class detects and answers by sending the move again.

Unsure, and said so: the factory baud rate (commonly 57600 8N2, unverified; set ``baudrate`` and
``stopbits`` to your controller's), whether ``?err`` is cleared by reading it, the exact meaning of
status characters other than ``M`` and ``@``, and the unit a Tango starts in (hence ``!dim``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flakehunter.devices import DeviceContext
from flakehunter.errors import HardwareError
from flakehunter.serial_link import ControllerError, GarbledReply, SerialSettings
from flakehunter.serial_stage import SerialStage, SerialStageOptions, Steps, split_numbers

#: From the comet library's Tango driver.
TANGO_ERRORS = {
    1: "no valid axis name",
    2: "no executable instruction",
    3: "too many characters in command line",
    4: "invalid instruction",
    5: "number is not inside allowed range",
    6: "wrong number of parameters",
    7: "! or ? is missing or not allowed",
    8: "no TVR possible, while axis active",
    10: "function not configured",
    11: "no move instruction possible, while joystick enabled",
    12: "limit switch actuated",
    13: "function not executable, because encoder detected",
    14: "error during calibration (limit switch not released)",
    15: "error during calibration (opposing limit switch actuated)",
    21: "multiple axis moves are forbidden",
    22: "automatic or manual move is not allowed",
    27: "emergency STOP is active",
    29: "servo amplifiers are disabled",
    30: "safety circuit out of order",
    32: "move discarded, target outside limit",
    91: "encoder error",
}


class TangoOptions(SerialStageOptions):
    baudrate: int = Field(57600, gt=0, description="Unverified factory default; use your controller's")
    stopbits: Literal[1, 2] = 2
    decimals: int = Field(3, ge=0, le=4, description="Digits after the point of µm values sent (3 = 1 nm)")


def _error_code(reply: str) -> int:
    try:
        return int(reply.strip())
    except ValueError:
        raise GarbledReply("expected an error number") from None


def _status(reply: str) -> str:
    if len(reply) < 2 or not all(33 <= ord(c) < 127 for c in reply):
        raise GarbledReply("expected one status character per axis")
    return reply


class TangoStage(SerialStage):
    """A stage on a Märzhäuser Tango controller."""

    Options = TangoOptions
    name = "tango"

    def __init__(self, options: TangoOptions, context: DeviceContext | None = None) -> None:
        super().__init__(options, context)
        self.options: TangoOptions = options

    def serial_settings(self) -> SerialSettings:
        return super().serial_settings(stopbits=self.options.stopbits, write_terminator=b"\r", read_terminator=b"\r")

    def steps_per_um(self) -> tuple[float, float, float]:
        scale = 10.0**self.options.decimals
        return (scale, scale, scale)

    def _identify(self) -> str:
        self.link.send("")  # a bare CR clears a half-received command in the Tango
        reply = str(self.link.query("?version"))
        if "TANGO" not in reply.upper():
            raise HardwareError(f"{self.link.where('?version')}: this is not a Tango (it answered {reply[:60]!r})")
        return reply

    def _configure(self) -> None:
        self.link.send("!autostatus 0")
        self.link.send("!dim 1 1")
        if self.options.z_axis:
            self.link.send("!dim z 1")
        self._check_err("!dim")

    def _check_err(self, command: str) -> None:
        code = int(self.link.query("?err", _error_code))  # type: ignore[arg-type]
        if code:
            raise ControllerError(
                f"{self.link.where(command)}: controller error {code} ({TANGO_ERRORS.get(code, 'unknown error')})"
            )

    def _read_steps(self) -> Steps:
        count = 3 if self.options.z_axis else 2

        def parse(reply: str) -> list[float]:
            values = split_numbers(reply, len(reply.split()))
            if len(values) < count:
                raise GarbledReply(f"expected {count} positions")
            return values[:count]

        values = self.link.query("?pos", parse)
        scale = 10.0**self.options.decimals
        z = round(values[2] * scale) if self.options.z_axis else None  # type: ignore[index]
        return (round(values[0] * scale), round(values[1] * scale), z)  # type: ignore[index]

    def _is_busy(self) -> bool:
        status = str(self.link.query("?statusaxis", _status))
        axes = 3 if self.options.z_axis else 2
        return "M" in status[:axes]

    def _format(self, counts: int) -> str:
        d = self.options.decimals
        return f"{counts / 10.0**d:.{d}f}"

    def _command_move(self, target: Steps, current: Steps, timeout_s: float) -> str:
        values = [target[0], target[1]] + ([target[2]] if target[2] is not None else [])
        command = "!moa " + " ".join(self._format(v) for v in values)
        self.link.send(command)
        self._check_err(command)  # no reply to !moa itself; ?err says whether it was accepted
        return command

    def _command_home(self) -> str:
        self.link.send("!cal x")
        self.link.send("!cal y")
        self._check_err("!cal x; !cal y")
        return "!cal x; !cal y"
