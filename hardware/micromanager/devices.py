"""Micro-Manager cameras and XY/Z stages as flakehunter devices, through pymmcore-plus.

Any device Micro-Manager has an adapter for (hundreds of cameras and stages) becomes a flakehunter
``stage`` or ``camera`` plugin named ``micromanager``::

    stage:  {plugin: micromanager, limits_um: {...}, options: {config_file: /path/to/MMConfig.cfg}}
    camera: {plugin: micromanager, options: {config_file: /path/to/MMConfig.cfg, shape: [2048, 2048]}}

The stage and the camera of one config share one ``CMMCorePlus`` (one system configuration is
loaded once per process). A script or GUI that already runs a core (napari-micromanager, a
notebook) hands it over with `register_core` and names it in ``options.core``; the tests do that
with a ``UniMMCore`` holding pure-Python devices, so the bridge is exercised through the real
pymmcore-plus API where no Micro-Manager adapters are installed.

Contracts kept on top of Micro-Manager's (whose ``setXYPosition`` returns before the move ends):
soft limits are checked before the core is asked to move; every move waits with ``waitForDevice``
under a timeout that raises instead of being swallowed (Micro-Manager issue nicost#24); the position
is read back and compared with the target, so a stage that stopped short is an error, not a tile
taken in the wrong place.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flakehunter.devices import AxisRange, DeviceContext, Position, TravelLimits
from flakehunter.errors import HardwareError, InputError

log = logging.getLogger(__name__)

_CORES: dict[str, Any] = {}
_CORES_LOCK = threading.Lock()


def register_core(name: str, core: Any) -> None:
    """Make an existing ``CMMCorePlus`` (or ``UniMMCore``) available as ``options.core: NAME``."""
    with _CORES_LOCK:
        _CORES[f"core:{name}"] = core


def forget_core(name: str) -> None:
    with _CORES_LOCK:
        _CORES.pop(f"core:{name}", None)


class MicroManagerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_file: Path | None = Field(None, description="Micro-Manager system configuration (.cfg)")
    adapter_dir: Path | None = Field(None, description="Micro-Manager installation; default: pymmcore-plus finds it")
    core: str | None = Field(None, description="Name of a core handed over with register_core()")
    timeout_ms: int = Field(10000, gt=0, description="Device timeout; a move that takes longer is an error")


class MicroManagerStageOptions(MicroManagerOptions):
    xy_stage: str | None = Field(None, description="XY stage device label; default: the core's XY stage")
    focus: str | None = Field(None, description="Z (focus) device label; default: the core's focus device; "
                                                "'' for none")
    speed_um_s: float = Field(5000.0, gt=0, description="For plan time estimates")
    settle_s: float = Field(0.0, ge=0)
    position_tolerance_um: float = Field(1.0, gt=0)


class MicroManagerCameraOptions(MicroManagerOptions):
    camera: str | None = Field(None, description="Camera device label; default: the core's camera")
    shape: tuple[int, int] = Field(description="Frame (rows, cols); checked against the camera on connect")
    exposure_ms: float | None = Field(None, gt=0)
    frame_time_s: float = Field(0.1, ge=0)


def _core_for(options: MicroManagerOptions, config_dir: Path | None) -> Any:
    """The shared core for these options, loading the system configuration once."""
    if options.core is not None:
        with _CORES_LOCK:
            core = _CORES.get(f"core:{options.core}")
        if core is None:
            raise InputError(f"options.core: no Micro-Manager core registered as {options.core!r}")
        return core
    try:
        from pymmcore_plus import CMMCorePlus, find_micromanager
    except ImportError:
        raise InputError(
            "the micromanager plugin needs pymmcore-plus: pip install 'flakehunter[micromanager]'"
        ) from None
    adapter_dir = options.adapter_dir or find_micromanager()
    if not adapter_dir:
        raise HardwareError("no Micro-Manager installation found (run 'mmcore install' or set options.adapter_dir)")
    config = options.config_file
    if config is not None and not config.is_absolute() and config_dir is not None:
        config = config_dir / config
    key = f"{Path(adapter_dir).resolve()}|{config.resolve() if config else 'demo'}"
    with _CORES_LOCK:
        core = _CORES.get(key)
        if core is None:
            core = CMMCorePlus(mm_path=str(adapter_dir))
            try:
                core.loadSystemConfiguration(str(config) if config else "MMConfig_demo.cfg")
            except Exception as exc:
                raise HardwareError(f"Micro-Manager could not load {config or 'MMConfig_demo.cfg'}: {exc}") from exc
            _CORES[key] = core
    core.setTimeoutMs(options.timeout_ms)
    return core


class MicroManagerStage:
    """A Micro-Manager XY stage, with its focus device as z."""

    Options = MicroManagerStageOptions
    name = "micromanager"

    def __init__(self, options: MicroManagerStageOptions, context: DeviceContext | None = None) -> None:
        self.options = options
        self._config_dir = context.config_dir if context else None
        wide = AxisRange(-math.inf, math.inf)
        self.limits = TravelLimits(wide, wide, wide)
        self.core: Any = None
        self.xy = ""
        self.focus = ""

    def connect(self) -> None:
        core = _core_for(self.options, self._config_dir)
        self.xy = self.options.xy_stage or core.getXYStageDevice()
        self.focus = core.getFocusDevice() if self.options.focus is None else self.options.focus
        if not self.xy or self.xy not in core.getLoadedDevices():
            loaded = ", ".join(core.getLoadedDevices())
            raise HardwareError(f"Micro-Manager: no XY stage {self.xy!r} (loaded: {loaded})")
        if self.focus and self.focus not in core.getLoadedDevices():
            raise HardwareError(f"Micro-Manager: no focus device {self.focus!r}")
        self.core = core

    def close(self) -> None:
        self.core = None

    @property
    def identity(self) -> str:
        if self.core is None:
            return ""
        names = [f"{label}: {self.core.getDeviceLibrary(label)}/{self.core.getDeviceName(label)}"
                 for label in (self.xy, self.focus) if label]
        return "; ".join(names)

    def _core(self) -> Any:
        if self.core is None:
            raise HardwareError("micromanager stage: used before connect()")
        return self.core

    def position_um(self) -> Position:
        core = self._core()
        try:
            x, y = core.getXYPosition(self.xy)
            z = core.getPosition(self.focus) if self.focus else 0.0
        except Exception as exc:
            raise HardwareError(f"Micro-Manager {self.xy}: cannot read the position: {exc}") from exc
        return Position(float(x), float(y), float(z))

    def estimate_move_s(self, start: Position, end: Position) -> float:
        d = max(abs(end.x_um - start.x_um), abs(end.y_um - start.y_um))
        return d / self.options.speed_um_s + (self.options.settle_s if start != end else 0.0)

    def move_to_um(self, x_um: float, y_um: float, z_um: float | None = None) -> None:
        self.limits.check(x_um, y_um, z_um, device="micromanager stage")
        core = self._core()
        if z_um is not None and not self.focus:
            raise HardwareError(f"micromanager stage: move to z={z_um:.3f} µm refused: no focus device configured")
        label = self.xy
        try:
            core.setXYPosition(self.xy, float(x_um), float(y_um))
            core.waitForDevice(self.xy)
            if z_um is not None:
                label = self.focus
                core.setPosition(self.focus, float(z_um))
                core.waitForDevice(self.focus)
        except Exception as exc:
            raise HardwareError(f"Micro-Manager {label}: move to ({x_um:.3f}, {y_um:.3f}) µm failed: {exc}") from exc
        here = self.position_um()
        tol = self.options.position_tolerance_um
        off = max(abs(here.x_um - x_um), abs(here.y_um - y_um), abs(here.z_um - z_um) if z_um is not None else 0.0)
        if off > tol:
            raise HardwareError(
                f"Micro-Manager {self.xy}: the stage is at ({here.x_um:.3f}, {here.y_um:.3f}, {here.z_um:.3f}) µm "
                f"after a move to ({x_um:.3f}, {y_um:.3f}{'' if z_um is None else f', {z_um:.3f}'}) µm"
            )
        if self.options.settle_s > 0:
            time.sleep(self.options.settle_s)


class MicroManagerCamera:
    """A Micro-Manager camera."""

    Options = MicroManagerCameraOptions
    name = "micromanager"

    def __init__(self, options: MicroManagerCameraOptions, context: DeviceContext | None = None) -> None:
        self.options = options
        self._config_dir = context.config_dir if context else None
        self.shape = (int(options.shape[0]), int(options.shape[1]))
        self.exposure_ms = options.exposure_ms
        self.core: Any = None
        self.label = ""

    def connect(self) -> None:
        core = _core_for(self.options, self._config_dir)
        label = self.options.camera or core.getCameraDevice()
        if not label or label not in core.getLoadedDevices():
            raise HardwareError(f"Micro-Manager: no camera {label!r} (loaded: {', '.join(core.getLoadedDevices())})")
        core.setCameraDevice(label)
        if self.options.exposure_ms is not None:
            core.setExposure(label, self.options.exposure_ms)
        self.exposure_ms = float(core.getExposure())
        actual = (int(core.getImageHeight()), int(core.getImageWidth()))
        if actual != self.shape:
            raise HardwareError(
                f"Micro-Manager camera {label}: delivers {actual[0]}x{actual[1]} (rows x cols) frames, the config "
                f"asks for {self.shape[0]}x{self.shape[1]}; set camera.options.shape to {list(actual)}"
            )
        self.core, self.label = core, label

    def close(self) -> None:
        self.core = None

    def frame_time_s(self) -> float:
        return self.options.frame_time_s

    def snap(self) -> np.ndarray:
        if self.core is None:
            raise HardwareError("micromanager camera: snap() before connect()")
        try:
            self.core.setCameraDevice(self.label)
            self.core.snapImage()
            image = np.asarray(self.core.getImage())
        except Exception as exc:
            raise HardwareError(f"Micro-Manager camera {self.label}: snap failed: {exc}") from exc
        if image.ndim == 3 and image.shape[2] == 4:  # RGB32 cameras deliver BGRA
            image = image[..., 2::-1]
        if image.dtype not in (np.uint8, np.uint16):
            if image.dtype.kind in "ui" and image.max(initial=0) <= np.iinfo(np.uint16).max:
                image = image.astype(np.uint16)
            else:
                raise HardwareError(f"Micro-Manager camera {self.label}: unsupported pixel type {image.dtype}")
        return np.ascontiguousarray(image)
