"""Emulator of a Märzhäuser Tango controller's stage commands.

Protocol as read in Micro-Manager's ``DeviceAdapters/Marzhauser/Marzhauser.cpp`` and in the Tango
driver of the ``comet`` instrument library (reference note §2.4):

* commands end in ``\\r``; replies end in ``\\r``; commands starting ``!`` set, ``?`` query;
* ``?version`` -> a line containing ``TANGO``; ``!autostatus 0`` turns off unsolicited status lines;
  ``?det`` -> the configuration bit field (number of axes in bits 4-7);
* ``!dim 1 1`` (X and Y) and ``!dim z 1`` select µm; ``!dim .. 0`` microsteps (µm = steps · pitch / 819.2
  with the pitch in mm, as Micro-Manager computes the step size);
* ``!moa x y [z]`` / ``!moa z p`` absolute moves: **no reply**; ``?err`` -> the error code of the last
  command (0 = fine), which this emulator clears when read;
* ``?pos`` -> ``x y z``; ``?pos z`` -> ``z``; ``?statusaxis`` -> one character per axis, ``M`` moving,
  ``@`` idle, ``-`` absent (e.g. ``@@M-.``);
* ``!cal x`` drives an axis to its limit switch (homing); ``!a`` aborts;
* error codes as in comet's table, e.g. 4 invalid instruction, 5 number out of range, 6 wrong number
  of parameters, 32 move discarded, target outside limit.

Unconfirmed: the Tango's power-on unit (this emulator starts in microsteps, so a driver that forgets
``!dim`` is caught), whether ``?err`` clears on reading, and the exact format of the unsolicited
status lines with ``!autostatus 1`` (this emulator sends ``?statusaxis``-style lines at each move end).
"""

from __future__ import annotations

from flakehunter.testing.emulators.base import ControllerEmulator

INVALID_INSTRUCTION = 4
OUT_OF_RANGE = 5
WRONG_PARAMETER_COUNT = 6
OUTSIDE_LIMIT = 32


class TangoEmulator(ControllerEmulator):
    """A Tango with X, Y and Z axes; positions kept in µm."""

    name = "tango"
    command_terminator = b"\r"
    reply_terminator = b"\r"
    default_error_code = OUTSIDE_LIMIT

    def __init__(self, *, pitch_mm: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pitch_mm = pitch_mm
        self.dim = {"x": 0, "y": 0, "z": 0}
        self.autostatus = 1
        self.error = 0

    def power_on_settings(self) -> None:
        self.dim = {"x": 0, "y": 0, "z": 0}
        self.autostatus = 1

    def error_reply(self, code: int) -> str:
        return str(code)

    def refuse(self, command: str, code: int) -> None:
        self.error = code  # a Tango reports errors only when asked (?err)

    def _scale(self, axis: str) -> float:
        """µm per unit of the axis's current ``!dim``."""
        return 1.0 if self.dim[axis] == 1 else self.pitch_mm / 819.2

    def _status(self, now: float) -> str:
        return "".join("M" if self.axes[a].busy(now) else "@" for a in ("x", "y", "z")) + "-."

    def handle(self, command: str, now: float) -> None:
        words = command.split()
        verb = words[0].lower()
        args = [w.lower() for w in words[1:]]
        if verb == "?version":
            self.reply("TANGO-DESKTOP, Version 1.40")
        elif verb == "!autostatus" and len(args) == 1:
            self.autostatus = int(args[0])
        elif verb == "?det":
            self.reply(str(3 << 4))
        elif verb == "?pitch" and len(args) == 1:
            self.reply(f"{self.pitch_mm:g}")
        elif verb == "!dim":
            self._set_dim(args)
        elif verb == "?err":
            self.reply(str(self.error))
            self.error = 0
        elif verb == "!err":
            self.error = 0
        elif verb == "?pos":
            axes = args or ["x", "y", "z"]
            if not all(a in self.axes for a in axes):
                self.error = INVALID_INSTRUCTION
                return
            self.reply(" ".join(f"{self.axes[a].where(now) / self._scale(a):.3f}" for a in axes))
        elif verb == "?statusaxis":
            self.reply(self._status(now))
        elif verb in ("!moa", "moa"):
            self._move(args, now)
        elif verb in ("!cal", "!rm"):
            for a in args or ["x", "y"]:
                self.axes[a].move_to(0.0 if verb == "!cal" else self.axes[a].where(now), now)
        elif verb in ("!a", "a"):
            for axis in self.axes.values():
                axis.set_here(axis.where(now), now)
        else:
            self.error = INVALID_INSTRUCTION

    def _set_dim(self, args: list[str]) -> None:
        try:
            if args and args[0] in self.axes:
                self.dim[args[0]] = int(args[1])
            else:
                for axis, value in zip(("x", "y", "z"), args, strict=False):
                    self.dim[axis] = int(value)
        except (ValueError, IndexError):
            self.error = WRONG_PARAMETER_COUNT

    def _move(self, args: list[str], now: float) -> None:
        if args and args[0] in self.axes:
            names, values = [args[0]], args[1:]
        else:
            names, values = ["x", "y", "z"][: len(args)], args
        if not names or len(values) != len(names):
            self.error = WRONG_PARAMETER_COUNT
            return
        try:
            targets = {a: float(v) * self._scale(a) for a, v in zip(names, values, strict=True)}
        except ValueError:
            self.error = OUT_OF_RANGE
            return
        if not all(self.axes[a].in_travel(v) for a, v in targets.items()):
            self.error = OUTSIDE_LIMIT
            return
        end = self.start_move(targets, now)
        if self.autostatus:
            self.reply("@@@-.", at=end)
