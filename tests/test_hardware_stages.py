"""The serial stage drivers against their controllers' protocol emulators on real pseudo-terminals.

Acceptance (issue 5): for each driver (prior, asi, ludl, tango) a scan runs against its emulator with the
simulator camera and every position the emulator received equals the plan to the controller's
resolution; injected faults are retried or end in a clear error naming the port and the command, never a
silent wrong position; a move outside the soft limits is refused before any byte is sent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flakehunter.acquisition.engine import tile_key
from flakehunter.devices import AxisRange, TravelLimits
from flakehunter.errors import HardwareError, StageLimitError
from flakehunter.scan import Scan
from flakehunter.serial_link import ControllerError, SerialLinkError
from flakehunter.testing.emulators import FAST_STAGE_OPTIONS, Fault, emulated_stage
from flakehunter.tiles import read_geometry
from tests.conftest import SMALL_SCAN, deep_update

DRIVERS = ("prior", "asi", "ludl", "tango")
#: The command that starts a move, and the position query, per controller (regular expressions).
MOVE = {"prior": r"^G,", "asi": r"^M ", "ludl": r"^MOVE ", "tango": r"^!moa "}
WHERE = {"prior": r"^P$", "asi": r"^W ", "ludl": r"^WHERE ", "tango": r"^\?pos"}
LIMITS = TravelLimits(AxisRange(-5000, 5000), AxisRange(-5000, 5000), AxisRange(-200, 200))


def controller_units(name: str, stage: Any, x: float, y: float, z: float) -> dict[str, float]:
    """What the emulator must receive for a target in µm: steps, or µm at 1 nm for the Tango."""
    sx, sy, sz = stage.steps_per_um()
    if name == "tango":
        return {"x": round(x * sx) / sx, "y": round(y * sy) / sy, "z": round(z * sz) / sz}
    return {"x": round(x * sx), "y": round(y * sy), "z": round(z * sz)}


def scan_config(name: str, port: str) -> dict[str, Any]:
    """A 3 x 3-tile scan on a tilted focus plane (z with decimals), stage on the emulator."""
    config = deep_update(SMALL_SCAN, {
        "name": f"emulated-{name}",
        "camera": {"options": {"shape": [120, 160]}},
        "region": {"rectangle": {"corner1_um": [100.0, 50.0], "corner2_um": [560.0, 380.0]}},
        "focus": {"mode": "plane", "points_um": [[0, 0, -3.337], [2000, 0, 4.113], [0, 2000, 1.7071]]},
    })
    config["stage"] = {"plugin": name, "options": {"port": port, **FAST_STAGE_OPTIONS},
                       "limits_um": {"x_um": [-1000, 4000], "y_um": [-1000, 4000], "z_um": [-100, 100]}}
    return config


@pytest.mark.parametrize("name", DRIVERS)
def test_scan_on_the_emulator_receives_exactly_the_plan(name: str, tmp_path: Path) -> None:
    """Every coordinate the controller received is the planned tile's, in plan order, to its resolution,
    and every tile's recorded position is the planned one."""
    with emulated_stage(name) as (emulator, _probe):
        _probe.close()
        config = tmp_path / "scan.yaml"
        config.write_text(yaml.safe_dump(scan_config(name, emulator.port)), encoding="utf-8")
        runner = Scan(config, tmp_path / "run")
        plan = runner.prepare()
        stage = plan.stage
        expected = [controller_units(name, stage, t.x_um, t.y_um, t.z_um) for t in plan.tiles]
        emulator.clear_records()
        summary = runner.run()

    assert summary["status"] == "completed", summary
    assert len(plan.tiles) == 9
    # Walk the received moves: each coordinate must be the tile being approached; each tile is reached.
    state: dict[str, float | None] = {"x": None, "y": None, "z": None}
    reached = 0
    for move in emulator.moves:
        assert reached < len(expected), f"move {move} after the last tile"
        for axis, value in move.items():
            assert value == expected[reached][axis], f"{name}: received {axis}={value}, plan {expected[reached]}"
        state.update(move)
        if state == expected[reached]:
            reached += 1
    assert reached == len(expected)
    sx, sy, sz = stage.steps_per_um()
    for tile in plan.tiles:
        (_, meta) = read_geometry(runner.run_dir / tile_key(tile))
        assert abs(meta.x_um - tile.x_um) <= 0.5 / sx + 1e-9
        assert abs(meta.y_um - tile.y_um) <= 0.5 / sy + 1e-9
        assert abs(meta.z_um - tile.z_um) <= 0.5 / sz + 1e-9


