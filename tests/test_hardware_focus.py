"""Autofocus: metrics, the z search, the focus map, and focus during a scan on the simulator's tilted chip.

Depth of field used: λ/NA² with λ = 0.55 µm and the simulator's NA 0.15, 24.4 µm, so a tile is in
focus when |z − focus(x, y)| ≤ 12.2 µm. The tests ask for much better than that where the search
allows it, and show that the chip used is tilted enough that focus matters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from flakehunter.acquisition.plan import make_plan
from flakehunter.config import parse_config
from flakehunter.errors import ConfigError, HardwareError
from flakehunter.focus import METRICS, FocusMap, SearchSettings, autofocus
from flakehunter.hardware.simulator.chip import ChipLayout
from flakehunter.registry import get_registry
from flakehunter.scan import Scan
from flakehunter.tiles import read_geometry
from tests.conftest import SMALL_SCAN, deep_update

DOF_UM = 0.55 / 0.15**2
TILTED = deep_update(SMALL_SCAN, {
    "camera": {"options": {"shape": [200, 300], "chip": {"tilt_um_per_mm": 25, "focus_z_um": 10}}},
    "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [1500, 1500]}},
    "focus": {"mode": "map", "z_um": 0, "range_um": 120, "coarse_step_um": 10, "fine_step_um": 2,
              "backlash_um": 10, "grid": [3, 3]},
})


def devices(config: dict[str, Any], tmp_path: Path) -> Any:
    plan = make_plan(parse_config(config), tmp_path / "scan.yaml", get_registry())
    plan.stage.connect()
    plan.camera.connect()
    return plan


def test_metrics_peak_at_best_focus(tmp_path: Path) -> None:
    """Tenengrad and the Laplacian energy peak within 2 µm of the true focus; all three metrics score
    the focused frame above frames 20 µm off either way."""
    plan = devices(TILTED, tmp_path)
    x, y = 750.0, 750.0
    focus = float(plan.camera.layout.focus_z_um_at(x, y))
    zs = np.arange(-30, 31, 2.0) + focus
    frames = {}
    for z in zs:
        plan.stage.move_to_um(x, y, z)
        frames[float(z)] = plan.camera.snap()
    for name, metric in METRICS.items():
        scores = np.array([metric(frames[float(z)]) for z in zs])
        best = float(zs[int(np.argmax(scores))])
        if name != "normalized_variance":  # dominated by vignetting at 5x; a weak but valid metric
            assert abs(best - focus) <= 2.0, (name, best, focus)
        at = scores[list(zs).index(focus)]
        assert at > metric(frames[float(focus - 20)]) and at > metric(frames[float(focus + 20)]), name


def test_focus_map_fits_and_rejects_implausible_points() -> None:
    """A plane through tilted points is recovered exactly; a point 60 µm off its neighbours is rejected;
    with six or more points the quadratic surface fits curvature."""
    pts = [(x, y, 3.0 + 0.01 * x - 0.02 * y) for x in (0, 1000, 2000) for y in (0, 1000, 2000)]
    plane = FocusMap("plane").fit(pts)
    assert plane.z_at(500, 1500) == pytest.approx(3.0 + 5 - 30)
    bad = FocusMap("plane", max_slope_um_per_mm=20).fit([*pts[:-1], (2000, 2000, 3.0 + 20 - 40 + 60)])
    assert bad.rejected == [(2000.0, 2000.0, 43.0)]
    assert bad.z_at(2000, 2000) == pytest.approx(3.0 + 20 - 40)
    assert bad.plausible(2000, 2000, -16.0) and not bad.plausible(2000, 2000, 43.0)
    bowl = [(x, y, 1e-5 * ((x - 1000) ** 2 + (y - 1000) ** 2)) for x, y, _ in pts]
    quad = FocusMap("quadratic").fit(bowl)
    assert quad.quadratic and quad.z_at(1000, 1000) == pytest.approx(0.0, abs=1e-9)
    assert quad.z_at(0, 1000) == pytest.approx(10.0)


def test_search_approaches_every_measurement_from_below(tmp_path: Path) -> None:
    """Backlash: every frame the search measures, and the final position, is reached moving z up."""
    plan = devices(TILTED, tmp_path)
    stage, camera = plan.stage, plan.camera
    approaches: list[tuple[float, float]] = []
    snap = camera.snap

    def recording_snap() -> np.ndarray:
        moves = stage.moves
        approaches.append((moves[-2].z_um, moves[-1].z_um))
        return snap()

    camera.snap = recording_snap  # instrumentation only: the real simulator frame is returned
    stage.move_to_um(700, 700, 40.0)  # start above focus, so the search must come down first
    result = autofocus(stage, camera, 700, 700, 0.0, SearchSettings(range_um=120, backlash_um=10))
    assert result.valid
    assert all(before < at for before, at in approaches[1:]), approaches
    assert stage.moves[-2].z_um < stage.moves[-1].z_um == pytest.approx(result.z_um)
    assert abs(result.z_um - float(camera.layout.focus_z_um_at(700, 700))) < 2.0


def test_focus_map_scan_keeps_every_tile_within_the_depth_of_field(tmp_path: Path) -> None:
    """Acceptance: on a chip tilted 25 µm/mm, a 'map' scan (autofocus at 3 x 3 points, plane fit) takes
    every tile within ±DOF/2 of focus, in fact within 2 µm; the planned z alone would leave tiles out of
    focus by more than the depth of field."""
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(TILTED), encoding="utf-8")
    summary = Scan(path, tmp_path / "run").run()
    assert summary["status"] == "completed"
    layout = ChipLayout.load_json(tmp_path / "run" / "truth.json")
    errors, without, taken = [], [], []
    for tile in sorted((tmp_path / "run" / "tiles").glob("*.tif")):
        _, meta = read_geometry(tile)
        taken.append(meta.z_um)
        focus = float(layout.focus_z_um_at(meta.x_um, meta.y_um))
        errors.append(meta.z_um - focus)
        without.append(TILTED["focus"]["z_um"] - focus)
    assert len(errors) == summary["items_total"] >= 25
    assert max(abs(e) for e in errors) <= DOF_UM / 2
    assert max(abs(e) for e in errors) <= 2.0
    assert max(abs(e) for e in without) > DOF_UM  # focus matters on this chip
    # The manifest keeps the fitted map's points and the z each tile was really taken at.
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["focus"]["mode"] == "map" and len(manifest["inputs"]["focus"]["points_um"]) >= 3
    assert sorted(t["stage_um"][2] for t in manifest["items"]) == pytest.approx(sorted(taken), abs=1e-3)


def test_autofocus_mode_refocuses_on_tiles(tmp_path: Path) -> None:
    """'autofocus' mode refocuses every N tiles on the tile itself, seeded by the map; every tile stays
    within the depth of field."""
    config = deep_update(TILTED, {
        "region": {"rectangle": {"corner1_um": [300, 300], "corner2_um": [1000, 800]}},
        "focus": {"mode": "autofocus", "every_n_tiles": 3, "grid": [2, 2]},
    })
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    runner = Scan(path, tmp_path / "run")
    summary = runner.run()
    assert summary["status"] == "completed"
    layout = ChipLayout.load_json(tmp_path / "run" / "truth.json")
    for tile in (tmp_path / "run" / "tiles").glob("*.tif"):
        _, meta = read_geometry(tile)
        assert abs(meta.z_um - float(layout.focus_z_um_at(meta.x_um, meta.y_um))) <= DOF_UM / 2


def test_featureless_field_is_not_trusted(tmp_path: Path) -> None:
    """On bare substrate the search reports 'no structure to focus on' and leaves the stage at the seed;
    a map with no usable point is a HardwareError, not a guess."""
    blank = deep_update(TILTED, {"camera": {"options": {"chip": {
        "thin_flakes": 0, "thick_flakes": 0, "multilayer_flakes": 0, "residue_blobs": 0, "dust": 0}}}})
    plan = devices(blank, tmp_path)
    result = autofocus(plan.stage, plan.camera, 700, 700, 0.0, SearchSettings(range_um=60))
    assert not result.valid and "no structure" in result.reason
    assert plan.stage.position_um().z_um == 0.0
    with pytest.raises(HardwareError, match="autofocus failed at all 9 points"):
        plan.focus.z_for(plan.tiles[0], plan.stage, plan.camera)


def test_focus_config_errors_name_the_field(tmp_path: Path) -> None:
    """A search that leaves the z limits, or steps in the wrong order, is a ConfigError naming the field."""
    wide = deep_update(TILTED, {"focus": {"range_um": 500}})
    with pytest.raises(ConfigError, match=r"focus\.range_um: the autofocus search .* leaves the stage's z limits"):
        make_plan(parse_config(wide), tmp_path / "scan.yaml", get_registry())
    with pytest.raises(ConfigError, match=r"focus: fine_step_um \(12\) must be smaller than coarse_step_um"):
        parse_config(deep_update(TILTED, {"focus": {"fine_step_um": 12}}), tmp_path / "scan.yaml")
    none = parse_config(deep_update(SMALL_SCAN, {"focus": {"mode": "none", "z_um": 3}}))
    assert make_plan(none, tmp_path / "x.yaml", get_registry()).tiles[0].z_um == 3
