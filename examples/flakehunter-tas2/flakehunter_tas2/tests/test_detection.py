"""TaS2 is found in a seeded simulated scan with the profile calibrated from three labelled simulator images."""

from __future__ import annotations

from importlib import resources
from typing import Any

PROFILE = resources.files("flakehunter_tas2") / "profiles" / "sim-tas2-90nm.json"


def test_found_in_a_seeded_simulated_scan(flakehunter_detector_check: Any) -> None:
    """A 1.2 x 1.2 mm chip of the calibrated batch (same oxide): recall >= 0.9 for 1-2 layer flakes of 50 µm² or
    more, with the right layer count for >= 0.9 of those found (benchmarks/tas2_example.py: larger chips)."""
    score = flakehunter_detector_check(
        "contrast", options={"profile": str(PROFILE)}, material="tas2", seed=5, chip={"oxide_jitter_nm": 0.0}
    )
    assert score.truth_flakes >= 20, score.line()
    assert score.recall >= 0.9, score.line()
    assert score.layers_right >= 0.9, score.line()
