"""Built-in detector plugin ``contrast``: thin flakes by thin-film optical contrast."""

from __future__ import annotations

from flakehunter.hookspecs import Register, hookimpl


@hookimpl
def register_detectors(register: Register) -> None:
    from flakehunter.plugins.contrast.detector import ContrastDetector

    register("contrast", ContrastDetector)
