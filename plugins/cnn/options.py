"""The options of the CNN detectors, apart from the detectors themselves: validating a config or listing the
plugins needs these, not torch (the detectors' modules import it, and only a run that uses them loads them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ThicknessOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: str | None = Field(None, description="model.pt written by flakehunter train --task segment "
                                "(model.json beside it); default: the shipped weights")
    batch_size: int | None = Field(None, ge=1, le=256, description="Images per network pass (default 16 on a GPU, "
                                   "1 on the CPU)")
    min_area_um2: float = Field(25.0, gt=0, description="Smallest region reported")
    add_threshold: float = Field(0.85, ge=0, le=1, description="After another detector: a thin region it did not "
                                 "report becomes a candidate at this mean thin probability")
    alone_threshold: float = Field(0.65, ge=0, le=1, description="Alone (own ladder): a thin region becomes a "
                                   "candidate at this mean thin probability")
    reject_junk: float = Field(0.7, gt=0, le=1, description="An earlier candidate is rejected where the network "
                               "sees junk with this probability")
    disagree_factor: float = Field(0.6, ge=0, le=1, description="Score factor where network and ladder disagree")
    report_classes: list[str] = Field(default_factory=list, description="Also report these non-target classes "
                                      "(few, bulk)")
    calibration_images: int = Field(6, ge=1, description="Images examined to learn its own ladder before detecting")
    max_rung_distance: float = Field(3.0, gt=0, description="A region further from its rung (in spreads) is on none")
    add_needs_agreement: bool = Field(True, description="A region no earlier detector reported is added only where "
                                      "the network's class and the earlier detectors' ladder agree")
    add_max_distance: float = Field(1.0, gt=0, description="... and its contrast lies within this many spreads of "
                                    "that rung")


class AxisOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: str | None = Field(None, description="model.pt of flakehunter train --task angle on a foreign axis "
                                "dataset; default: the shipped weights for the material's edge symmetry")
    batch_size: int | None = Field(None, ge=1, le=256, description="Images per call (default 16 on a GPU, 1 on "
                                   "the CPU); their crops go through the network together")
    min_confidence: float = Field(0.5, ge=0, le=1, description="Smallest length of the predicted unit vector")
    min_edge_fraction: float = Field(0.28, gt=0, le=1, description="Share of the flake's edge strength that must lie "
                                     "within ±1.5° of the angle (a round outline puts 3°/P there)")
    window_deg: float = Field(5.0, gt=0, le=10, description="Edges within this of the network's angle refine it")
    min_window_px: int = Field(12, ge=6, description="Flakes smaller than this across get no axis")
    verify_classical: bool = Field(True, description="Keep an earlier detector's axis only where the edges support it")
