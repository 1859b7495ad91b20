"""Prior ProScan III stage driver.

Protocol (Micro-Manager ``DeviceAdapters/Prior/Prior.cpp``, python-microscope ``controllers/prior.py``,
Squid ``squid/stage/prior.py``; reference note §1.5.1, §2.1, §3.1):

* 9600 baud 8N1 by default (the controller can be switched up to 115200 with ``BAUD``), ``\\r`` both
  ways; ``COMP 0`` selects standard mode (reply ``0``).
* ``?`` identifies (``PROSCAN INFORMATION`` ... ``END``).
* ``RES,s`` / ``RES,z`` give the step size in µm; ``RES,s,<µm>`` sets it. With ``steps_per_um``
  unset the driver uses the controller's value (Micro-Manager forces 0.1 µm when the controller says
  0, and so does this driver); with it set, the driver writes it to the controller.
* ``G,x,y`` moves XY in steps and the controller answers ``R`` **when the move has ended**, so the
  driver waits for ``R`` with a timeout that grows with the distance; ``U,n`` / ``D,n`` move the focus
  drive relative to where it is (as Micro-Manager's Z stage does), also ``R`` at the end.
* ``P`` -> ``x,y,z`` in steps; ``$`` -> status bits (1 X, 2 Y, 4 Z moving).
* ``SIS`` homes, only when asked; errors are ``E,<n>``.

Unsure, and said so: the factory step size of a ProScan III, the full error-code table (only 4 and 8
are named in the sources read), whether ``$`` can report busy after the ``R`` (the driver checks it
anyway), and whether an absolute z command exists on all firmware (the driver uses the relative
``U``/``D`` that Micro-Manager uses, recomputed from the controller's z before every attempt so that a
lost reply can never make it move twice).
"""

from __future__ import annotations

from pydantic import Field

from flakehunter.devices import DeviceContext
from flakehunter.errors import HardwareError
from flakehunter.serial_link import ControllerError, GarbledReply, SerialLinkError, SerialSettings
from flakehunter.serial_stage import SerialStage, SerialStageOptions, Steps, split_numbers

#: The Prior error numbers the sources name (Micro-Manager's adapter); others print as "error n".
PRIOR_ERRORS = {4: "invalid message", 8: "value out of range"}
#: Micro-Manager's fallback when the controller reports a step size of 0.
FALLBACK_RESOLUTION_UM = 0.1


class PriorOptions(SerialStageOptions):
    steps_per_um: float | None = Field(None, gt=0, description="XY steps per µm; default: the controller's RES,s")
    z_steps_per_um: float | None = Field(None, gt=0, description="Focus steps per µm; default: RES,z")


def _check_error(reply: str) -> str:
    if reply.startswith("E,"):
        try:
            code = int(reply[2:])
        except ValueError:
            raise GarbledReply("unreadable error code") from None
        raise ControllerError(f"{reply} ({PRIOR_ERRORS.get(code, f'error {code}')})")
    return reply


def _expect(expected: str):
    def parse(reply: str) -> str:
        if _check_error(reply) != expected:
            raise GarbledReply(f"expected {expected!r}")
        return reply

    return parse


def _number(reply: str) -> float:
    return float(_check_error(reply))


class PriorStage(SerialStage):
    """A stage on a Prior ProScan III controller."""

    Options = PriorOptions
    name = "prior"
    reply_at_end_of_move = True

    def __init__(self, options: PriorOptions, context: DeviceContext | None = None) -> None:
        super().__init__(options, context)
        self.options: PriorOptions = options
        res = FALLBACK_RESOLUTION_UM
        self._resolution_um = [
            1.0 / options.steps_per_um if options.steps_per_um else res,
            1.0 / options.z_steps_per_um if options.z_steps_per_um else res,
        ]

    def serial_settings(self) -> SerialSettings:
        return super().serial_settings(write_terminator=b"\r", read_terminator=b"\r")

    def steps_per_um(self) -> tuple[float, float, float]:
        xy, z = self._resolution_um
        return (1.0 / xy, 1.0 / xy, 1.0 / z)

    # -- set-up --------------------------------------------------------------------------------------
    def _identify(self) -> str:
        reply = str(self.link.query("?", complete=lambda buf: buf.rstrip().endswith(b"END")))
        lines = [line.strip() for line in reply.replace("\n", "\r").split("\r") if line.strip()]
        if not lines or not any(word in lines[0].upper() for word in ("PROSCAN", "OPTISCAN")):
            raise HardwareError(
                f"{self.link.where('?')}: this is not a Prior ProScan controller (it answered {reply[:60]!r})"
            )
        return "; ".join(line for line in lines if line != "END")

    def _configure(self) -> None:
        self.link.query("COMP 0", _expect("0"))
        for index, (axis, wanted) in enumerate((("s", self.options.steps_per_um), ("z", self.options.z_steps_per_um))):
            if axis == "z" and not self.options.z_axis:
                continue
            if wanted:
                self.link.query(f"RES,{axis},{1.0 / wanted:g}", _expect("0"))
                self._resolution_um[index] = 1.0 / wanted
            else:
                res = float(self.link.query(f"RES,{axis}", _number))
                self._resolution_um[index] = res if res > 0 else FALLBACK_RESOLUTION_UM

    # -- state ---------------------------------------------------------------------------------------
    def _read_steps(self) -> Steps:
        def parse(reply: str) -> list[float]:
            return split_numbers(_check_error(reply), 3, separator=",")

        x, y, z = self.link.query("P", parse)  # type: ignore[misc]
        return (int(x), int(y), int(z) if self.options.z_axis else None)

    def _is_busy(self) -> bool:
        mask = 7 if self.options.z_axis else 3
        status = self.link.query("$", lambda r: int(_check_error(r)))
        return bool(int(status) & mask)

    # -- moves ---------------------------------------------------------------------------------------
    def _command_move(self, target: Steps, current: Steps, timeout_s: float) -> str:
        commands = []
        if (target[0], target[1]) != (current[0], current[1]):
            command = f"G,{target[0]},{target[1]}"
            self.link.query(command, _expect("R"), timeout_s=timeout_s)  # R comes at the end of the move
            commands.append(command)
        if target[2] is not None and current[2] is not None and target[2] != current[2]:
            commands.append(self._move_z(target[2], timeout_s))
        return "; ".join(commands) or f"G,{target[0]},{target[1]}"

    def _move_z(self, target: int, timeout_s: float) -> str:
        """Relative focus moves, recomputed from the controller's own z before each attempt, so a
        lost ``R`` can never make the drive move twice."""
        command = ""
        for _attempt in range(1 + self.options.retries):
            self._wait_idle(command or "PZ", timeout_s)
            z = int(self.link.query("PZ", _number))  # type: ignore[arg-type]
            delta = target - z
            if delta == 0:
                return command or "PZ"
            command = f"U,{delta}" if delta > 0 else f"D,{-delta}"
            try:
                self.link.query(command, _expect("R"), timeout_s=timeout_s, retries=0)
                return command
            except SerialLinkError:
                continue  # no or garbled reply: look where the drive is, then try again
        attempts = 1 + self.options.retries
        raise HardwareError(f"{self.link.where(command)}: no end-of-move reply after {attempts} attempts")

    def _command_home(self) -> str:
        self.link.query("SIS", _expect("R"), timeout_s=self.options.home_timeout_s, retries=0)
        return "SIS"
