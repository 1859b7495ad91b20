"""Every built-in stage and camera plugin passes the exported contract suites.

The contracts live in `flakehunter.testing.contracts` so that third-party plugins run the same tests;
here each built-in gets its fixture: the simulator, the four serial drivers on their emulators, the
replay camera on recorded tiles, the OpenCV camera on a real video stream (an MJPG file, which
``cv2.VideoCapture`` opens like a USB camera), and the Micro-Manager bridge on a pymmcore-plus
``UniMMCore`` with pure-Python devices (no Micro-Manager adapters are installed here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flakehunter.devices import DeviceContext
from flakehunter.geometry import PixelTransform
from flakehunter.registry import get_registry
from flakehunter.testing.contracts import CameraContract, StageContract
from flakehunter.testing.emulators import emulated_stage


def sim_context(**kwargs: Any) -> DeviceContext:
    return DeviceContext(transform=PixelTransform(1.15), material="graphene", oxide_nm=90, seed=3, **kwargs)


def sim_stage() -> Any:
    factory = get_registry().get("stage", "simulator").obj
    return factory(factory.Options(time_scale=0), sim_context())


def sim_camera(stage: Any, shape: tuple[int, int] = (60, 80)) -> Any:
    factory = get_registry().get("camera", "simulator").obj
    chip = {"size_um": [600, 600], "thin_flakes": 10, "thick_flakes": 5, "dust": 10, "residue_blobs": 2}
    return factory(factory.Options(shape=shape, chip=chip), sim_context(stage=stage))


# -- stages ---------------------------------------------------------------------------------------------


class TestSimulatorStage(StageContract):
    tolerance_um = 1e-9

    @pytest.fixture
    def stage(self) -> Any:
        stage = sim_stage()
        stage.connect()
        yield stage
        stage.close()


class _SerialStageContract(StageContract):
    """The four serial drivers, each on its controller's emulator."""

    driver = ""
    box_um = (-300.0, -200.0, 900.0, 700.0)

    @pytest.fixture
    def stage(self) -> Any:
        with emulated_stage(self.driver) as (emulator, stage):
            self.emulator = emulator
            yield stage

    def commands_received(self, stage: Any) -> int:
        return len(self.emulator.commands)


class TestPriorStage(_SerialStageContract):
    driver = "prior"
    tolerance_um = 0.05  # 0.1 µm steps


class TestASIStage(_SerialStageContract):
    driver = "asi"
    tolerance_um = 0.05


class TestLudlStage(_SerialStageContract):
    driver = "ludl"
    tolerance_um = 0.05


class TestTangoStage(_SerialStageContract):
    driver = "tango"
    tolerance_um = 0.0005  # 1 nm in the protocol


# -- cameras --------------------------------------------------------------------------------------------


class TestSimulatorCamera(CameraContract):
    @pytest.fixture
    def camera(self) -> Any:
        stage = sim_stage()
        camera = sim_camera(stage)
        camera.connect()
        yield camera
        camera.close()


class TestReplayCamera(CameraContract):
    @pytest.fixture
    def camera(self, tmp_path: Path) -> Any:
        from flakehunter.tiles import write_tile

        stage = sim_stage()
        source = sim_camera(stage)
        source.connect()
        for i, (x, y) in enumerate(((100.0, 100.0), (160.0, 100.0), (100.0, 150.0))):
            stage.move_to_um(x, y, 0.0)
            write_tile(tmp_path / "tiles" / f"t{i}.ome.tif", source.snap(), pixel_size_um=1.15,
                       x_um=x, y_um=y, z_um=0.0, provenance={})
        stage.move_to_um(160.0, 100.0, 0.0)
        factory = get_registry().get("camera", "replay").obj
        camera = factory(factory.Options(source=tmp_path), sim_context(stage=stage))
        camera.connect()
        yield camera
        camera.close()


def write_video(path: Path, frames: int = 12, shape: tuple[int, int] = (48, 64)) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (shape[1], shape[0]))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((*shape, 3), 40 + 10 * i, np.uint8)
        frame[8:24, 8:32] = (0, 0, 255)  # pure red in OpenCV's BGR order
        writer.write(frame)
    writer.release()
    return path


class TestOpenCVCamera(CameraContract):
    @pytest.fixture
    def camera(self, tmp_path: Path) -> Any:
        factory = get_registry().get("camera", "opencv").obj
        video = write_video(tmp_path / "stream.avi")
        camera = factory(factory.Options(device=str(video), shape=(48, 64), flush_frames=1), None)
        camera.connect()
        yield camera
        camera.close()


# -- Micro-Manager through pymmcore-plus, with Python devices --------------------------------------------


def python_core(name: str) -> Any:
    """A UniMMCore holding an XY stage, a focus drive and a camera written in Python."""
    unicore = pytest.importorskip("pymmcore_plus.experimental.unicore")
    from flakehunter.hardware.micromanager.devices import register_core

    class XY(unicore.XYStageDevice):
        def __init__(self) -> None:
            super().__init__()
            self.xy = (0.0, 0.0)

        def set_position_um(self, x: float, y: float) -> None:
            self.xy = (x, y)

        def get_position_um(self) -> tuple[float, float]:
            return self.xy

        def set_origin_x(self) -> None: ...

        def set_origin_y(self) -> None: ...

        def home(self) -> None: ...

        def stop(self) -> None: ...

    class Focus(unicore.StageDevice):
        def __init__(self) -> None:
            super().__init__()
            self.z = 0.0

        def set_position_um(self, z: float) -> None:
            self.z = z

        def get_position_um(self) -> float:
            return self.z

        def home(self) -> None: ...

        def stop(self) -> None: ...

        def set_origin(self) -> None: ...

    class Cam(unicore.SimpleCameraDevice):
        def __init__(self) -> None:
            super().__init__()
            self.exposure = 5.0

        def get_exposure(self) -> float:
            return self.exposure

        def set_exposure(self, exposure: float) -> None:
            self.exposure = exposure

        def sensor_shape(self) -> tuple[int, int]:
            return (40, 50)

        def dtype(self) -> Any:
            return np.uint16

        def snap(self, buffer: np.ndarray) -> dict:
            buffer[:] = np.arange(buffer.size, dtype=np.uint16).reshape(buffer.shape)
            return {}

    core = unicore.UniMMCore()
    core.loadPyDevice("XY", XY())
    core.loadPyDevice("Z", Focus())
    core.loadPyDevice("Cam", Cam())
    core.initializeAllDevices()
    core.setXYStageDevice("XY")
    core.setFocusDevice("Z")
    core.setCameraDevice("Cam")
    register_core(name, core)
    return core


class TestMicroManagerStage(StageContract):
    tolerance_um = 1e-9

    @pytest.fixture
    def stage(self) -> Any:
        from flakehunter.hardware.micromanager.devices import forget_core

        python_core("contract-stage")
        factory = get_registry().get("stage", "micromanager").obj
        stage = factory(factory.Options(core="contract-stage"), None)
        stage.connect()
        yield stage
        stage.close()
        forget_core("contract-stage")


class TestMicroManagerCamera(CameraContract):
    @pytest.fixture
    def camera(self) -> Any:
        from flakehunter.hardware.micromanager.devices import forget_core

        python_core("contract-camera")
        factory = get_registry().get("camera", "micromanager").obj
        camera = factory(factory.Options(core="contract-camera", shape=(40, 50), exposure_ms=12.5), None)
        camera.connect()
        yield camera
        camera.close()
        forget_core("contract-camera")
