"""The contrast detector's options (a scan config's ``detectors: [{name: contrast, options: ...}]``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from flakehunter.config import ExistingFile
from flakehunter.plugins.contrast.profile import profile_dirs


class ContrastOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report_layers: list[int] | None = Field(None, description="Layer counts to report; default: the material's targets")
    max_model_layers: int = Field(
        6, ge=2, le=12, description="Rungs of the ladder modelled, so that thicker is not mistaken for thin"
    )
    min_area_um2: float = Field(25.0, gt=0, description="Smallest region reported (a ~5 µm flake)")
    min_step_z: float = Field(
        6.0, gt=0, description="A plateau's step must stand this many noise σ (of this image) above what surrounds it"
    )
    orientation: bool = Field(True, description="Estimate the crystal axis from straight edges")
    calibration: Literal["self", "nominal"] = Field(
        "self",
        description="self: learn the layer ladder from the images (oxide, camera and tone curve unknown); "
        "nominal: the thin-film model at the configured oxide",
    )
    calibration_images: int = Field(12, ge=1, description="Images examined to learn the ladder before detecting")
    profile: Annotated[str | None, ExistingFile(search=profile_dirs, suffix=".json")] = Field(
        None, description="A material profile (path or name) measured on this setup; replaces calibration"
    )
    min_edge_px: float = Field(7.0, gt=2, description="Shortest straight edge used for the crystal axis")
    single_edge_px: float = Field(
        15.0, gt=0, description="A lone edge must be this long to give the crystal axis; two that agree suffice"
    )
    max_orientation_error_deg: float = Field(
        0.6, gt=0, description="Report the crystal axis only when its standard error is below this"
    )
    threads: int = Field(
        1, ge=1, le=32,
        description="Images segmented at once, each on a thread of its own; the results are those of one image at "
        "a time. Most of the segmentation holds Python's GIL, so more threads help little, and a scan's "
        "acquisition needs the cores too (benchmarks/scan_overhead.py overhead --threads N measures it)",
    )
