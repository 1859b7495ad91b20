"""The blur's dimming of small plateaus, measured and undone (plugins/contrast/blur.py).

Painted images (tests/test_contrast_plateaus.py) with a known Gaussian blur: the blur is read back from
the edges of the large flakes, and a small flake's contrast, dimmed by the blur, comes back near the
contrast painted.
"""

from __future__ import annotations

import numpy as np
import pytest

from flakehunter.plugins.contrast.blur import blur_attenuation, corrected, edge_blur_px
from flakehunter.plugins.contrast.plateaus import find_plateaus
from tests.test_contrast_plateaus import Painted, contrast_of, polygon, render_flakes

ONE_LAYER = (-0.10, -0.16, -0.30)


def _scene(blur_px: float, seed: int):
    large = [Painted(polygon((110, 120 + 170 * i), 55, sides=6, angle_deg=7 * i), (-0.25, -0.3, -0.45), 3)
             for i in range(3)]
    small = [Painted(polygon((300, 100 + 120 * i), 5.0, sides=5, angle_deg=11 * i, aspect=0.6), ONE_LAYER, 1)
             for i in range(4)]
    image = render_flakes((420, 600), [*large, *small], blur_px=blur_px, noise=0.004, seed=seed)
    contrast = contrast_of(image)
    return contrast, find_plateaus(contrast, min_area_px=20).plateaus, small


@pytest.mark.parametrize("blur_px", [0.8, 1.6, 2.4])
def test_the_blur_is_read_from_the_edges_of_large_flakes(blur_px: float) -> None:
    contrast, plateaus, _ = _scene(blur_px, seed=5)
    measured = edge_blur_px(contrast, plateaus)
    assert measured is not None
    # Painting at 4x supersampling and resizing adds about 0.3 px of blur of its own.
    assert measured == pytest.approx(np.hypot(blur_px, 0.3), rel=0.2)


def test_no_large_flake_no_blur_estimate() -> None:
    image = render_flakes((200, 300), [Painted(polygon((100, 150), 6), ONE_LAYER, 1)], blur_px=1.5, seed=6)
    contrast = contrast_of(image)
    assert edge_blur_px(contrast, find_plateaus(contrast, min_area_px=20).plateaus) is None


def test_a_small_flake_dimmed_by_the_blur_gets_its_contrast_back() -> None:
    contrast, plateaus, small = _scene(2.0, seed=7)
    blur = edge_blur_px(contrast, plateaus)
    assert blur is not None
    hits = [p for p in plateaus if any(s.contains(*p.centroid) for s in small)]
    assert len(hits) == len(small)
    painted = np.linalg.norm(ONE_LAYER)
    for p in hits:
        level, uncertainty, share = corrected(p, blur)
        # As measured, these flakes (6 x 10 px) show well under the painted contrast...
        assert np.linalg.norm(p.contrast) < 0.85 * painted
        assert share < 0.9 and share == pytest.approx(blur_attenuation(p, blur))
        # ... and with the dimming undone they are within the correction's stated uncertainty of it.
        assert np.linalg.norm(level) == pytest.approx(painted, rel=0.15)
        assert uncertainty > p.uncertainty


def test_a_large_plateau_is_left_as_measured() -> None:
    _, plateaus, _ = _scene(1.6, seed=8)
    big = max(plateaus, key=lambda p: p.area_px)
    level, uncertainty, share = corrected(big, 1.6)
    assert share == 1.0 and level is big.contrast and uncertainty == big.uncertainty
    assert corrected(big, None)[2] == 1.0
