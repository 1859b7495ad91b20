"""Built-in camera plugin ``opencv``: USB/UVC microscope cameras through OpenCV's VideoCapture."""

from __future__ import annotations

from flakehunter.hookspecs import RegisterCamera, hookimpl


@hookimpl
def register_cameras(register: RegisterCamera) -> None:
    from flakehunter.hardware.opencv.camera import OpenCVCamera

    register("opencv", OpenCVCamera)
