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

from typing import TYPE_CHECKING

from flakehunter.hookspecs import RegisterDetector, hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def register_detectors(register: RegisterDetector) -> None:
    from flakehunter.plugins.cnn.axis import CnnAxisDetector
    from flakehunter.plugins.cnn.thickness import CnnThicknessDetector

    register("cnn-thickness", CnnThicknessDetector)
    register("cnn-axis", CnnAxisDetector)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from flakehunter.plugins.cnn.explain import explain

    cli.command("explain")(explain)
