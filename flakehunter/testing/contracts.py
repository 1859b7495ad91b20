"""Contract tests every stage and camera plugin must pass, for built-in and third-party plugins alike.

Subclass a contract in a pytest test class and provide the device as a fixture; pytest then runs every
``test_*`` method of the contract against it::

    import pytest
    from flakehunter.testing.contracts import CameraContract, StageContract
    from flakehunter.testing.emulators import PriorProScanEmulator

    class TestMyStage(StageContract):
        @pytest.fixture
        def stage(self):
            with PriorProScanEmulator() as controller:        # or real hardware, or your own emulator
                stage = MyStage(MyStage.Options(port=controller.port), None)
                stage.connect()
                self.controller = controller
                yield stage                                   # connected; the contract sets .limits
                stage.close()

        def commands_received(self, stage):                   # optional: lets the contract check that a
            return len(self.controller.commands)              # refused move sends nothing at all

    class TestMyCamera(CameraContract):
        @pytest.fixture
        def camera(self):
            camera = MyCamera(MyCamera.Options(), context)
            camera.connect()
            yield camera
            camera.close()

The contracts encode `flakehunter.devices`: positions in µm, moves that block until the stage is at the
target, ``z_um=None`` keeping z, soft limits that refuse (never clip) a target before anything is sent,
``close`` safe twice; frames of the announced ``shape`` as uint8/uint16, (rows, cols) or (rows, cols, 3),
and no frame from a closed camera. Adjust `StageContract.box_um`, `StageContract.z_range_um` and
`StageContract.tolerance_um` to your stage. The contracts need pytest (``pip install 'flakehunter[test]'``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from flakehunter.devices import AxisRange, Camera, Position, Stage, TravelLimits
from flakehunter.errors import FlakehunterError, HardwareError, StageLimitError

__all__ = ["CameraContract", "StageContract"]


class StageContract:
    """The stage contract. Provide a ``stage`` fixture that yields a connected stage."""

    #: (x0, y0, x1, y1) in µm: a box inside the stage's travel where the contract may move it.
    box_um: tuple[float, float, float, float] = (0.0, 0.0, 2000.0, 2000.0)
    #: z range (µm) the contract may use; ``None`` for a stage without z.
    z_range_um: tuple[float, float] | None = (-20.0, 20.0)
    #: How close to a target a finished move must be (µm): the controller's resolution or better.
    tolerance_um: float = 0.5

    @pytest.fixture
    def stage(self) -> Any:
        raise NotImplementedError("a StageContract subclass must provide a 'stage' fixture")

    def commands_received(self, stage: Stage) -> int | None:
        """How many commands the hardware has received so far; ``None`` if unknown (then the contract
        checks only that the position did not change)."""
        return None

    # -- helpers ------------------------------------------------------------------------------------
    def _limits(self) -> TravelLimits:
        x0, y0, x1, y1 = self.box_um
        z = self.z_range_um or (-math.inf, math.inf)
        return TravelLimits(AxisRange(x0, x1), AxisRange(y0, y1), AxisRange(*z))

    def _z(self, fraction: float) -> float | None:
        if self.z_range_um is None:
            return None
        lo, hi = self.z_range_um
        return lo + (hi - lo) * fraction

    def _assert_at(self, stage: Stage, x: float, y: float, z: float | None) -> Position:
        here = stage.position_um()
        assert abs(here.x_um - x) <= self.tolerance_um, f"x {here.x_um} != target {x}"
        assert abs(here.y_um - y) <= self.tolerance_um, f"y {here.y_um} != target {y}"
        if z is not None:
            assert abs(here.z_um - z) <= self.tolerance_um, f"z {here.z_um} != target {z}"
        return here

    # -- the contract -------------------------------------------------------------------------------
    def test_satisfies_the_stage_protocol(self, stage: Stage) -> None:
        """The object has everything the scan engine calls, and a name."""
        assert isinstance(stage, Stage)
        assert isinstance(stage.name, str) and stage.name
        assert isinstance(stage.position_um(), Position)

    def test_move_blocks_until_the_stage_is_at_the_target(self, stage: Stage) -> None:
        """When move_to_um returns, the stage reports the target: imaging may start at once."""
        stage.limits = self._limits()
        x0, y0, x1, y1 = self.box_um
        for fx, fy, fz in ((0.25, 0.75, 0.5), (0.8, 0.1, 0.9), (0.5, 0.5, 0.2)):
            x, y, z = x0 + (x1 - x0) * fx, y0 + (y1 - y0) * fy, self._z(fz)
            stage.move_to_um(x, y, z)
            self._assert_at(stage, x, y, z)

    def test_z_none_keeps_z(self, stage: Stage) -> None:
        """move_to_um(x, y) (z None) moves x and y and leaves z where it was."""
        stage.limits = self._limits()
        x0, y0, x1, y1 = self.box_um
        z = self._z(0.7)
        stage.move_to_um(x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0), z)
        before = stage.position_um()
        stage.move_to_um(x0 + 0.6 * (x1 - x0), y0 + 0.4 * (y1 - y0))
        after = self._assert_at(stage, x0 + 0.6 * (x1 - x0), y0 + 0.4 * (y1 - y0), None)
        assert abs(after.z_um - before.z_um) <= self.tolerance_um

    def test_targets_outside_the_limits_are_refused_before_anything_is_sent(self, stage: Stage) -> None:
        """Every axis: a target beyond the soft limits raises StageLimitError; nothing moves, nothing is sent."""
        stage.limits = self._limits()
        x0, y0, x1, y1 = self.box_um
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        stage.move_to_um(xm, ym, self._z(0.5))
        before = stage.position_um()
        sent = self.commands_received(stage)
        targets: list[tuple[float, float, float | None]] = [
            (x1 + 1.0, ym, None), (x0 - 1.0, ym, None), (xm, y1 + 1.0, None), (xm, y0 - 1.0, None),
            (math.nan, ym, None), (xm, math.inf, None),
        ]
        if self.z_range_um is not None:
            targets += [(xm, ym, self.z_range_um[1] + 1.0), (xm, ym, self.z_range_um[0] - 1.0)]
        for target in targets:
            with pytest.raises(StageLimitError):
                stage.move_to_um(*target)
        if sent is not None:
            assert self.commands_received(stage) == sent, "a refused move must not send anything"
        after = stage.position_um()
        assert (after.x_um, after.y_um, after.z_um) == pytest.approx(
            (before.x_um, before.y_um, before.z_um), abs=self.tolerance_um
        )

    def test_estimate_move_s_is_sane(self, stage: Stage) -> None:
        """Estimates are finite and non-negative, and a longer move is not estimated shorter."""
        x0, y0, x1, y1 = self.box_um
        z = self._z(0.5) or 0.0
        start = Position(x0, y0, z)
        near = stage.estimate_move_s(start, Position(x0 + (x1 - x0) * 0.1, y0, z))
        far = stage.estimate_move_s(start, Position(x1, y1, z))
        assert 0.0 <= near <= far < math.inf
        assert stage.estimate_move_s(start, start) <= near

    def test_close_twice_is_safe(self, stage: Stage) -> None:
        """close() may be called again (the scan's teardown always calls it)."""
        stage.close()
        stage.close()


class CameraContract:
    """The camera contract. Provide a ``camera`` fixture that yields a connected camera."""

    @pytest.fixture
    def camera(self) -> Any:
        raise NotImplementedError("a CameraContract subclass must provide a 'camera' fixture")

    def test_satisfies_the_camera_protocol(self, camera: Camera) -> None:
        """The object has everything the scan engine calls, and a name."""
        assert isinstance(camera, Camera)
        assert isinstance(camera.name, str) and camera.name
        rows, cols = camera.shape
        assert rows > 0 and cols > 0

    def test_snap_returns_a_frame_of_the_announced_shape(self, camera: Camera) -> None:
        """Frames are (rows, cols) or (rows, cols, 3), uint8 or uint16, and match camera.shape."""
        for _ in range(2):
            frame = camera.snap()
            assert isinstance(frame, np.ndarray)
            assert frame.dtype in (np.uint8, np.uint16), frame.dtype
            assert frame.ndim in (2, 3), frame.shape
            if frame.ndim == 3:
                assert frame.shape[2] == 3, frame.shape
            assert tuple(frame.shape[:2]) == tuple(camera.shape)

    def test_frame_time_is_finite(self, camera: Camera) -> None:
        """frame_time_s is what plans add per tile: finite and non-negative."""
        assert 0.0 <= camera.frame_time_s() < math.inf

    def test_a_closed_camera_gives_no_frame(self, camera: Camera) -> None:
        """After close(), snap() raises rather than returning a stale frame; close() twice is safe."""
        camera.close()
        camera.close()
        with pytest.raises((HardwareError, FlakehunterError)):
            camera.snap()
