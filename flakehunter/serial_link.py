"""One serial connection to a controller, shared by every device on that port.

A device *has* a `SerialLink` (composition, as python-microscope's own note on its deprecated
``SerialDeviceMixin`` recommends). Every transaction follows the rules the reference note distils from
Micro-Manager, python-microscope, Squid and OpenFlexure:

* **One lock per physical port**, held across the write and the read. Links opened on the same port
  (an XY stage and a focus drive on one controller, say) share that lock and the open handle, so two
  threads can never interleave a command and someone else's reply (Micro-Manager issue #620).
* **Flush before write**: stale bytes (a late reply to an earlier, timed-out command) are discarded
  before each command, so they are never read as the answer to this one.
* **Explicit terminators** in both directions, per controller; a reply is complete when its terminator
  (or a caller's completeness test) arrives, never "whatever came within the timeout".
* **Timeouts and bounded retries**: no reply, an incomplete reply or a garbled one (the parser raises
  `GarbledReply`) is retried a bounded number of times; a controller *error code* (the parser raises
  `ControllerError`) is not retried. Either way the final error names the device, the port and the
  command.
* **Reconnect after a USB drop**: a `serial.SerialException`/`OSError` closes the handle and reopens the
  same port name until it reappears (``reconnect_timeout_s``); then every device on the port re-sends
  its configuration (``on_reconnect``) and the command is retried.

Ports are anything `serial.serial_for_url` opens: ``/dev/ttyUSB0``, ``/dev/serial/by-id/...`` (a name
that survives renumbering after a drop), ``COM3``, ``socket://host:port`` (ser2net, terminal servers) and
``rfc2217://host:port``. Local device files are opened with ``exclusive=True`` so a second program cannot
share the port unnoticed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import serial

from flakehunter.errors import HardwareError, InputError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long one low-level read call may block; the reply timeout is enforced around it.
_READ_SLICE_S = 0.02
#: Pause between attempts to reopen a port that disappeared.
_REOPEN_PAUSE_S = 0.05


class GarbledReply(ValueError):
    """Raised by a reply parser for a reply it cannot make sense of; the command is retried."""


class ControllerError(HardwareError):
    """The controller answered with an error code. Not retried: resending would fail the same way."""


class SerialLinkError(HardwareError):
    """No usable reply after the bounded retries, or the port could not be (re)opened."""


@dataclass(frozen=True)
class SerialSettings:
    """How to talk to one controller.

    Attributes:
        baudrate, bytesize, parity, stopbits: the port settings (8N1 at 9600 unless the vendor differs).
        timeout_s: how long to wait for a reply to an ordinary command.
        write_terminator: appended to every command (``b"\\r"`` for all four vendors here).
        read_terminator: ends a reply (``b"\\r"`` Prior and Tango, ``b"\\n"`` ASI and Ludl).
        char_delay_s: pause after each written byte, for controllers that drop characters
            (Micro-Manager detects Ludl controllers with 11 ms).
        retries: extra attempts after a timeout or a garbled reply (bounded; 0 = no retry).
        reconnect_timeout_s: how long to wait for a vanished port (USB drop) to come back.
        encoding: of commands and replies.
    """

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    timeout_s: float = 0.5
    write_terminator: bytes = b"\r"
    read_terminator: bytes = b"\r"
    char_delay_s: float = 0.0
    retries: int = 2
    reconnect_timeout_s: float = 10.0
    encoding: str = "ascii"

    def port_settings(self) -> tuple[int, int, str, float]:
        return (self.baudrate, self.bytesize, self.parity, self.stopbits)


def is_url(port: str) -> bool:
    """True for a pyserial URL (``socket://``, ``rfc2217://``, ``loop://``...) rather than a device name."""
    return "://" in port


def _port_key(port: str) -> str:
    if is_url(port):
        return port
    return os.path.realpath(port) if os.path.exists(port) else port


@dataclass
class _Port:
    """A physical port: its lock, its open handle and the links that use it."""

    name: str
    settings: SerialSettings
    factory: Callable[..., Any]
    lock: threading.RLock = field(default_factory=threading.RLock)
    handle: Any = None
    users: list[SerialLink] = field(default_factory=list)
    reconnecting: bool = False

    def open_handle(self) -> None:
        s = self.settings
        kwargs: dict[str, Any] = {
            "baudrate": s.baudrate,
            "bytesize": s.bytesize,
            "parity": s.parity,
            "stopbits": s.stopbits,
            "timeout": _READ_SLICE_S,
        }
        if not is_url(self.name):  # the rfc2217 client supports neither
            kwargs["exclusive"] = True
            kwargs["write_timeout"] = max(1.0, s.timeout_s)
        self.handle = self.factory(self.name, **kwargs)

    def close_handle(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            try:
                handle.close()
            except Exception:  # a dropped device may fail to close; it is gone either way
                log.debug("closing %s failed", self.name, exc_info=True)


_PORTS: dict[str, _Port] = {}
_PORTS_LOCK = threading.Lock()


class SerialLink:
    """A device's connection to its controller's port.

    Args:
        port: device name or pyserial URL.
        settings: terminators, timeouts, retries and port settings.
        device: how errors name the device, e.g. ``"prior stage"``.
        on_reconnect: called (with the port lock held) after the port was reopened following a drop,
            to re-send the device's configuration; its own commands are not retried through another
            reconnect.
        serial_factory: opens a port; `serial.serial_for_url` unless a test injects another.
    """

    def __init__(
        self,
        port: str,
        settings: SerialSettings,
        *,
        device: str,
        on_reconnect: Callable[[], None] | None = None,
        serial_factory: Callable[..., Any] | None = None,
    ) -> None:
        if not port or not str(port).strip():
            raise InputError(f"{device}: options.port is empty; expected a device such as /dev/ttyUSB0 or a URL")
        self.port = str(port)
        self.settings = settings
        self.device = device
        self.on_reconnect = on_reconnect
        self._factory = serial_factory or serial.serial_for_url
        self._shared: _Port | None = None
        self.reconnects = 0

    # -- life cycle ---------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._shared is not None

    def open(self) -> None:
        """Open the port (or join the handle another device on the same port already opened)."""
        if self._shared is not None:
            return
        key = _port_key(self.port)
        with _PORTS_LOCK:
            shared = _PORTS.get(key)
            if shared is None:
                shared = _Port(self.port, self.settings, self._factory)
                _PORTS[key] = shared
            elif shared.settings.port_settings() != self.settings.port_settings():
                raise InputError(
                    f"{self.device}: port {self.port} is already open by {shared.users[0].device} with "
                    f"baudrate/bytesize/parity/stopbits {shared.settings.port_settings()}; "
                    f"expected the same settings, got {self.settings.port_settings()}"
                )
            with shared.lock:
                if shared.handle is None:
                    try:
                        shared.open_handle()
                    except (serial.SerialException, OSError, ValueError) as exc:
                        if not shared.users:
                            del _PORTS[key]
                        raise SerialLinkError(f"{self.device}: cannot open {self.port}: {_one_line(exc)}") from exc
                shared.users.append(self)
            self._shared = shared
            self._key = key

    def close(self) -> None:
        """Leave the port; the last device to leave closes it. Safe to call twice."""
        shared, self._shared = self._shared, None
        if shared is None:
            return
        with _PORTS_LOCK, shared.lock:
            if self in shared.users:
                shared.users.remove(self)
            if not shared.users:
                shared.close_handle()
                _PORTS.pop(self._key, None)

    @property
    def lock(self) -> threading.RLock:
        """The port's lock: hold it across several transactions that must not be interleaved."""
        if self._shared is None:
            raise HardwareError(f"{self.device}: port {self.port} is not open (connect first)")
        return self._shared.lock

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the port for a sequence of commands (e.g. a move and the polls until it ends)."""
        with self.lock:
            yield

    # -- commands -----------------------------------------------------------------------------------
    def where(self, command: str | bytes) -> str:
        """``'<device> on <port>: command '<cmd>''``: the prefix of every error message."""
        shown = command.decode(self.settings.encoding, "replace") if isinstance(command, bytes) else command
        return f"{self.device} on {self.port}: command {shown!r}"

    def query(
        self,
        command: str,
        parse: Callable[[str], T] | None = None,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
        complete: Callable[[bytes], bool] | None = None,
    ) -> T | str:
        """Send ``command`` and return its reply, parsed.

        ``parse(reply_text)`` may raise `GarbledReply` (retried) or `ControllerError` (raised at once,
        with the port and the command added). ``complete(buffer)`` decides when a reply has fully
        arrived; by default when the read terminator has. ``timeout_s`` and ``retries`` override the
        link's settings for this command (a move that replies when it ends needs a longer timeout).
        """
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        attempts = 1 + (self.settings.retries if retries is None else retries)
        terminator = self.settings.read_terminator
        done = complete or (lambda buf: terminator in buf)
        problem = "no attempt made"
        with self.lock:
            for attempt in range(1, attempts + 1):
                try:
                    self._write(command)
                    raw = self._read(done, timeout)
                except (serial.SerialException, OSError) as exc:
                    problem = f"connection lost ({_one_line(exc)})"
                    log.warning("%s: %s; reconnecting", self.where(command), problem)
                    self._reconnect(command, problem)
                    continue
                if complete is None and terminator in raw:
                    raw = raw[: raw.index(terminator) + len(terminator)]  # the rest is a later line
                text = raw.decode(self.settings.encoding, "replace")
                if not done(raw):
                    problem = f"no reply within {timeout:g} s" if not raw else f"incomplete reply {text!r}"
                    log.warning("%s: %s (attempt %d of %d)", self.where(command), problem, attempt, attempts)
                    continue
                reply = text.strip()
                if parse is None:
                    return reply
                try:
                    return parse(reply)
                except ControllerError as exc:
                    raise ControllerError(f"{self.where(command)}: controller error {exc}") from None
                except (GarbledReply, ValueError, IndexError) as exc:
                    problem = f"garbled reply {reply!r} ({exc})"
                    log.warning("%s: %s (attempt %d of %d)", self.where(command), problem, attempt, attempts)
                    continue
        raise SerialLinkError(f"{self.where(command)}: {problem} after {attempts} attempt(s)")

    def send(self, command: str | bytes, *, terminate: bool = True) -> None:
        """Write a command that has no reply (Tango's ``!moa``, Ludl's command-level bytes).

        A lost connection is reconnected and the command written again once.
        """
        with self.lock:
            try:
                self._write(command, terminate=terminate)
            except (serial.SerialException, OSError) as exc:
                problem = f"connection lost ({_one_line(exc)})"
                self._reconnect(command, problem)
                try:
                    self._write(command, terminate=terminate)
                except (serial.SerialException, OSError) as exc2:
                    raise SerialLinkError(f"{self.where(command)}: write failed ({_one_line(exc2)})") from exc2

    # -- internals ----------------------------------------------------------------------------------
    def _handle(self) -> Any:
        if self._shared is None:
            raise HardwareError(f"{self.device}: port {self.port} is not open (connect first)")
        if self._shared.handle is None:
            raise serial.SerialException("port is closed after a failed reconnect")
        return self._shared.handle

    def _write(self, command: str | bytes, *, terminate: bool = True) -> None:
        try:
            self._write_unchecked(command, terminate=terminate)
        except (serial.SerialException, OSError):
            raise
        except Exception as exc:  # termios.error from a hung-up tty is neither
            raise serial.SerialException(f"write failed: {exc}") from exc

    def _write_unchecked(self, command: str | bytes, *, terminate: bool) -> None:
        handle = self._handle()
        # Stale bytes (a late reply to a timed-out command) must not be read as this command's reply.
        handle.reset_input_buffer()
        data = command if isinstance(command, bytes) else command.encode(self.settings.encoding)
        if terminate:
            data += self.settings.write_terminator
        log.debug("%s -> %r", self.port, data)
        if self.settings.char_delay_s > 0:
            for i in range(len(data)):
                handle.write(data[i : i + 1])
                handle.flush()
                time.sleep(self.settings.char_delay_s)
        else:
            handle.write(data)
            handle.flush()

    def _read(self, done: Callable[[bytes], bool], timeout_s: float) -> bytes:
        handle = self._handle()
        buffer = bytearray()
        deadline = time.monotonic() + timeout_s
        while not done(bytes(buffer)):
            if time.monotonic() >= deadline:
                break
            chunk = handle.read(max(1, handle.in_waiting))
            if chunk:
                buffer += chunk
        log.debug("%s <- %r", self.port, bytes(buffer))
        return bytes(buffer)

    def _reconnect(self, command: str | bytes, cause: str) -> None:
        shared = self._shared
        assert shared is not None
        if shared.reconnecting:  # a command sent by an on_reconnect callback lost the port again
            raise SerialLinkError(f"{self.where(command)}: {cause} while re-configuring after a reconnect")
        shared.close_handle()
        deadline = time.monotonic() + self.settings.reconnect_timeout_s
        while True:
            try:
                shared.open_handle()
                break
            except (serial.SerialException, OSError, ValueError) as exc:
                if time.monotonic() >= deadline:
                    raise SerialLinkError(
                        f"{self.where(command)}: {cause}; the port did not come back within "
                        f"{self.settings.reconnect_timeout_s:g} s ({_one_line(exc)})"
                    ) from exc
                time.sleep(_REOPEN_PAUSE_S)
        self.reconnects += 1
        log.warning("%s: reopened %s after: %s", self.device, self.port, cause)
        shared.reconnecting = True
        try:
            for user in list(shared.users):
                if user.on_reconnect is not None:
                    user.on_reconnect()
        finally:
            shared.reconnecting = False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
