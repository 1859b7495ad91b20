"""A USB/UVC microscope camera through OpenCV's ``cv2.VideoCapture``.

Most eyepiece and C-mount USB cameras are UVC devices that OpenCV opens by index (``/dev/video0`` is
index 0) or by path. The driver asks for the configured frame size and, if given, a manual exposure;
UVC cameras may silently pick another size, so `connect` reads one frame and reports the size the
camera actually delivers (a mismatch with ``shape`` is an error, because the scan plan's field of view
was computed from ``shape``). Frames come out as RGB (OpenCV delivers BGR). Webcam-style cameras keep
a few stale frames in their buffer; `snap` discards ``flush_frames`` before the one it returns, so the
image is taken after the stage stopped, not before.

Any source ``cv2.VideoCapture`` opens works, including a video file, which is how the tests drive it.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flakehunter.devices import DeviceContext
from flakehunter.errors import HardwareError

log = logging.getLogger(__name__)

_BACKENDS = {"any": 0, "v4l2": 200, "dshow": 700, "msmf": 1400, "avfoundation": 1200, "gstreamer": 1800,
             "ffmpeg": 1900}


class OpenCVCameraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: int | str = Field(0, description="Camera index (0 = /dev/video0), device path or video URL/file")
    backend: str = Field("any", description=f"VideoCapture backend: {', '.join(_BACKENDS)}")
    shape: tuple[int, int] = Field(description="Frame (rows, cols): requested from the camera, and the scan plan's")
    exposure: float | None = Field(None, description="Manual exposure in the driver's units (CAP_PROP_EXPOSURE)")
    flush_frames: int = Field(2, ge=0, le=30, description="Stale frames discarded before each snap")
    frame_time_s: float = Field(0.1, ge=0, description="Time one snap takes, for plan estimates")
    mono: bool = Field(False, description="Return single-channel frames")


class OpenCVCamera:
    """A camera that ``cv2.VideoCapture`` can open."""

    Options = OpenCVCameraOptions
    name = "opencv"

    def __init__(self, options: OpenCVCameraOptions, context: DeviceContext | None = None) -> None:
        if options.backend not in _BACKENDS:
            from flakehunter.errors import InputError

            raise InputError(f"backend: expected one of {', '.join(_BACKENDS)}, got {options.backend!r}")
        self.options = options
        self.shape: tuple[int, int] = (int(options.shape[0]), int(options.shape[1]))
        self._capture = None
        self._lock = threading.Lock()
        self.exposure_ms: float | None = None

    @property
    def source(self) -> str:
        return f"opencv camera {self.options.device!r}"

    def connect(self) -> None:
        import cv2

        if self._capture is not None:
            return
        device = self.options.device
        capture = cv2.VideoCapture(device, _BACKENDS[self.options.backend])
        if not capture.isOpened():
            raise HardwareError(f"{self.source}: cannot open it (is it plugged in, and not used by another program?)")
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.options.shape[0])
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.options.shape[1])
        if self.options.exposure is not None:
            capture.set(cv2.CAP_PROP_AUTO_EXPOSURE, 0.25)  # V4L2's "manual" value
            capture.set(cv2.CAP_PROP_EXPOSURE, self.options.exposure)
        self._capture = capture
        frame = self._read()
        actual = (int(frame.shape[0]), int(frame.shape[1]))
        if actual != self.shape:
            self.close()
            raise HardwareError(
                f"{self.source}: delivers {actual[0]}x{actual[1]} (rows x cols) frames, the config asks for "
                f"{self.options.shape[0]}x{self.options.shape[1]}; set camera.options.shape to {list(actual)}"
            )

    def close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    def frame_time_s(self) -> float:
        return self.options.frame_time_s

    def _read(self) -> np.ndarray:
        import cv2

        assert self._capture is not None
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise HardwareError(f"{self.source}: no frame (camera unplugged, or the stream ended)")
        if frame.ndim == 3 and frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        if frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if self.options.mono else cv2.cvtColor(
                frame, cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(frame)

    def snap(self) -> np.ndarray:
        if self._capture is None:
            raise HardwareError(f"{self.source}: snap() before connect()")
        with self._lock:
            t0 = time.perf_counter()
            for _ in range(self.options.flush_frames):
                if not self._capture.grab():
                    raise HardwareError(f"{self.source}: no frame (camera unplugged, or the stream ended)")
            frame = self._read()
            log.debug("%s: frame in %.3f s", self.source, time.perf_counter() - t0)
        if frame.dtype not in (np.uint8, np.uint16):
            frame = np.clip(frame, 0, 255).astype(np.uint8)
        return frame
