"""The contrast detector's straight-edge finder: its polygon step and a known shape."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.measure import approximate_polygon, find_contours

from flakehunter.plugins.contrast.axis import polygon_vertices, straight_edges


def _contours(seed: int) -> list[np.ndarray]:
    """Iso-contours of smoothed random fields: closed and open, ragged and smooth, a few to a few hundred points."""
    rng = np.random.default_rng(seed)
    field = cv2.GaussianBlur(rng.normal(size=(96, 128)).astype(np.float32), (0, 0), float(rng.uniform(1.5, 6)))
    return [c for level in (-0.02, 0.0, 0.03) for c in find_contours(field, level) if len(c) >= 3]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tolerance", [0.3, 0.7, 2.0])
def test_polygon_vertices_are_those_of_skimage(seed: int, tolerance: float) -> None:
    contours = _contours(seed)
    assert len(contours) > 10
    for contour in contours:
        vertices = polygon_vertices(contour, tolerance)
        assert vertices[0] == 0 and vertices[-1] == len(contour) - 1 and vertices == sorted(set(vertices))
        np.testing.assert_array_equal(contour[vertices], approximate_polygon(contour, tolerance))


def test_a_rotated_rectangle_has_four_straight_edges_at_its_angles() -> None:
    profile = np.zeros((120, 120), np.float32)
    box = cv2.boxPoints(((60.0, 60.0), (70.0, 40.0), 17.0))
    cv2.fillPoly(profile, [np.round(box * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    profile = cv2.GaussianBlur(profile, (0, 0), 1.0)
    edges = straight_edges(profile, 0.5, min_length_px=10)
    assert len(edges) == 4
    # Image rows point down: a rectangle turned by 17° in OpenCV's (x, y) has edges at 17° and 107° (row, col).
    assert all(abs(e.angle_deg % 90.0 - 17.0) < 1.0 for e in edges), [e.angle_deg for e in edges]
    assert sorted(round(e.length_px / 10) * 10 for e in edges) == [40, 40, 70, 70]  # the 40 x 70 px sides
