"""Exceptions that map onto the command line's exit codes.

`InputError` (exit 2) means the user gave something wrong: a config, an argument, a file.
`RuntimeFailure` (exit 1) means something failed while running: hardware, I/O.
Their messages are one line that names the file, the field and what was expected.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

#: Longest error line the command line prints (the message after ``error: ``), in characters.
MAX_MESSAGE_CHARS = 400
#: Longest rendering of a user's value inside a message.
MAX_VALUE_CHARS = 80

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters.

    Line breaks become spaces, other control characters their ``\\xNN`` escape; a text that is
    too long keeps its start and its end, with `` … `` in between (the end often names the cause).
    """
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    if len(text) > 4 * limit:  # escaping below only grows a text; cut the bulk of a huge one first
        text = text[: 2 * limit] + text[-2 * limit :]
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if len(text) <= limit:
        return text
    head = (limit - 3) * 2 // 3
    tail = limit - 3 - head
    return f"{text[:head]} … {text[-tail:]}" if tail > 0 else text[:limit]


class _ShortRepr(reprlib.Repr):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 3, 6, 6, 4, 4
        self.maxstring = self.maxother = self.maxlong = limit

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:  # str() of a huge int is slow (and refused above 4300 digits)
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


def short_repr(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters without walking all of a huge value."""
    try:
        text = _ShortRepr(limit).repr(value)
    except Exception:  # a value whose repr fails is still reported
        text = f"<{type(value).__name__}>"
    return one_line(text, limit)


class FlakehunterError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = 1


class InputError(FlakehunterError):
    """Bad input: config, command-line argument or file. Exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    """A config file that does not validate; names the file and the dotted field.

    The message is one line of at most `MAX_MESSAGE_CHARS`: a long path or field gives way in
    the middle, the message takes what is left.
    """

    def __init__(self, path: str | Path | None, field: str | None, message: str) -> None:
        self.path = str(path) if path is not None else None
        self.field = one_line(field, 100) if field else field
        head = ": ".join(p for p in (one_line(self.path, 160) if self.path else None, self.field) if p)
        rest = MAX_MESSAGE_CHARS - len(head) - 2 if head else MAX_MESSAGE_CHARS
        self.message = one_line(message, rest)
        super().__init__(": ".join(p for p in (head, self.message) if p))


class RuntimeFailure(FlakehunterError):
    """A failure while running (hardware, I/O). Exit code 1."""

    exit_code = 1


class HardwareError(RuntimeFailure):
    """A device failed: no reply, bad reply, disconnect, timeout."""


class StageLimitError(HardwareError):
    """A move was refused because the target lies outside the soft travel limits."""


class PluginError(FlakehunterError):
    """A plugin could not be loaded or registered something invalid."""
