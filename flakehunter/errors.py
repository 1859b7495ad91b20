"""Exceptions that map onto the command line's exit codes.

`InputError` (exit 2) means the user gave something wrong: a config, an argument, a file.
`RuntimeFailure` (exit 1) means something failed while running: hardware, I/O.
Their messages are one line that names the file, the field and what was expected.
"""

from __future__ import annotations

from pathlib import Path


class FlakehunterError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = 1


class InputError(FlakehunterError):
    """Bad input: config, command-line argument or file. Exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    """A config file that does not validate; names the file and the dotted field."""

    def __init__(self, path: str | Path | None, field: str | None, message: str) -> None:
        self.path = str(path) if path is not None else None
        self.field = field
        self.message = message
        parts = [p for p in (self.path, field) if p]
        super().__init__(": ".join([*parts, message]))


class RuntimeFailure(FlakehunterError):
    """A failure while running (hardware, I/O). Exit code 1."""

    exit_code = 1


class HardwareError(RuntimeFailure):
    """A device failed: no reply, bad reply, disconnect, timeout."""


class StageLimitError(HardwareError):
    """A move was refused because the target lies outside the soft travel limits."""


class PluginError(FlakehunterError):
    """A plugin could not be loaded or registered something invalid."""
