"""Emulator of an ASI MS-2000 controller's stage commands.

Protocol as read in Micro-Manager's ``DeviceAdapters/ASIStage`` (``ASIBase.cpp``, ``ASIXYStage.cpp``),
python-microscope's ``controllers/asi.py`` and Squid's ``squid/stage/asi.py`` (reference note §1.5.3,
§2.2, §3.2):

* commands end in ``\\r``; replies end in ``\\r\\n``;
* positions in the controller's native unit, **0.1 µm**;
* ``M X=.. Y=.. Z=..`` (or ``MOVE``) absolute move: the ack ``:A`` comes **at once**, completion is
  polled with ``/`` (or ``STATUS``), which answers ``B`` (busy) or ``N`` (not busy);
* ``W X Y [Z]`` (or ``WHERE``) -> ``:A x y [z]``;
* ``! X Y`` (``HOME``) homes, ``H X=0 Y=0`` (``HERE``) zeroes, ``\\`` (``HALT``) stops;
* ``V`` -> ``:A Version: ...``;
* errors ``:N-<code>``: -1 unknown command, -2 unrecognised axis, -3 missing parameters,
  -4 parameter out of range, -21 halted. (-1, -4 and -21 appear in the sources read; -2 and -3 follow
  ASI's documented numbering but were not confirmed there.)
"""

from __future__ import annotations

import re

from flakehunter.testing.emulators.base import ControllerEmulator

UNKNOWN_COMMAND = 1
UNKNOWN_AXIS = 2
MISSING_PARAMETERS = 3
OUT_OF_RANGE = 4

_ASSIGN = re.compile(r"^([XYZ])=([-+]?\d+(?:\.\d*)?)$", re.IGNORECASE)


class ASIMS2000Emulator(ControllerEmulator):
    """An MS-2000 with X, Y and Z axes."""

    name = "asi"
    command_terminator = b"\r"
    reply_terminator = b"\r\n"
    default_error_code = OUT_OF_RANGE

    def error_reply(self, code: int) -> str:
        return f":N-{code}"

    def handle(self, command: str, now: float) -> None:
        words = command.split()
        verb = words[0].upper()
        args = words[1:]
        if verb == "V":
            self.reply(":A Version: USB-9.2p ")
        elif verb in ("/", "STATUS"):
            self.reply("B" if self.moving(now) else "N")
        elif verb in ("W", "WHERE"):
            axes = [a.lower() for a in args] or ["x", "y"]
            if not all(a in self.axes for a in axes):
                self.reply(self.error_reply(UNKNOWN_AXIS))
                return
            values = " ".join(str(round(self.axes[a].where(now))) for a in axes)
            self.reply(f":A {values} ")
        elif verb in ("M", "MOVE"):
            targets = self.axis_assignments(args, _ASSIGN, missing_code=MISSING_PARAMETERS, bad_axis_code=UNKNOWN_AXIS)
            if targets is None:
                return
            if not all(self.axes[a].in_travel(v) for a, v in targets.items()):
                self.reply(self.error_reply(OUT_OF_RANGE))
                return
            self.start_move(targets, now)
            self.reply(":A ")  # acknowledged at once; the move goes on
        elif verb in ("!", "HOME"):
            axes = [a.lower() for a in args] or ["x", "y"]
            for a in axes:
                self.axes[a].move_to(0.0, now)
            self.reply(":A ")
        elif verb in ("H", "HERE"):
            targets = self.axis_assignments(args, _ASSIGN, missing_code=MISSING_PARAMETERS, bad_axis_code=UNKNOWN_AXIS)
            if targets is None:
                return
            for a, v in targets.items():
                self.axes[a].set_here(v, now)
            self.reply(":A ")
        elif verb in ("\\", "HALT"):
            for axis in self.axes.values():
                axis.set_here(round(axis.where(now)), now)
            self.reply(":A ")
        else:
            self.reply(self.error_reply(UNKNOWN_COMMAND))
