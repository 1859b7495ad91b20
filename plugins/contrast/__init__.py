"""Built-in detector plugin ``contrast``: thin flakes by their optical contrast, on any setup.

Everything the classical detector needs lives here: background and flat field (`background`), plateaus
found without a model (`plateaus`), the layer ladder learnt from the data (`ladder`, its search in
`ladder_search`), setups that share a ladder (`setups`), focus relative to the run (`focus`), per-layer
contrasts from the model or a measured profile (`layers`, `calibration`, `profile`), the crystal axis
from straight edges (`axis`), and its ``flakehunter calibrate`` command (`cli`). docs/detection.md
explains the method and its numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flakehunter.hookspecs import RegisterDetector, hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def register_detectors(register: RegisterDetector) -> None:
    from flakehunter.plugins.contrast.detector import ContrastDetector

    register("contrast", ContrastDetector)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from flakehunter.plugins.contrast.cli import calibrate

    cli.command("calibrate")(calibrate)
