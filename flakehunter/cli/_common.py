"""What every command shares: the --debug flag, logging set-up and one-line error reporting."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import typer

from flakehunter.errors import FlakehunterError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    debug: bool = False
    verbose: bool = False


state = CliState()


def setup_logging() -> None:
    level = logging.DEBUG if state.debug else logging.INFO if state.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)


def error(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def reports_errors(func: F) -> F:
    """Turn flakehunter's errors into a one-line message and their exit code (2 bad input, 1 runtime).

    Anything unexpected is exit 1 with one line too; ``--debug`` shows the traceback instead.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setup_logging()
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except FlakehunterError as exc:
            if state.debug:
                raise
            error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error("aborted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if state.debug:
                raise
            error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
