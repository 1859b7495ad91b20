"""Built-in camera plugin ``replay``: serves recorded tiles by stage position (re-run a scan offline)."""

from __future__ import annotations

from flakehunter.hookspecs import RegisterCamera, hookimpl


@hookimpl
def register_cameras(register: RegisterCamera) -> None:
    from flakehunter.hardware.replay.camera import ReplayCamera

    register("replay", ReplayCamera)
