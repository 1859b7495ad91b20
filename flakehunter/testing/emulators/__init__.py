"""Protocol emulators of the serial stage controllers flakehunter drives, on real pseudo-terminals.

Use them to test a driver (or a whole scan) without hardware::

    from flakehunter.testing.emulators import Fault, PriorProScanEmulator

    with PriorProScanEmulator() as prior:
        stage_options = {"port": prior.port}          # what the driver opens, like /dev/ttyUSB0
        prior.inject(Fault("no_reply", match=r"^G,"))  # the next move command is lost on the wire
        ...
        assert prior.moves[-1] == {"x": 12000, "y": 3400}  # targets received, in controller units

Each emulator records every command line (`commands`) and every move target (`moves`) it received.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flakehunter.testing.emulators.asi import ASIMS2000Emulator
from flakehunter.testing.emulators.base import FAULT_KINDS, Axis, ControllerEmulator, Fault
from flakehunter.testing.emulators.ludl import LudlMAC5000Emulator
from flakehunter.testing.emulators.prior import PriorProScanEmulator
from flakehunter.testing.emulators.tango import TangoEmulator

if TYPE_CHECKING:
    from flakehunter.serial_stage import SerialStage

#: Emulator class by stage plugin name.
EMULATORS: dict[str, type[ControllerEmulator]] = {
    "prior": PriorProScanEmulator,
    "asi": ASIMS2000Emulator,
    "ludl": LudlMAC5000Emulator,
    "tango": TangoEmulator,
}

#: Stage options that suit an emulator: short timeouts, no settling, quick polls. The emulated axes
#: move at 200 000 controller units/s (20 mm/s at 0.1 µm units), so ``speed_um_s`` stays below that.
FAST_STAGE_OPTIONS: dict[str, object] = {
    "z_axis": True,
    "timeout_s": 0.2,
    "settle_s": 0.0,
    "poll_interval_s": 0.002,
    "speed_um_s": 20000.0,
    "z_speed_um_s": 5000.0,
    "move_timeout_margin_s": 0.2,
    "reconnect_timeout_s": 2.0,
    "position_tolerance_um": 0.5,
}


@contextmanager
def emulated_stage(
    name: str, *, emulator_options: dict[str, Any] | None = None, **options: object
) -> Iterator[tuple[ControllerEmulator, SerialStage]]:
    """Start the ``name`` controller's emulator and yield ``(emulator, connected stage driver)``.

    ``options`` override `FAST_STAGE_OPTIONS`; the driver is the built-in plugin of the same name.
    """
    from flakehunter.registry import get_registry

    factory = get_registry().get("stage", name).obj
    with EMULATORS[name](**(emulator_options or {})) as emulator:
        stage = factory(factory.Options(**{"port": emulator.port, **FAST_STAGE_OPTIONS, **options}), None)
        stage.connect()
        try:
            yield emulator, stage
        finally:
            stage.close()

__all__ = [
    "EMULATORS",
    "FAST_STAGE_OPTIONS",
    "FAULT_KINDS",
    "ASIMS2000Emulator",
    "Axis",
    "ControllerEmulator",
    "Fault",
    "LudlMAC5000Emulator",
    "PriorProScanEmulator",
    "TangoEmulator",
    "emulated_stage",
]
