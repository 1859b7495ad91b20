"""The simulator hardware: stage limits and timing, and a camera that renders the chip faithfully."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from flakehunter.devices import AxisRange, DeviceContext, TravelLimits
from flakehunter.errors import StageLimitError
from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.camera import SimulatorCamera, SimulatorCameraOptions
from flakehunter.hardware.simulator.chip import ChipLayout
from flakehunter.hardware.simulator.stage import SimulatorStage, SimulatorStageOptions
from flakehunter.optics import layer_contrast
from flakehunter.registry import get_registry

PIXEL_UM = 1.15


def make_stage(**options: float) -> SimulatorStage:
    ctx = DeviceContext(transform=PixelTransform(PIXEL_UM), material="graphene", oxide_nm=90.0, seed=1)
    stage = SimulatorStage(SimulatorStageOptions(**options), ctx)
    stage.limits = TravelLimits(AxisRange(0, 5000), AxisRange(0, 5000), AxisRange(-100, 100))
    stage.connect()
    return stage


def one_flake_layout(layers: int = 1, *, tilt: float = 0.0, size_um: float = 60.0) -> ChipLayout:
    """A 1 x 1 mm graphene chip with one square flake centred at (500, 500)."""
    h = size_um / 2
    return ChipLayout.from_dict(
        {
            "material": "graphene",
            "bounds_um": [0, 0, 1000, 1000],
            "nominal_oxide_nm": 90.0,
            "focus": {"z_at_centre_um": 0.0, "dz_dx_um_per_mm": tilt, "dz_dy_um_per_mm": 0.0},
            "flakes": [
                {
                    "id": 1, "kind": "thin", "layers": layers, "theta_deg": 0.0, "straight_edges": True,
                    "polygon_um": [[[500 - h, 500 - h], [500 + h, 500 - h], [500 + h, 500 + h], [500 - h, 500 + h]]],
                }
            ],
            "residue": [],
            "dust": [],
        }
    )


def make_camera(stage: SimulatorStage, layout: ChipLayout | None = None, **options) -> SimulatorCamera:
    ctx = DeviceContext(
        transform=PixelTransform(PIXEL_UM), material="graphene", oxide_nm=90.0, seed=3, stage=stage
    )
    camera = SimulatorCamera(SimulatorCameraOptions(shape=(200, 300), **options), ctx)
    camera.layout = layout
    camera.connect()
    return camera


def test_stage_refuses_moves_outside_soft_limits_before_moving() -> None:
    """A target outside the limits raises StageLimitError naming the axis; the stage stays put."""
    stage = make_stage(time_scale=0)
    stage.move_to_um(100, 200, 0)
    with pytest.raises(StageLimitError, match="y=6000"):
        stage.move_to_um(100, 6000)
    with pytest.raises(StageLimitError, match="z=150"):
        stage.move_to_um(100, 200, 150)
    assert stage.position_um() == (100, 200, 0)
    assert stage.moves[-1] == (100, 200, 0)


def test_stage_move_takes_its_trapezoidal_time() -> None:
    """A move blocks for its acceleration-limited duration plus settling; time_scale 0 is instant."""
    stage = make_stage(speed_um_s=10000, acceleration_um_s2=50000, settle_s=0.05)
    start = stage.position_um()
    # 2 mm: 0.2 s ramps (1 mm at 50 mm/s²... ) -> ramp distance 2 mm, so triangular: 2·sqrt(2000/50000) = 0.4 s.
    estimate = stage.estimate_move_s(start, start._replace(x_um=2000))
    assert estimate == pytest.approx(2 * math.sqrt(2000 / 50000) + 0.05)
    t0 = time.perf_counter()
    stage.move_to_um(2000, 0)
    assert time.perf_counter() - t0 >= estimate * 0.95
    instant = make_stage(time_scale=0)
    t0 = time.perf_counter()
    instant.move_to_um(4000, 4000)
    assert time.perf_counter() - t0 < 0.05


def test_rendered_flake_has_the_thin_film_contrast() -> None:
    """A 1L and a 3L flake render with the contrast optics predicts at the chip's oxide (±0.01)."""
    material = get_registry().material("graphene")
    for layers in (1, 3):
        stage = make_stage(time_scale=0)
        camera = make_camera(stage, one_flake_layout(layers), vignetting_a=0, vignetting_b=0, colour_tilt=0)
        stage.move_to_um(500, 500, 0)
        image = camera.snap().astype(float)
        flake = image[90:110, 140:160].reshape(-1, 3).mean(axis=0)
        substrate = image[5:40, 5:60].reshape(-1, 3).mean(axis=0)
        measured = flake / substrate - 1
        expected = layer_contrast(material, layers, 90.0)
        np.testing.assert_allclose(measured, expected, atol=0.01)


