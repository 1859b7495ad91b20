"""Test helpers for flakehunter and for third-party plugin authors (docs/plugin-authoring.md).

* `flakehunter.testing.contracts`: the contract-test suites every stage, camera, material and detector
  plugin runs (needs pytest).
* `flakehunter.testing.pytest_plugin`: the pytest plugin (entry point ``pytest11``): the plugin under test
  next to the built-ins, the simulator, serial emulators and the detector check as fixtures.
* `flakehunter.testing.detector_check`: score a detector on a seeded simulated scan.
* `flakehunter.testing.simulated`: the simulator's stage and camera over a seeded chip (`SimulatedScope`).
* `flakehunter.testing.plugin_env`: a throwaway environment to install plugin packages into, offline.
* `flakehunter.testing.emulators`: serial protocol emulators of the Prior, ASI, Ludl and Tango
  controllers on real pseudo-terminals, with injectable faults, and `ControllerEmulator`, the base class
  for a new controller's protocol.
* `flakehunter.testing.files`: OME-TIFF bytes of a frame, and a writer that streams a file slowly
  (for watch-folder tests).

The names below are importable from here too (``from flakehunter.testing import StageContract``); each is
imported on first use, so that importing this package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CameraContract": "flakehunter.testing.contracts",
    "DetectorContract": "flakehunter.testing.contracts",
    "MaterialContract": "flakehunter.testing.contracts",
    "StageContract": "flakehunter.testing.contracts",
    "Axis": "flakehunter.testing.emulators",
    "ControllerEmulator": "flakehunter.testing.emulators",
    "Fault": "flakehunter.testing.emulators",
    "FAST_STAGE_OPTIONS": "flakehunter.testing.emulators",
    "DetectorScore": "flakehunter.testing.detector_check",
    "score_detector": "flakehunter.testing.detector_check",
    "PluginEnv": "flakehunter.testing.plugin_env",
    "SimulatedScope": "flakehunter.testing.simulated",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flakehunter.testing' has no attribute {name!r}")
