"""SerialLink: one lock per port, flush before write, terminators, pyserial URLs, clear errors.

All against the protocol emulators on real pseudo-terminals (or a real local TCP socket for
``socket://``): nothing here is mocked.
"""

from __future__ import annotations

import threading
import time

import pytest

from flakehunter.errors import InputError
from flakehunter.serial_link import SerialLink, SerialLinkError, SerialSettings
from flakehunter.testing.emulators import ASIMS2000Emulator, Fault, PriorProScanEmulator, emulated_stage

ASI = SerialSettings(read_terminator=b"\n", timeout_s=0.3, retries=1)


def test_links_on_one_port_share_one_lock_and_never_mix_replies() -> None:
    """Two devices on one controller, queried from two threads: every reply belongs to its own command
    (Micro-Manager issue #620 was two threads on one COM port)."""
    with ASIMS2000Emulator(latency_s=0.0005) as emulator:
        xy = SerialLink(emulator.port, ASI, device="asi xy")
        focus = SerialLink(emulator.port, ASI, device="asi focus")
        xy.open()
        focus.open()
        assert xy.lock is focus.lock
        errors: list[str] = []

        def hammer(link: SerialLink, command: str, valid) -> None:
            for _ in range(150):
                reply = str(link.query(command))
                if not valid(reply):
                    errors.append(f"{command!r} -> {reply!r}")

        threads = [
            threading.Thread(target=hammer, args=(xy, "W X Y", lambda r: r.startswith(":A") and len(r.split()) == 3)),
            threading.Thread(target=hammer, args=(focus, "/", lambda r: r in ("B", "N"))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        xy.close()
        focus.close()
    assert errors == []
    assert len(emulator.commands) == 300


def test_a_second_device_must_use_the_same_port_settings() -> None:
    """Opening a port already open at another baud rate is refused with a message naming both."""
    with ASIMS2000Emulator() as emulator:
        first = SerialLink(emulator.port, ASI, device="asi xy")
        first.open()
        other = SerialLink(emulator.port, SerialSettings(baudrate=115200), device="filter wheel")
        with pytest.raises(InputError, match="already open by asi xy"):
            other.open()
        first.close()


def test_stale_bytes_are_flushed_before_each_command() -> None:
    """A reply that arrives after its command gave up is discarded, not read as the next reply."""
    with ASIMS2000Emulator() as emulator:
        link = SerialLink(emulator.port, ASI, device="asi stage")
        link.open()
        link.send("W X Y")  # its ':A 0 0' reply stays unread in the input buffer
        time.sleep(0.05)
        assert link.query("/") == "N"
        link.close()


def test_reply_is_cut_at_its_terminator() -> None:
    """Two lines arriving together: the query returns the first; the rest never leaks into it."""
    with PriorProScanEmulator() as emulator:
        link = SerialLink(emulator.port, SerialSettings(timeout_s=0.3), device="prior stage")
        link.open()
        reply = link.query("?", complete=lambda b: b.rstrip().endswith(b"END"))
        assert reply.startswith("PROSCAN INFORMATION") and reply.endswith("END")
        assert link.query("P") == "0,0,0"
        link.close()


def test_socket_url_reaches_a_controller_behind_a_terminal_server() -> None:
    """pyserial URLs work: the Prior driver drives a controller served on socket://host:port."""
    with emulated_stage("prior", emulator_options={"transport": "tcp"}) as (emulator, stage):
        assert stage.options.port.startswith("socket://127.0.0.1:")
        stage.move_to_um(12.3, -4.5, 1.2)
        assert emulator.moves == [{"x": 123, "y": -45}, {"z": 12}]
        pos = stage.position_um()
        assert (pos.x_um, pos.y_um, pos.z_um) == pytest.approx((12.3, -4.5, 1.2))


def test_missing_port_is_a_one_line_error_naming_it(tmp_path) -> None:
    """A port that does not exist: SerialLinkError naming the device and the port."""
    link = SerialLink(str(tmp_path / "ttyUSB9"), SerialSettings(), device="prior stage")
    with pytest.raises(SerialLinkError, match=r"prior stage: cannot open .*ttyUSB9"):
        link.open()
    with pytest.raises(InputError, match=r"options\.port is empty"):
        SerialLink(" ", SerialSettings(), device="asi stage")


def test_character_delay_paces_the_bytes() -> None:
    """char_delay_s (Ludl controllers drop characters otherwise) spaces out every byte written."""
    with ASIMS2000Emulator() as emulator:
        link = SerialLink(emulator.port, SerialSettings(read_terminator=b"\n", char_delay_s=0.004),
                          device="asi stage")
        link.open()
        t0 = time.monotonic()
        assert link.query("W X Y").startswith(":A")  # 6 bytes with the terminator
        assert time.monotonic() - t0 >= 6 * 0.004
        link.close()


def test_garbled_replies_are_retried_a_bounded_number_of_times() -> None:
    """Garbled twice, fine the third time: the reply is returned; garbled every time: an error naming
    port, command and the garbage, after exactly 1 + retries attempts."""
    with ASIMS2000Emulator() as emulator:
        link = SerialLink(emulator.port, SerialSettings(read_terminator=b"\n", timeout_s=0.2, retries=2),
                          device="asi stage")
        link.open()

        def parse(reply: str) -> str:
            if not reply.startswith(":A"):
                raise ValueError("expected ':A'")
            return reply

        emulator.inject(Fault("garbled", r"^W", times=2))
        assert link.query("W X", parse) == ":A 0"
        emulator.clear_records()
        emulator.inject(Fault("garbled", r"^W", times=-1))
        with pytest.raises(SerialLinkError) as info:
            link.query("W X", parse)
        assert len(emulator.commands) == 3
        message = str(info.value)
        assert emulator.port in message and "'W X'" in message and "garbled reply" in message
        link.close()


class Rfc2217Bridge:
    """A minimal RFC 2217 server (pyserial's own PortManager, as in its rfc2217_server example) that
    serves one serial port on a TCP socket, as a networked serial server would. Its far side is the
    emulator's socket:// transport, because a pseudo-terminal has no modem lines for PortManager."""

    def __init__(self, device: str) -> None:
        import socket

        import serial
        import serial.rfc2217

        self.serial = serial.serial_for_url(device, timeout=0.01)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.settings: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._rfc2217 = serial.rfc2217
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import select

        client, _ = self.listener.accept()

        class Connection:  # what PortManager writes its Telnet negotiation to
            def write(self, data: bytes) -> None:
                client.sendall(data)

        try:
            manager = self._rfc2217.PortManager(self.serial, Connection())
            while not self._stop.is_set():
                ready, _, _ = select.select([client], [], [], 0.01)
                if ready:
                    data = client.recv(1024)
                    if not data:
                        break
                    self.serial.write(b"".join(manager.filter(data)))
                    self.settings.append((self.serial.baudrate, self.serial.stopbits))
                waiting = self.serial.read(self.serial.in_waiting or 1)
                if waiting:
                    client.sendall(b"".join(manager.escape(waiting)))
        finally:
            client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.listener.close()
        self.serial.close()


@pytest.mark.filterwarnings(r"ignore:set(Daemon|Name)\(\) is deprecated:DeprecationWarning")  # in pyserial 3.5 rfc2217
def test_rfc2217_url_reaches_a_controller_behind_a_networked_serial_server() -> None:
    """rfc2217:// works end to end, and the driver's port settings (Ludl: 9600 8N2) reach the far port."""
    from flakehunter.hardware.ludl.stage import LudlStage
    from flakehunter.testing.emulators import FAST_STAGE_OPTIONS, LudlMAC5000Emulator

    with LudlMAC5000Emulator(transport="tcp") as emulator:
        bridge = Rfc2217Bridge(emulator.port)
        try:
            options = {**FAST_STAGE_OPTIONS, "timeout_s": 1.0, "port": f"rfc2217://127.0.0.1:{bridge.port}"}
            stage = LudlStage(LudlStage.Options(**options))
            stage.connect()
            stage.move_to_um(10.0, -20.0, 1.5)
            assert emulator.moves == [{"x": 100, "y": -200, "z": 15}]
            assert stage.identity == "MAC5000 Version 1.52"
            stage.close()
            assert (9600, 2) in bridge.settings
        finally:
            bridge.close()
