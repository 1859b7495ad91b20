"""Emulator of a Prior ProScan III controller's stage commands (standard mode, ``COMP 0``).

Protocol as read in Micro-Manager's ``DeviceAdapters/Prior/Prior.cpp``, python-microscope's
``controllers/prior.py`` and Squid's ``squid/stage/prior.py`` (see
``../shared/reference/hardware-prior-art.md`` §1.5.1, §2.1, §3.1):

* commands end in ``\\r``, replies end in ``\\r``;
* ``G,x,y`` absolute XY move in steps; the reply ``R`` arrives **at the end of the move**;
* ``U,n`` / ``D,n`` move the focus drive up / down by ``n`` steps, ``R`` at the end;
* ``P`` -> ``x,y,z``; ``PX``, ``PY``, ``PZ`` -> one axis; ``$`` -> decimal status, bit 0 X moving,
  bit 1 Y, bit 2 Z;
* ``RES,s`` / ``RES,z`` -> µm per step; ``RES,s,<µm>`` sets it (reply ``0``);
* ``COMP 0`` -> ``0``; ``?`` -> a multi-line description ending ``END``; ``SIS`` homes (``R`` at the
  end, position zeroed); ``K`` stops (``R``);
* errors ``E,<n>``. The numbers used here, 4 (invalid message) and 8 (value out of range), are the
  two Micro-Manager's adapter names; the rest of Prior's table is not in the sources read.

The factory resolution of a ProScan III is not stated in those sources; the emulator starts at
0.1 µm/step (Squid sets ``RES,S,0.1``; Micro-Manager falls back to 0.1 when the controller says 0).
"""

from __future__ import annotations

from flakehunter.testing.emulators.base import ControllerEmulator

INVALID_MESSAGE = 4
OUT_OF_RANGE = 8


class PriorProScanEmulator(ControllerEmulator):
    """A ProScan III with an XY stage and a focus drive."""

    name = "prior"
    command_terminator = b"\r"
    reply_terminator = b"\r"
    default_error_code = OUT_OF_RANGE

    def __init__(self, *, resolution_um: float = 0.1, z_resolution_um: float = 0.1, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.resolution_um = {"s": resolution_um, "z": z_resolution_um}
        self.compatibility_mode = 1

    def power_on_settings(self) -> None:
        self.compatibility_mode = 1

    def error_reply(self, code: int) -> str:
        return f"E,{code}"

    def handle(self, command: str, now: float) -> None:
        parts = [p.strip() for p in command.split(",")]
        head = parts[0].upper()
        if command == "?":
            self.reply("PROSCAN INFORMATION\rDRIVE CHIP VERSION 3.0\rSTAGE = H101/2\rFOCUS = FOCUS MOTOR\rEND")
        elif head == "COMP" or command.upper().startswith("COMP "):
            self.compatibility_mode = int(command.split()[-1]) if " " in command else int(parts[-1])
            self.reply("0")
        elif head == "RES" and len(parts) == 2 and parts[1].lower() in ("s", "z"):
            self.reply(f"{self.resolution_um[parts[1].lower()]:g}")
        elif head == "RES" and len(parts) == 3 and parts[1].lower() in ("s", "z"):
            value = float(parts[2])
            if value <= 0:
                self.reply(self.error_reply(OUT_OF_RANGE))
                return
            self.resolution_um[parts[1].lower()] = value
            self.reply("0")
        elif head == "P" and len(parts) == 1:
            x, y, z = (round(self.axes[a].where(now)) for a in ("x", "y", "z"))
            self.reply(f"{x},{y},{z}")
        elif head in ("PX", "PY", "PZ") and len(parts) == 1:
            self.reply(f"{round(self.axes[head[1].lower()].where(now))}")
        elif head == "$" and len(parts) == 1:
            status = sum(bit for bit, a in ((1, "x"), (2, "y"), (4, "z")) if self.axes[a].busy(now))
            self.reply(str(status))
        elif head == "G" and len(parts) in (3, 4):
            targets: dict[str, float] = dict(zip(("x", "y", "z"), (int(p) for p in parts[1:]), strict=False))
            self._move(targets, now)
        elif head in ("U", "D") and len(parts) == 2:
            delta = int(parts[1]) * (1 if head == "U" else -1)
            self._move({"z": round(self.axes["z"].where(now)) + delta}, now)
        elif head == "SIS" and len(parts) == 1:
            end = max(self.axes[a].move_to(0.0, now) for a in ("x", "y"))
            self.reply("R", at=end)
        elif head == "K" and len(parts) == 1:
            for axis in self.axes.values():
                axis.set_here(round(axis.where(now)), now)
            self.reply("R")
        else:
            self.reply(self.error_reply(INVALID_MESSAGE))

    def _move(self, targets: dict[str, float], now: float) -> None:
        if not all(self.axes[a].in_travel(v) for a, v in targets.items()):
            self.reply(self.error_reply(OUT_OF_RANGE))
            return
        end = self.start_move(targets, now)
        self.reply("R", at=end)