# -- faults ---------------------------------------------------------------------------------------------


def _move(stage: Any, x: float = 300.0, y: float = 600.0, z: float = 5.0) -> None:
    stage.limits = LIMITS
    stage.move_to_um(x, y, z)


def _assert_at(stage: Any, x: float = 300.0, y: float = 600.0, z: float = 5.0) -> None:
    here = stage.position_um()
    assert (here.x_um, here.y_um, here.z_um) == pytest.approx((x, y, z), abs=0.05)


@pytest.mark.parametrize("name", DRIVERS)
@pytest.mark.parametrize("kind", ["no_reply", "garbled_move", "garbled_position", "late", "disconnect"])
def test_transient_faults_are_retried_and_the_move_ends_at_the_target(name: str, kind: str) -> None:
    """A lost command, a garbled reply, a late end of move or a USB drop that comes back: the move is
    retried or waited for, and the stage ends exactly at the target."""
    fault = {
        "no_reply": Fault("no_reply", MOVE[name]),
        "garbled_move": Fault("garbled", MOVE[name]),
        "garbled_position": Fault("garbled", WHERE[name]),
        "late": Fault("late", MOVE[name], delay_s=0.3),
        "disconnect": Fault("disconnect", MOVE[name], reconnect_after_s=0.2),
    }[kind]
    with emulated_stage(name) as (emulator, stage):
        emulator.inject(fault)
        t0 = time.monotonic()
        _move(stage)
        elapsed = time.monotonic() - t0
        _assert_at(stage)
        assert fault.hits == 1
        assert not emulator.busy(), "move_to_um returned while the controller was still moving"
        if kind == "late":
            assert elapsed >= 0.3, "the driver did not wait for the late end of the move"
        if kind == "disconnect":
            assert emulator.disconnects == 1 and stage.link.reconnects == 1


