"""Emulator of a Ludl MAC 5000 / MAC 6000 controller's stage commands (high-level command set).

Protocol as read in Micro-Manager's ``DeviceAdapters/Ludl/Ludl.cpp`` and python-microscope's
``controllers/ludl.py`` (reference note §1.5.2, §2.3):

* the two bytes ``0xFF 0x41`` switch the controller to the high-level command set (no reply);
* commands end in ``\\r``; replies end in ``\\n``; 9600 baud, 8N2;
* ``MOVE X=.. Y=.. Z=..`` absolute move in steps: the ack ``:A`` comes **at once**;
* ``STATUS`` (or ``STATUS X``) answers a single character, ``B`` (busy) or ``N`` (not busy), with no
  line ending (Micro-Manager reads exactly one byte);
* ``WHERE X Y [Z]`` -> ``:A x y [z]``; ``HERE X=0 Y=0`` sets the position; ``HOME X Y`` homes;
  ``HALT`` stops; ``VER`` -> a version line followed by ``:A``;
* errors ``:N <code>``: -1 unknown command, -2 illegal axis, -3 not enough parameters, -4 parameter
  out of range, -16 motor move error, -21 aborted by HALT (python-microscope's ``LUDL_ERRORS``).

Whether ``VER``'s version line itself starts with ``:A`` is not clear from the sources (Micro-Manager
reads one line, then "a :A still in the buffer"); this emulator sends the version line, then ``:A``.
"""

from __future__ import annotations

import re

from flakehunter.testing.emulators.base import ControllerEmulator

UNKNOWN_COMMAND = -1
ILLEGAL_AXIS = -2
NOT_ENOUGH_PARAMETERS = -3
OUT_OF_RANGE = -4
MOTOR_ERROR = -16

_ASSIGN = re.compile(r"^([XYZ])=([-+]?\d+)$", re.IGNORECASE)
HIGH_LEVEL = b"\xff\x41"
LOW_LEVEL = b"\xff\x42"


class LudlMAC5000Emulator(ControllerEmulator):
    """A MAC 5000 with X, Y and Z (focus) modules."""

    name = "ludl"
    command_terminator = b"\r"
    reply_terminator = b"\n"
    default_error_code = OUT_OF_RANGE

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.command_level = "low"

    def power_on_settings(self) -> None:
        self.command_level = "low"

    def preprocess(self, buffer: bytearray) -> None:
        while True:
            at = buffer.find(b"\xff")
            if at < 0 or at + 1 >= len(buffer):
                return
            level = bytes(buffer[at : at + 2])
            self.command_level = "high" if level == HIGH_LEVEL else "low" if level == LOW_LEVEL else self.command_level
            del buffer[at : at + 2]

    def error_reply(self, code: int) -> str:
        return f":N {code}"

    def handle(self, command: str, now: float) -> None:
        if self.command_level != "high":
            return  # the low-level set is binary; high-level text is not understood
        words = command.split()
        verb = words[0].upper()
        args = words[1:]
        if verb == "VER":
            self.reply("MAC5000 Version 1.52")
            self.reply(":A ")
        elif verb == "STATUS":
            self.reply("B" if self.moving(now) else "N", terminate=False)
        elif verb == "WHERE":
            axes = [a.lower() for a in args] or ["x", "y"]
            if not all(a in self.axes for a in axes):
                self.reply(self.error_reply(ILLEGAL_AXIS))
                return
            self.reply(":A " + " ".join(str(round(self.axes[a].where(now))) for a in axes))
        elif verb == "MOVE":
            targets = self.axis_assignments(
                args, _ASSIGN, missing_code=NOT_ENOUGH_PARAMETERS, bad_axis_code=ILLEGAL_AXIS
            )
            if targets is None:
                return
            if not all(self.axes[a].in_travel(v) for a, v in targets.items()):
                self.reply(self.error_reply(OUT_OF_RANGE))
                return
            self.start_move(targets, now)
            self.reply(":A ")
        elif verb == "HERE":
            targets = self.axis_assignments(
                args, _ASSIGN, missing_code=NOT_ENOUGH_PARAMETERS, bad_axis_code=ILLEGAL_AXIS
            )
            if targets is None:
                return
            for a, v in targets.items():
                self.axes[a].set_here(v, now)
            self.reply(":A ")
        elif verb == "HOME":
            for a in [a.lower() for a in args] or ["x", "y"]:
                self.axes[a].move_to(0.0, now)
            self.reply(":A ")
        elif verb == "HALT":
            for axis in self.axes.values():
                axis.set_here(round(axis.where(now)), now)
            self.reply(":A ")
        else:
            self.reply(self.error_reply(UNKNOWN_COMMAND))
