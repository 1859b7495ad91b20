"""Angles modulo the crystal period, and the dihedral augmentation that must keep angle labels true."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.chip import ChipLayout
from flakehunter.hardware.simulator.dataset import image_angle_deg
from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
from flakehunter.training.angles import Dihedral, angle_error_deg, random_guess_rms_deg
from flakehunter.training.augment import Augmenter, AugmentSpec
from tests.test_training_fixtures import edge_direction_deg, edge_image, wrapped_diff


def test_edge_image_helper_measures_the_angle_it_draws() -> None:
    """The independent edge-direction measurement reads back the θ an edge was drawn at (±0.3°)."""
    for theta in (0.0, 12.0, 37.5, 90.0, 133.0):
        assert wrapped_diff(edge_direction_deg(edge_image(theta)), theta, 180.0) < 0.4


@pytest.mark.parametrize("period", [30.0, 60.0])
@pytest.mark.parametrize("index", range(8))
def test_dihedral_transform_maps_the_angle_label_as_the_image_edge_moves(index: int, period: float) -> None:
    """For all 8 symmetries and both periods, the label mapping agrees with the edge measured in the
    transformed image: rotating a synthetic image with a known edge direction moves its edge exactly as
    Dihedral.angle says (so training labels stay true)."""
    element = Dihedral(index)
    for theta in (3.0, 17.0, 26.0, 44.0):
        measured = edge_direction_deg(element.image(edge_image(theta)))
        assert wrapped_diff(measured, element.angle(theta, period), period) < 0.4, (index, theta)


def test_quarter_turn_keeps_theta_mod_30_but_shifts_it_mod_60() -> None:
    """90° is a multiple of 30° but not of 60°: graphene labels survive a quarter turn, TMD labels move 30°."""
    turn = Dihedral(1)
    assert turn.angle(10.0, 30.0) == pytest.approx(10.0)
    assert turn.angle(10.0, 60.0) == pytest.approx(40.0)
    flip = Dihedral(4)  # transpose: 90 − θ
    assert flip.angle(10.0, 30.0) == pytest.approx(20.0)


def test_augmenter_keeps_angle_labels_consistent_with_the_pixels() -> None:
    """Random training augmentation (crop, dihedral, photometric) returns labels that match the edge in
    the augmented image, draw after draw."""
    aug = Augmenter(AugmentSpec(noise=0.0, blur_sigma_px=0.0), crop_px=29, task="angle", period_deg=30.0)
    seen = set()
    for k in range(24):
        rng = np.random.default_rng([1, k])
        theta = float(rng.uniform(0, 30))
        image = edge_image(theta).astype(np.float32) / 255
        out, label = aug(np.repeat(image[:, :, None], 3, axis=2), theta, rng)
        seen.add(round(label - theta, 3) % 30)
        assert out.shape == (29, 29, 3)
        measured = edge_direction_deg(out[:, :, 0])
        assert wrapped_diff(measured, label, 30.0) < 0.5
    assert len(seen) > 1  # the augmentation really changed labels (transposes), not only kept them


def test_wrapped_error_and_random_guess_rms() -> None:
    """Errors wrap into [-P/2, P/2); a uniform random guess has RMS P/√12 = 8.66° for P = 30°."""
    assert angle_error_deg(29.0, 1.0, 30.0) == pytest.approx(-2.0)
    assert angle_error_deg(1.0, 29.0, 30.0) == pytest.approx(2.0)
    assert random_guess_rms_deg(30.0) == pytest.approx(8.660, abs=1e-3)
    rng = np.random.default_rng(0)
    guess, truth = rng.uniform(0, 30, 200_000), rng.uniform(0, 30, 200_000)
    rms = math.sqrt(np.mean(angle_error_deg(guess, truth, 30.0) ** 2))
    assert rms == pytest.approx(8.66, abs=0.03)


def _render_ribbon(theta_stage_deg: float, transform: PixelTransform) -> np.ndarray:
    """Render a 70 x 8 µm graphite ribbon whose long edges run at θ (stage frame) with the simulator."""
    t = math.radians(theta_stage_deg)
    u, n = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    signs = ((-1, -1), (1, -1), (1, 1), (-1, 1))
    corners = [(np.array([500.0, 500.0]) + a * 35 * u + b * 4 * n).tolist() for a, b in signs]
    layout = ChipLayout.from_dict({
        "material": "graphene", "bounds_um": [0, 0, 1000, 1000], "nominal_oxide_nm": 90.0,
        "flakes": [{"id": 1, "kind": "thick", "layers": 60, "theta_deg": theta_stage_deg % 30,
                    "polygon_um": [corners]}],
    })
    scope = SimulatedMicroscope(layout, seed=1, transform=transform, shape=(120, 120), read_noise_e=0, flicker=0)
    return scope.snap_at(500, 500)[..., 1].astype(float)


@pytest.mark.parametrize("transform", [PixelTransform(1.0), PixelTransform(1.0, flip_rows=True),
                                       PixelTransform(1.0, rotation_deg=90.0)])
def test_simulator_angles_become_image_angles(transform: PixelTransform) -> None:
    """simulate dataset's stage -> image angle conversion matches where the simulator draws the edges,
    also for a flipped or rotated camera (measured as the long axis of a rendered ribbon)."""
    theta_stage = 20.0
    green = _render_ribbon(theta_stage, transform)
    mask = np.abs(green - np.median(green)) > 0.2 * np.median(green)  # the ribbon, bright or dark
    rows, cols = np.nonzero(mask)
    cov = np.cov(np.vstack([cols, rows]))
    evals, evecs = np.linalg.eigh(cov)
    d_col, d_row = evecs[:, np.argmax(evals)]
    measured = math.degrees(math.atan2(d_row, d_col)) % 180
    assert wrapped_diff(measured, image_angle_deg(theta_stage, transform, 180.0), 180.0) < 1.0
