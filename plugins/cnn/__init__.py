"""Built-in detector plugins ``cnn-thickness`` and ``cnn-axis``: small CNNs with shipped weights.

* ``cnn-thickness`` (`thickness`): a U-Net labels every pixel of the background-normalised contrast image
  substrate, 1L, 2L, 3L, few, bulk or junk; alone its regions are candidates, after the contrast detector it
  confirms, relabels or rejects that detector's candidates and adds the thin flakes it missed.
* ``cnn-axis`` (`axis`): a crop regressor for the crystal axis modulo the material's edge symmetry, refined on
  the crop's edge directions; the straight-edge estimate before it stays the fallback.

Weights and their model cards are in ``weights/``; ``flakehunter explain RUN_DIR CANDIDATE_ID`` (`explain`)
writes a Grad-CAM overlay of a candidate's crop. README.md gives the numbers and the commands behind them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flakehunter.hookspecs import RegisterDetector, hookimpl
from flakehunter.plugins.cnn.options import AxisOptions, ThicknessOptions

if TYPE_CHECKING:
    import typer
    from pydantic import BaseModel

    from flakehunter.analysis.detector import DetectionContext, Detector


class DeferredDetector:
    """A detector factory that imports its module, and with it torch, only when a detector is built: every
    command builds the registry (two seconds of torch import each time), and most runs use no CNN."""

    def __init__(self, module: str, name: str, options: type[BaseModel]) -> None:
        self._module, self._name = module, name
        self.Options = options
        self.__qualname__ = name

    def __call__(self, options: Any, context: DetectionContext) -> Detector:
        detector: Detector = getattr(importlib.import_module(self._module), self._name)(options, context)
        return detector


@hookimpl
def register_detectors(register: RegisterDetector) -> None:
    register("cnn-thickness", DeferredDetector("flakehunter.plugins.cnn.thickness", "CnnThicknessDetector",
                                               ThicknessOptions))
    register("cnn-axis", DeferredDetector("flakehunter.plugins.cnn.axis", "CnnAxisDetector", AxisOptions))


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from flakehunter.plugins.cnn.explain import explain

    cli.command("explain")(explain)
