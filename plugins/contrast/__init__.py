"""Built-in detector plugin ``contrast``: thin flakes by thin-film optical contrast.

Everything the classical detector needs lives here: background and flat field (`background`), the
layer model (`layers`), self-calibration (`calibration`), measured material profiles (`profile`),
the crystal axis from straight edges (`axis`), and its ``flakehunter calibrate`` command (`cli`).
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
