"""What every command shares: the --debug flag, logging set-up, one-line error reporting, graceful stop."""

from __future__ import annotations

import functools
import logging
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer

from flakehunter.errors import MAX_MESSAGE_CHARS, FlakehunterError, one_line

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    debug: bool = False
    verbose: bool = False


state = CliState()


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (test runners swap it and close the old one)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _log_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """Library warnings (numpy's RuntimeWarnings, ...) go to the log at debug level: they are noise
    before a one-line error, and ``--debug`` shows them."""
    logging.getLogger("py.warnings").debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)


def setup_logging() -> None:
    level = logging.DEBUG if state.debug else logging.INFO if state.verbose else logging.WARNING
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    warnings.showwarning = _log_warning


def error(message: str) -> None:
    """Print ``error: MESSAGE`` as one line of bounded length (see `flakehunter.errors.one_line`)."""
    typer.secho(f"error: {one_line(message, MAX_MESSAGE_CHARS)}", fg=typer.colors.RED, err=True)


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
            error(f"{type(exc).__name__}: {one_line(str(exc), 200)} (run with --debug for the traceback)")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def stop_on_signals(request_stop: Callable[[], None], what: str) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: finish the ``what`` in hand and stop. A second Ctrl-C aborts at once."""

    def handler(signum: int, frame: Any) -> None:
        request_stop()
        typer.secho(f"\nstopping after the {what} in hand (Ctrl-C again to abort)", fg=typer.colors.YELLOW, err=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def positive_option(value: float | None, option: str, expected: str) -> None:
    """Refuse a command-line number that is not finite and positive (None means "not given")."""
    import math

    from flakehunter.errors import InputError

    if value is not None and (not math.isfinite(value) or value <= 0):
        raise InputError(f"{option}: expected {expected}, got {value}")


def report_after_run(run_dir: Path, enabled: bool) -> None:
    """The run's report (RUN_DIR/report/), written after every scan, detect and watch run unless switched off.

    The results are on disk already; a report that cannot be written is a warning, never a failed run.
    """
    if not enabled:
        return
    from flakehunter.report import write_report

    try:
        index = write_report(run_dir)
    except Exception as exc:
        logging.getLogger("flakehunter.report").warning(
            "%s: no report (%s); run: flakehunter report %s", run_dir, one_line(str(exc), 200), run_dir
        )
        return
    typer.echo(f"  report:     {index}")


def detector_names(values: list[str] | None) -> list[str] | None:
    """``--detectors a,b --detectors c`` as ["a", "b", "c"]; None when the option was not given."""
    from flakehunter.errors import InputError

    if values is None:
        return None
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    if not names:
        raise InputError("--detectors: expected at least one detector name, e.g. contrast,cnn-axis")
    return names


DETECTORS_OPTION = typer.Option(
    "--detectors", "--detector", help="Detector chain, e.g. contrast or contrast,cnn-thickness,cnn-axis (repeatable)."
)

REPORT_OPTION = typer.Option(
    "--report/--no-report", envvar="FLAKEHUNTER_REPORT",
    help="Write RUN_DIR/report/ (overview, gallery) at the end (FLAKEHUNTER_REPORT=0 switches it off).",
)