@pytest.mark.parametrize("name", DRIVERS)
def test_controller_error_code_is_raised_naming_port_and_command(name: str) -> None:
    """An error reply is not retried and not ignored: ControllerError with port, command and meaning;
    the stage has not moved."""
    with emulated_stage(name) as (emulator, stage):
        emulator.inject(Fault("error", MOVE[name]))
        with pytest.raises(ControllerError) as info:
            _move(stage)
        message = str(info.value)
        assert emulator.port in message
        assert "out" in message and ("range" in message or "limit" in message)  # the decoded meaning
        assert any(word in message for word in ("G,", "M X=", "MOVE X=", "!moa"))
        _assert_at(stage, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("name", DRIVERS)
def test_stalled_move_is_an_error_not_a_silent_wrong_position(name: str) -> None:
    """The controller reports idle half-way: HardwareError naming port, command and both positions."""
    with emulated_stage(name) as (emulator, stage):
        emulator.inject(Fault("stall", MOVE[name], fraction=0.5))
        with pytest.raises(HardwareError) as info:
            _move(stage)
        message = str(info.value)
        assert emulator.port in message and "command" in message
        assert "300.000, 600.000" in message  # the target
        assert "150.000, 300.000" in message  # where it stopped


@pytest.mark.parametrize("name", DRIVERS)
@pytest.mark.parametrize("kind", ["never_answers", "always_late", "port_gone"])
def test_persistent_faults_end_in_a_clear_error(name: str, kind: str) -> None:
    """Bounded retries: a controller that never answers, a move that never ends in time, or a port that
    never comes back ends in an error naming the port and the command, in bounded time."""
    fault = {
        "never_answers": Fault("no_reply", MOVE[name], times=-1),
        "always_late": Fault("late", MOVE[name], delay_s=3.0, times=-1),
        "port_gone": Fault("disconnect", MOVE[name], reconnect_after_s=None),
    }[kind]
    with emulated_stage(name, reconnect_timeout_s=0.4, retries=1) as (emulator, stage):
        emulator.inject(fault)
        t0 = time.monotonic()
        with pytest.raises(HardwareError) as info:
            _move(stage)
        elapsed = time.monotonic() - t0
    message = str(info.value)
    assert emulator.port in message and "command" in message, message
    assert elapsed < 3.0
    if kind == "port_gone":
        assert isinstance(info.value, SerialLinkError) and "did not come back" in message


@pytest.mark.parametrize("name", DRIVERS)
def test_move_outside_soft_limits_sends_nothing(name: str) -> None:
    """The soft limits are checked before any byte: the emulator receives nothing, the stage stays."""
    with emulated_stage(name) as (emulator, stage):
        stage.limits = LIMITS
        time.sleep(0.05)
        emulator.clear_records()
        for target in ((5000.5, 0.0, 0.0), (0.0, -5001.0, None), (0.0, 0.0, 200.2), (float("nan"), 0.0, 0.0)):
            with pytest.raises(StageLimitError) as info:
                stage.move_to_um(*target)
            assert "soft limits" in str(info.value)
        time.sleep(0.05)
        assert emulator.commands == [] and emulator.moves == []


@pytest.mark.parametrize("name", DRIVERS)
def test_connect_identifies_and_never_moves_or_homes(name: str) -> None:
    """Connecting reads the controller's identity and configures it, but sends no move and no homing;
    homing happens only when asked."""
    home = {"prior": "SIS", "asi": "! X Y", "ludl": "HOME X Y", "tango": "!cal x"}[name]
    with emulated_stage(name, emulator_options={"positions": {"x": 1234, "y": -567}}) as (emulator, stage):
        assert stage.identity
        assert emulator.moves == []
        assert not any(c.startswith(home) for c in emulator.commands)
        assert emulator.position("x") == 1234
        stage.home()
        assert any(c.startswith(home) for c in emulator.commands)
        assert stage.position_um().x_um == 0.0


def test_inverted_axes_and_configured_resolution(tmp_path: Path) -> None:
    """invert_x flips the sign sent; a configured Prior resolution is written to the controller (RES,s)."""
    with emulated_stage("prior", steps_per_um=4.0, invert_x=True) as (emulator, stage):
        assert "RES,s,0.25" in emulator.commands
        _move(stage, 100.0, 50.0, 2.5)
        assert emulator.moves[0] == {"x": -400, "y": 200}
        assert emulator.position("x") == -400
        _assert_at(stage, 100.0, 50.0, 2.5)


def test_prior_focus_moves_never_double_after_a_lost_reply() -> None:
    """Prior's focus moves are relative (U,n/D,n); after a lost end-of-move reply the driver re-reads
    the controller's z before sending again, so the drive never moves twice."""
    with emulated_stage("prior") as (emulator, stage):
        emulator.inject(Fault("no_reply", r"^U,"))
        _move(stage, 0.0, 0.0, 7.3)
        assert emulator.position("z") == 73
        emulator.inject(Fault("garbled", r"^D,"))
        _move(stage, 0.0, 0.0, -2.0)
        assert emulator.position("z") == -20


@pytest.mark.parametrize("name", ["ludl", "tango"])
def test_a_power_cycled_controller_is_configured_again_after_the_reconnect(name: str) -> None:
    """USB drop and controller restart together: after reopening the port the driver sends its set-up
    again (Ludl: the high-level command set, 0xFF 0x41; Tango: µm units and no autostatus), so the
    retried move is understood, in the right units, and ends at the target."""
    with emulated_stage(name) as (emulator, stage):
        emulator.inject(Fault("disconnect", MOVE[name], reconnect_after_s=0.1, power_cycle=True))
        _move(stage)
        _assert_at(stage)
        if name == "ludl":
            assert emulator.command_level == "high"
        else:
            assert emulator.dim == {"x": 1, "y": 1, "z": 1} and emulator.autostatus == 0
            assert emulator.moves[-1] == {"x": 300.0, "y": 600.0, "z": 5.0}


def test_stage_without_z_refuses_z_moves_before_sending() -> None:
    """A stage configured without a z axis refuses a z target instead of ignoring it."""
    with emulated_stage("asi", z_axis=False) as (emulator, stage):
        stage.limits = LIMITS
        emulator.clear_records()
        with pytest.raises(HardwareError, match="no z axis"):
            stage.move_to_um(10.0, 10.0, 5.0)
        assert emulator.commands == []
        stage.move_to_um(10.0, 10.0, 0.0)  # the fixed z is fine
        assert emulator.moves == [{"x": 100, "y": 100}]
