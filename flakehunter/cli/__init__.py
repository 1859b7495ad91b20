"""The ``flakehunter`` command line: a thin typer app, one module per command group.

Heavy imports (numpy, the scan engine, torch) happen inside the commands so that ``--help`` and
``plugins`` stay fast. Plugins add their own commands through the ``register_commands`` hook (the
contrast detector's ``calibrate``, the simulator's ``simulate``), exactly as third-party ones do.
"""

from __future__ import annotations

from typing import Annotated

import typer

from flakehunter import __version__
from flakehunter.cli._common import state

app = typer.Typer(
    name="flakehunter",
    help="Hunt thin 2D-material flakes with a motorized microscope.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flakehunter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state.debug = debug
    state.verbose = verbose


def _register_commands() -> None:
    from flakehunter.cli import daemon, detect, evaluate, hardware, new_plugin, plugins, report, scan, train, watch
    from flakehunter.registry import register_cli_commands

    for module in (scan, detect, evaluate, watch, daemon, plugins, new_plugin, train, hardware, report):
        module.register(app)
    register_cli_commands(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()
