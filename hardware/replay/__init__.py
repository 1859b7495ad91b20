"""Built-in camera plugin ``replay``: serves recorded tiles by stage position (re-run a scan offline)."""

from __future__ import annotations

from flakehunter.hookspecs import Register, hookimpl


@hookimpl
def register_cameras(register: Register) -> None:
    from flakehunter.hardware.replay.camera import ReplayCamera

    register("replay", ReplayCamera)
