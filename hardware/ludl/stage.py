"""Ludl MAC 5000 / MAC 6000 stage driver.

Protocol (Micro-Manager ``DeviceAdapters/Ludl/Ludl.cpp``, python-microscope ``controllers/ludl.py``;
reference note §1.5.2, §2.3):

* 9600 baud, **8N2**; commands end in ``\\r``, replies in ``\\n``. Micro-Manager detects the controller
  with 11 ms between characters; ``char_delay_s`` does the same if yours drops characters.
* The bytes ``0xFF 0x41`` select the high-level (text) command set; the driver sends them on connect
  and after every reconnect, as Micro-Manager does.
* ``VER`` identifies; ``WHERE X Y [Z]`` -> ``:A x y [z]`` in steps.
* ``MOVE X=.. Y=.. [Z=..]`` is acknowledged with ``:A`` **at once**; completion is polled with
  ``STATUS``, which answers one character, ``B`` or ``N`` (Micro-Manager reads a single byte: no line
  ending is assumed, one is tolerated).
* Errors ``:N <code>`` (python-microscope's table); ``HOME X Y`` homes, only when asked.

Unsure: the step size depends on the stage's lead screw and encoder, and the sources give none but
Micro-Manager's 0.1 µm default, used here (``steps_per_um: 10``); measure yours (``flakehunter
calibrate-stage`` compares it with the camera). Micro-Manager reverses Ludl's Y for its own
convention; ``invert_y`` does that here if you need it.
"""

from __future__ import annotations

from pydantic import Field

from flakehunter.devices import DeviceContext
from flakehunter.errors import HardwareError
from flakehunter.serial_link import ControllerError, GarbledReply, SerialSettings
from flakehunter.serial_stage import SerialStage, SerialStageOptions, Steps, split_numbers

LUDL_ERRORS = {
    -1: "unknown command",
    -2: "illegal point type or axis, or module not installed",
    -3: "not enough parameters",
    -4: "parameter out of range",
    -10: "no slides selected",
    -11: "end of list",
    -12: "slide error",
    -16: "motor move error (stall, end limit...)",
    -17: "initialization error",
    -21: "process aborted by HALT",
}
HIGH_LEVEL_COMMANDS = b"\xff\x41"


class LudlOptions(SerialStageOptions):
    steps_per_um: float = Field(10.0, gt=0, description="Steps per µm (Micro-Manager's default: 0.1 µm steps)")
    z_steps_per_um: float = Field(10.0, gt=0)
    char_delay_s: float = Field(0.0, ge=0, le=0.1, description="Pause after each character sent")


def _check_error(reply: str) -> str:
    if reply.startswith(":N"):
        try:
            code = int(reply[2:].split()[0])
        except (ValueError, IndexError):
            raise GarbledReply("unreadable error code") from None
        raise ControllerError(f"{reply} ({LUDL_ERRORS.get(code, f'error {code}')})")
    return reply


def _ack(reply: str) -> str:
    if not _check_error(reply).startswith(":A"):
        raise GarbledReply("expected ':A'")
    return reply


def _status_complete(buffer: bytes) -> bool:
    """STATUS answers a single B or N; an error reply ends with a line feed."""
    stripped = buffer.strip()
    return stripped[:1] in (b"B", b"N") or b"\n" in buffer


def _busy(reply: str) -> bool:
    reply = _check_error(reply)
    if reply[:1] not in ("B", "N") or len(reply) != 1:
        raise GarbledReply("expected 'B' or 'N'")
    return reply == "B"


class LudlStage(SerialStage):
    """A stage on a Ludl MAC 5000 / 6000 controller."""

    Options = LudlOptions
    name = "ludl"

    def __init__(self, options: LudlOptions, context: DeviceContext | None = None) -> None:
        super().__init__(options, context)
        self.options: LudlOptions = options

    def serial_settings(self) -> SerialSettings:
        return super().serial_settings(stopbits=2, char_delay_s=self.options.char_delay_s,
                                       write_terminator=b"\r", read_terminator=b"\n")

    def steps_per_um(self) -> tuple[float, float, float]:
        o = self.options
        return (o.steps_per_um, o.steps_per_um, o.z_steps_per_um)

    def _identify(self) -> str:
        self._configure()
        reply = str(self.link.query("VER", lambda r: _check_error(r)))
        if reply.startswith(":A"):
            reply = reply[2:].strip()
        if not reply:
            raise HardwareError(f"{self.link.where('VER')}: empty version reply; is this a Ludl controller?")
        return reply

    def _configure(self) -> None:
        self.link.send(HIGH_LEVEL_COMMANDS, terminate=False)

    def _read_steps(self) -> Steps:
        axes = "X Y Z" if self.options.z_axis else "X Y"
        count = 3 if self.options.z_axis else 2

        def parse(reply: str) -> list[float]:
            return split_numbers(_ack(reply)[2:], count)

        values = self.link.query(f"WHERE {axes}", parse)
        z = int(values[2]) if self.options.z_axis else None  # type: ignore[index]
        return (int(values[0]), int(values[1]), z)  # type: ignore[index]

    def _is_busy(self) -> bool:
        return bool(self.link.query("STATUS", _busy, complete=_status_complete))

    def _command_move(self, target: Steps, current: Steps, timeout_s: float) -> str:
        command = f"MOVE X={target[0]} Y={target[1]}"
        if target[2] is not None:
            command += f" Z={target[2]}"
        self.link.query(command, _ack)  # acknowledged at once; the move goes on
        return command

    def _command_home(self) -> str:
        self.link.query("HOME X Y", _check_error)
        return "HOME X Y"
