"""ASI MS-2000 stage driver.

Protocol (Micro-Manager ``DeviceAdapters/ASIStage``, python-microscope ``controllers/asi.py``, Squid
``squid/stage/asi.py``; reference note §1.5.3, §2.2, §3.2):

* 9600 baud 8N1 by default (the controller also runs at 19200, 28800 and 115200); commands end in
  ``\\r``, replies in ``\\r\\n``: the driver reads up to the ``\\n`` and strips, so the ``\\n`` never
  lingers as the first byte of the next reply (the terminator bug behind python-microscope #296).
* Native unit 0.1 µm (``steps_per_um: 10``), as Micro-Manager and Squid use it.
* ``M X=.. Y=.. Z=..`` is acknowledged with ``:A`` **at once**; the driver then polls ``/`` until ``N``
  and the position (``W X Y Z`` -> ``:A x y z``) equals the target.
* ``V`` identifies (``:A Version: ...``); ``! X Y`` homes, only when asked; errors are ``:N-<code>``.

Direction: Micro-Manager flips X (``UM X=-10000``) because ASI's positive X is towards the top-right;
here ``invert_x``/``invert_y`` flip an axis if your stage's directions disagree with the camera's.
Unsure: error codes other than -1, -4 and -21 (named in the sources) use ASI's usual numbering.
"""

from __future__ import annotations

from pydantic import Field

from flakehunter.devices import DeviceContext
from flakehunter.errors import HardwareError
from flakehunter.serial_link import ControllerError, GarbledReply, SerialSettings
from flakehunter.serial_stage import SerialStage, SerialStageOptions, Steps, split_numbers

ASI_ERRORS = {
    1: "unknown command",
    2: "unrecognised axis parameter",
    3: "missing parameters",
    4: "parameter out of range",
    5: "operation failed",
    6: "undefined error",
    21: "serial command halted by HALT",
}


class ASIOptions(SerialStageOptions):
    steps_per_um: float = Field(10.0, gt=0, description="Controller units per µm (MS-2000: 0.1 µm units)")
    z_steps_per_um: float = Field(10.0, gt=0)


def _check_error(reply: str) -> str:
    if reply.startswith(":N"):
        try:
            code = abs(int(reply[2:].strip()))
        except ValueError:
            raise GarbledReply("unreadable error code") from None
        raise ControllerError(f"{reply} ({ASI_ERRORS.get(code, f'error {code}')})")
    return reply


def _ack(reply: str) -> str:
    if not _check_error(reply).startswith(":A"):
        raise GarbledReply("expected ':A'")
    return reply


def _busy(reply: str) -> bool:
    reply = _check_error(reply)
    if reply not in ("B", "N"):
        raise GarbledReply("expected 'B' or 'N'")
    return reply == "B"


class ASIStage(SerialStage):
    """A stage on an ASI MS-2000 controller."""

    Options = ASIOptions
    name = "asi"

    def __init__(self, options: ASIOptions, context: DeviceContext | None = None) -> None:
        super().__init__(options, context)
        self.options: ASIOptions = options

    def serial_settings(self) -> SerialSettings:
        return super().serial_settings(write_terminator=b"\r", read_terminator=b"\n")

    def steps_per_um(self) -> tuple[float, float, float]:
        o = self.options
        return (o.steps_per_um, o.steps_per_um, o.z_steps_per_um)

    def _identify(self) -> str:
        reply = str(self.link.query("V", lambda r: r))
        if not reply.startswith(":A"):
            raise HardwareError(f"{self.link.where('V')}: this is not an ASI controller (it answered {reply[:60]!r})")
        return reply[2:].strip()

    def _read_steps(self) -> Steps:
        axes = "X Y Z" if self.options.z_axis else "X Y"
        count = 3 if self.options.z_axis else 2

        def parse(reply: str) -> list[float]:
            return split_numbers(_ack(reply)[2:], count)

        values = self.link.query(f"W {axes}", parse)
        z = round(values[2]) if self.options.z_axis else None  # type: ignore[index]
        return (round(values[0]), round(values[1]), z)  # type: ignore[index]

    def _is_busy(self) -> bool:
        return bool(self.link.query("/", _busy))

    def _command_move(self, target: Steps, current: Steps, timeout_s: float) -> str:
        command = f"M X={target[0]} Y={target[1]}"
        if target[2] is not None:
            command += f" Z={target[2]}"
        self.link.query(command, _ack)  # acknowledged at once; the move goes on
        return command

    def _command_home(self) -> str:
        self.link.query("! X Y", _ack)
        return "! X Y"
