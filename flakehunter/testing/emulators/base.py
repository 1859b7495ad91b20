"""The machinery every controller emulator shares: a real port, a thread, motion and faults.

A `ControllerEmulator` answers a controller's serial protocol on a **real pseudo-terminal**
(`os.openpty`), so a driver under test opens it with pyserial exactly as it opens ``/dev/ttyUSB0``:
termios settings, flushing, partial reads and hang-ups all behave as on hardware. The port the
driver sees is a stable symlink (like ``/dev/serial/by-id/...``) that is repointed when the emulated
USB adapter "comes back" after a disconnect. With ``transport="tcp"`` the same emulator listens on
a local socket instead (``socket://127.0.0.1:PORT``), as a ser2net terminal server would.

Axes move in controller units with a constant speed; a move takes real time, position queries
during it return intermediate positions, and busy flags clear when it ends. Every move command the
emulator accepts is recorded, in controller units, in `moves`; every command line in `commands`.

Faults are injected with `inject`, each affecting the next ``times`` commands matching a regular
expression:

* ``no_reply``: the command is lost on the wire; nothing is executed or answered;
* ``garbled``: the command is executed but its reply arrives corrupted;
* ``late``: a move completes ``delay_s`` later than it should (busy longer, late end-of-move reply);
* ``error``: the controller answers with an error code and executes nothing;
* ``stall``: a move stops at ``fraction`` of the way and reports idle (a stalled motor);
* ``disconnect``: the USB adapter drops before the command arrives; the port comes back after
  ``reconnect_after_s`` (``None``: never) with the controller's position intact, and with its volatile
  settings (units, command set...) back at their power-on values if ``power_cycle`` is set.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import re
import select
import socket
import tempfile
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

FaultKind = Literal["no_reply", "garbled", "late", "error", "stall", "disconnect"]
FAULT_KINDS: tuple[str, ...] = ("no_reply", "garbled", "late", "error", "stall", "disconnect")


@dataclass
class Fault:
    """One injected fault (see the module docstring for the kinds).

    Attributes:
        kind: what goes wrong.
        match: regular expression searched in the command line; ``""`` matches every command.
        times: how many matching commands it affects; ``-1``: all of them.
        delay_s: ``late``: extra seconds before the move ends.
        code: ``error``: the controller's error code (default: the emulator's "out of range" code).
        fraction: ``stall``: how far along the move the axes stop.
        reconnect_after_s: ``disconnect``: seconds until the port is back; ``None``: never.
        power_cycle: ``disconnect``: the controller restarts too and forgets its settings.
    """

    kind: FaultKind
    match: str = ""
    times: int = 1
    delay_s: float = 0.5
    code: int | None = None
    fraction: float = 0.5
    reconnect_after_s: float | None = 0.3
    power_cycle: bool = False
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        self._pattern = re.compile(self.match)

    def takes(self, command: str) -> bool:
        if self.times != -1 and self.hits >= self.times:
            return False
        if not self._pattern.search(command):
            return False
        self.hits += 1
        return True


@dataclass
class Axis:
    """One motorized axis in controller units, moving at constant speed."""

    position: float = 0.0
    speed: float = 100_000.0  # units per second
    travel: tuple[float, float] = (-1e9, 1e9)  # hardware travel: a target outside is refused
    _start: float = 0.0
    _target: float = 0.0
    _t0: float = 0.0
    _t1: float = 0.0

    def __post_init__(self) -> None:
        self._start = self._target = self.position

    def where(self, now: float) -> float:
        if now >= self._t1 or self._t1 <= self._t0:
            return self._target
        return self._start + (self._target - self._start) * (now - self._t0) / (self._t1 - self._t0)

    def busy(self, now: float) -> bool:
        return now < self._t1

    def move_to(self, target: float, now: float, *, extra_s: float = 0.0, stop_fraction: float = 1.0) -> float:
        """Start a move; returns when it will end. A stall stops part way."""
        start = self.where(now)
        end = start + (target - start) * stop_fraction
        duration = abs(end - start) / self.speed if self.speed > 0 else 0.0
        self._start, self._target, self._t0, self._t1 = start, end, now, now + duration + extra_s
        return self._t1

    def set_here(self, value: float, now: float) -> None:
        self._start = self._target = value
        self._t0 = self._t1 = now

    def in_travel(self, target: float) -> bool:
        return self.travel[0] <= target <= self.travel[1]


@dataclass(order=True)
class _Output:
    due: float
    seq: int
    data: bytes = field(compare=False)


class ControllerEmulator:
    """Base class: transport, framing, scheduling, faults and records. Subclasses speak a protocol.

    Args:
        transport: ``"pty"`` (a pseudo-terminal behind a symlink) or ``"tcp"`` (``socket://``).
        link_dir: folder for the port symlink (a temporary folder by default).
        latency_s: delay before each reply, as a real controller's processing time.
        speed: axis speed in controller units per second.
        positions: starting positions in controller units, by axis name.
    """

    name = "controller"
    command_terminator = b"\r"
    reply_terminator = b"\r"
    axis_names: tuple[str, ...] = ("x", "y", "z")
    default_error_code = 1

    def __init__(
        self,
        *,
        transport: Literal["pty", "tcp"] = "pty",
        link_dir: str | Path | None = None,
        latency_s: float = 0.001,
        speed: float = 200_000.0,
        positions: dict[str, float] | None = None,
        travel: tuple[float, float] = (-1e9, 1e9),
    ) -> None:
        if transport not in ("pty", "tcp"):
            raise ValueError(f"transport must be 'pty' or 'tcp', got {transport!r}")
        self.transport = transport
        self.latency_s = latency_s
        self.axes = {name: Axis(position=float((positions or {}).get(name, 0.0)), speed=speed, travel=travel)
                     for name in self.axis_names}
        self.commands: list[str] = []
        self.moves: list[dict[str, float]] = []
        self.faults: list[Fault] = []
        self.disconnects = 0
        self._lock = threading.RLock()
        self._own_dir = link_dir is None
        self._dir = Path(link_dir) if link_dir is not None else Path(tempfile.mkdtemp(prefix="fh-emu-"))
        self._link = self._dir / f"tty{self.name.upper()}"
        self._outbox: list[_Output] = []
        self._seq = itertools.count()
        self._buffer = bytearray()
        self._master: int | None = None
        self._slave: int | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._tcp_port = 0
        self._reconnect_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fault: Fault | None = None  # the fault acting on the command being handled

    # -- public ---------------------------------------------------------------------------------
    @property
    def port(self) -> str:
        """What a driver opens: the symlink path, or ``socket://127.0.0.1:PORT``."""
        if self.transport == "tcp":
            return f"socket://127.0.0.1:{self._tcp_port}"
        return str(self._link)

    def start(self) -> ControllerEmulator:
        with self._lock:
            self._open_transport()
        self._thread = threading.Thread(target=self._run, name=f"emulator-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._close_transport()
            if self.transport == "tcp" and self._listener is not None:
                self._listener.close()
                self._listener = None
        if self._own_dir:
            with contextlib.suppress(OSError):
                self._dir.rmdir()

    def __enter__(self) -> ControllerEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, fault: Fault) -> Fault:
        """Arm a fault; it acts on the next matching command(s)."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_records(self) -> None:
        """Forget the commands and moves received so far."""
        with self._lock:
            self.commands.clear()
            self.moves.clear()

    def position(self, axis: str) -> float:
        """The axis's position now, in controller units."""
        with self._lock:
            return self.axes[axis].where(time.monotonic())

    def busy(self) -> bool:
        with self._lock:
            now = time.monotonic()
            return any(a.busy(now) for a in self.axes.values())

    def wait_until_idle(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.005)

    # -- for protocol subclasses ----------------------------------------------------------------
    def handle(self, command: str, now: float) -> None:
        """Answer one command line (without its terminator)."""
        raise NotImplementedError

    def error_reply(self, code: int) -> str:
        """The reply the controller gives for error ``code``."""
        raise NotImplementedError

    def refuse(self, command: str, code: int) -> None:
        """Answer ``command`` with error ``code`` instead of executing it."""
        self.reply(self.error_reply(code))

    def axis_assignments(
        self, args: list[str], pattern: re.Pattern[str], *, missing_code: int, bad_axis_code: int
    ) -> dict[str, float] | None:
        """Parse ``X=1 Y=2`` arguments (``pattern`` captures axis and integer value); on a bad one, reply
        with the controller's error and return None."""
        if not args:
            self.reply(self.error_reply(missing_code))
            return None
        targets: dict[str, float] = {}
        for arg in args:
            m = pattern.match(arg)
            if m is None:
                self.reply(self.error_reply(bad_axis_code))
                return None
            targets[m.group(1).lower()] = round(float(m.group(2)))
        return targets

    def reply(self, text: str | bytes, *, at: float | None = None, terminate: bool = True) -> None:
        """Queue a reply, sent after the latency (or at time ``at``, e.g. the end of a move)."""
        data = text.encode("ascii") if isinstance(text, str) else bytes(text)
        if self._fault is not None and self._fault.kind == "garbled":
            data = b"\xfe\x13" + data[::-1]  # corrupted on the wire; the terminator survives
        if terminate:
            data += self.reply_terminator
        due = (time.monotonic() + self.latency_s) if at is None else max(at, time.monotonic() + self.latency_s)
        heapq.heappush(self._outbox, _Output(due, next(self._seq), data))

    def start_move(self, targets: dict[str, float], now: float) -> float:
        """Move the named axes (controller units); records the move; returns when it ends."""
        fault = self._fault
        extra = fault.delay_s if fault is not None and fault.kind == "late" else 0.0
        fraction = fault.fraction if fault is not None and fault.kind == "stall" else 1.0
        self.moves.append(dict(targets))
        end = now
        for axis, target in targets.items():
            end = max(end, self.axes[axis].move_to(target, now, extra_s=extra, stop_fraction=fraction))
        return end

    def moving(self, now: float, axes: tuple[str, ...] | None = None) -> bool:
        return any(self.axes[a].busy(now) for a in (axes or self.axis_names))

    def power_on_settings(self) -> None:
        """Put the controller's volatile settings back to their power-on values (a power cycle)."""

    def preprocess(self, buffer: bytearray) -> None:
        """Remove out-of-band bytes from the receive buffer before it is split into lines."""

    # -- transport ------------------------------------------------------------------------------
    def _open_transport(self) -> None:
        if self.transport == "pty":
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no CR->LF translation, before the driver configures the port
            os.set_blocking(master, False)
            self._master, self._slave = master, slave
            tmp = self._link.with_name(self._link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(os.ttyname(slave), tmp)
            os.replace(tmp, self._link)
        else:
            if self._listener is None:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", self._tcp_port))
                listener.listen(1)
                self._tcp_port = listener.getsockname()[1]
                self._listener = listener

    def _close_transport(self) -> None:
        for fd_name in ("_master", "_slave"):
            fd = getattr(self, fd_name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, fd_name, None)
        if self.transport == "pty":
            with contextlib.suppress(FileNotFoundError):
                self._link.unlink()
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.close()
            self._client = None
        self._buffer.clear()
        self._outbox.clear()

    def _disconnect(self, reconnect_after_s: float | None) -> None:
        """The USB adapter drops out: the port disappears; the controller keeps its state."""
        self.disconnects += 1
        self._close_transport()
        if self.transport == "tcp" and self._listener is not None:
            self._listener.close()
            self._listener = None
        self._reconnect_at = None if reconnect_after_s is None else time.monotonic() + reconnect_after_s

    def _read_fds(self) -> list[int | socket.socket]:
        if self.transport == "pty":
            return [self._master] if self._master is not None else []
        if self._client is not None:
            return [self._client]
        return [self._listener] if self._listener is not None else []

    def _receive(self, ready: int | socket.socket) -> bytes:
        if self.transport == "pty":
            assert self._master is not None
            try:
                return os.read(self._master, 4096)
            except (BlockingIOError, InterruptedError):
                return b""
        if ready is self._listener:
            assert self._listener is not None
            client, _ = self._listener.accept()
            client.setblocking(False)
            self._client = client
            return b""
        assert self._client is not None
        try:
            data = self._client.recv(4096)
        except (BlockingIOError, InterruptedError):
            return b""
        if not data:  # the driver closed its socket; wait for the next one
            self._client.close()
            self._client = None
        return data

    def _send(self, data: bytes) -> None:
        try:
            if self.transport == "pty" and self._master is not None:
                os.write(self._master, data)
            elif self._client is not None:
                self._client.sendall(data)
        except OSError:
            log.debug("%s emulator: reply dropped", self.name, exc_info=True)

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                if self._reconnect_at is not None and now >= self._reconnect_at:
                    self._reconnect_at = None
                    self._open_transport()
                fds = self._read_fds()
                wait = 0.02
                if self._outbox:
                    wait = max(0.0, min(wait, self._outbox[0].due - now))
            if not fds:
                time.sleep(wait or 0.005)
                continue
            try:
                ready, _, _ = select.select(fds, [], [], wait)
            except (OSError, ValueError):
                continue  # a descriptor closed under us by a disconnect
            with self._lock:
                for r in ready:
                    if r not in self._read_fds():
                        continue
                    self._buffer += self._receive(r)
                self._dispatch()
                now = time.monotonic()
                while self._outbox and self._outbox[0].due <= now:
                    self._send(heapq.heappop(self._outbox).data)

    def _dispatch(self) -> None:
        self.preprocess(self._buffer)
        term = self.command_terminator
        while term in self._buffer:
            line, _, rest = bytes(self._buffer).partition(term)
            self._buffer[:] = rest
            command = line.decode("ascii", "replace").strip()
            if not command:
                continue  # Tango drivers send a bare terminator to clear the controller's buffer
            self._on_command(command)
            if self._master is None and self._client is None:
                return  # disconnected while handling

    def _on_command(self, command: str) -> None:
        fault = next((f for f in self.faults if f.takes(command)), None)
        if fault is not None and fault.kind == "disconnect":
            log.info("%s emulator: disconnect at %r", self.name, command)
            self._disconnect(fault.reconnect_after_s)
            if fault.power_cycle:
                self.power_on_settings()
            return
        self.commands.append(command)
        if fault is not None and fault.kind == "no_reply":
            return
        if fault is not None and fault.kind == "error":
            self.refuse(command, fault.code if fault.code is not None else self.default_error_code)
            return
        self._fault = fault
        try:
            self.handle(command, time.monotonic())
        finally:
            self._fault = None