def test_flake_is_drawn_where_the_stage_says() -> None:
    """Moving the stage by +50 µm in x moves the flake by -50/p pixels in col (the transform's inverse)."""
    stage = make_stage(time_scale=0)
    camera = make_camera(stage, one_flake_layout(2, size_um=40), read_noise_e=0, flicker=0)
    cols = []
    for x in (500.0, 550.0):
        stage.move_to_um(x, 500, 0)
        dark = camera.snap()[..., 1].astype(float)
        mask = dark < np.median(dark) * 0.85
        cols.append(np.nonzero(mask)[1].mean())
    assert cols[0] == pytest.approx(150, abs=0.6)  # flake centre at the tile centre col W/2
    assert cols[0] - cols[1] == pytest.approx(50 / PIXEL_UM, abs=0.6)


def test_frames_are_deterministic_per_position() -> None:
    """The same stage position renders the same frame bit for bit (resume depends on it)."""
    stage = make_stage(time_scale=0)
    camera = make_camera(stage, one_flake_layout())
    stage.move_to_um(480, 510, 0)
    first = camera.snap()
    stage.move_to_um(0, 0, 0)
    stage.move_to_um(480, 510, 0)
    assert np.array_equal(first, camera.snap())


def test_vignetting_darkens_corners_like_real_flat_fields() -> None:
    """Default vignetting gives corner/centre 0.75–0.92, as measured on real flat fields."""
    stage = make_stage(time_scale=0)
    camera = make_camera(stage, one_flake_layout(), read_noise_e=0, flicker=0)
    stage.move_to_um(150, 150, 0)  # bare substrate
    g = camera.snap()[..., 1].astype(float)
    centre = g[90:110, 140:160].mean()
    corners = [g[:10, :10].mean(), g[:10, -10:].mean(), g[-10:, :10].mean(), g[-10:, -10:].mean()]
    assert all(0.75 <= c / centre <= 0.92 for c in corners)


def test_defocus_blurs_more_the_further_from_focus() -> None:
    """The flake's edge gets softer monotonically with |z − focus| on a tilted chip."""
    layout = one_flake_layout(3, tilt=5.0)
    stage = make_stage(time_scale=0)
    camera = make_camera(stage, layout, read_noise_e=0, flicker=0)
    focus = float(layout.focus_z_um_at(500, 500))
    sharpness = []
    for dz in (0, 20, 60):
        stage.move_to_um(500, 500, focus + dz)
        profile = camera.snap()[80:120, :, 1].astype(float).mean(axis=0)  # across the flake's edges
        sharpness.append(float(np.abs(np.diff(profile)).max()))
    assert sharpness[0] > sharpness[1] > sharpness[2]


def test_noise_is_shot_noise_limited() -> None:
    """Relative pixel noise on substrate is 1–2 %, as a 10 ke⁻ sensor at ~half full well gives."""
    stage = make_stage(time_scale=0)
    camera = make_camera(stage, one_flake_layout(), flicker=0)
    stage.move_to_um(150, 150, 0)
    g = camera.snap()[80:120, 130:170, 1].astype(float)
    assert 0.008 < g.std() / g.mean() < 0.02


def test_truth_json_can_be_rescanned_as_a_layout(tmp_path) -> None:
    """A saved layout reloads to an identical chip and renders identical frames."""
    stage = make_stage(time_scale=0)
    camera = make_camera(stage, one_flake_layout(2))
    camera.layout.save_json(tmp_path / "truth.json")
    ctx = DeviceContext(
        transform=PixelTransform(PIXEL_UM), material="graphene", oxide_nm=90.0, seed=3, stage=stage,
        config_dir=tmp_path,
    )
    # A relative layout path resolves against the config's folder (the validation context), as in a scan.
    options = SimulatorCameraOptions.model_validate(
        {"shape": (200, 300), "layout": "truth.json"}, context={"config_dir": tmp_path}
    )
    again = SimulatorCamera(options, ctx)
    again.connect()
    stage.move_to_um(500, 500, 0)
    assert np.array_equal(camera.snap(), again.snap())
