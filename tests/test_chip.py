"""Tests of the synthetic chip geometry (flakehunter.hardware.simulator.chip)."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
import shapely
from pydantic import ValidationError

from flakehunter.errors import ConfigError
from flakehunter.hardware.simulator.chip import (
    DUST_CLEARANCE_UM,
    STRAIGHT_EDGE_MIN_FRACTION,
    ChipLayout,
    ChipSpec,
    SimFlake,
    layer_class,
)
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.materials import Material


def _material(symmetry: float = 30.0) -> Material:
    # Stand-in so these tests do not depend on the material plugins.
    return Material(
        name="testene",
        display_name="Testene",
        layer_thickness_nm=0.335,
        edge_symmetry_deg=symmetry,
        index=lambda wl, n: np.full(wl.shape, 2.6 + 1.3j),
    )


SMALL = ChipSpec(size_um=(2000.0, 2000.0), thin_flakes=30, thick_flakes=25, multilayer_flakes=8,
                 residue_blobs=8, dust=40)
MEDIUM = ChipSpec(size_um=(4000.0, 3000.0), origin_um=(-2000.0, 500.0), thin_flakes=150, thick_flakes=80,
                  multilayer_flakes=25, residue_blobs=25, dust=200)


@pytest.fixture(scope="module")
def chip() -> ChipLayout:
    return generate_chip(MEDIUM, _material(30.0), 285.0, seed=11)


@pytest.fixture(scope="module")
def chip60() -> ChipLayout:
    return generate_chip(MEDIUM, _material(60.0), 90.0, seed=12)


def _parts(geom):
    return list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]


def _long_sides(flake: SimFlake) -> list[float]:
    """Directions (deg mod 180) of the sides at least STRAIGHT_EDGE_MIN_FRACTION of the perimeter."""
    limit = STRAIGHT_EDGE_MIN_FRACTION * flake.polygon.length
    out = []
    for p in _parts(flake.polygon):
        c = np.asarray(p.exterior.coords)
        d = np.diff(c, axis=0)
        keep = np.hypot(d[:, 0], d[:, 1]) >= limit
        out += list(np.degrees(np.arctan2(d[keep, 1], d[keep, 0])) % 180.0)
    return out


# ---- determinism and JSON ------------------------------------------------------------------------


def test_same_seed_same_json_and_different_seed_differs() -> None:
    a = generate_chip(SMALL, _material(), 285.0, seed=3)
    b = generate_chip(SMALL, _material(), 285.0, seed=3)
    c = generate_chip(SMALL, _material(), 285.0, seed=4)
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())
    assert json.dumps(a.to_dict()) != json.dumps(c.to_dict())


def test_json_round_trip(tmp_path, chip: ChipLayout) -> None:
    path = tmp_path / "truth.json"
    chip.save_json(path)
    assert [p.name for p in tmp_path.iterdir()] == ["truth.json"]  # no temp file left behind
    back = ChipLayout.load_json(path)
    assert back.to_dict() == chip.to_dict()
    assert back == chip
    doc = json.loads(path.read_text())
    assert doc["format"] == "flakehunter.chip-layout"
    assert len(doc["flakes"]) == len(chip.flakes)
    # A rescan can start from the file: querying the loaded copy finds the same objects.
    box = (-1000.0, 1000.0, 500.0, 2500.0)
    assert [f.id for f in back.query(*box).flakes] == [f.id for f in chip.query(*box).flakes]


def test_truth_records(chip: ChipLayout) -> None:
    recs = chip.truth_records()
    assert len(recs) == len(chip.flakes)
    for r, f in zip(recs, chip.flakes, strict=True):
        assert set(r) == {"id", "kind", "layers", "layer_class", "theta_deg", "straight_edges", "attached_to",
                          "area_um2", "centroid_um", "polygon_um"}
        assert r["layer_class"] == layer_class(f.layers)
        assert r["area_um2"] == pytest.approx(f.polygon.area, abs=1e-4)
        ring = np.asarray(r["polygon_um"][0])
        assert ring.ndim == 2 and ring.shape[1] == 2 and len(ring) >= 3
    kinds = {r["kind"]: r["layer_class"] for r in recs}
    assert kinds["thick"] == "bulk" and kinds["multilayer"] == "few"
    assert [layer_class(n) for n in (1, 5, 6, 20, 21)] == ["1L", "5L", "few", "few", "bulk"]


def test_load_json_names_the_bad_field(tmp_path, chip: ChipLayout) -> None:
    doc = chip.to_dict()
    doc["flakes"][0]["layers"] = -2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        ChipLayout.load_json(bad)
    assert "bad.json" in str(err.value) and "flakes.0.layers" in str(err.value)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ChipLayout.load_json(bad)
    with pytest.raises(ConfigError, match="typo"):
        ChipLayout.from_dict({**chip.to_dict(), "typo": 1})


def test_minimal_hand_written_layout() -> None:
    layout = ChipLayout.from_dict({
        "material": "graphene", "nominal_oxide_nm": 285, "bounds_um": [0, 0, 100, 100],
        "flakes": [{"id": 1, "kind": "thin", "layers": 1, "polygon_um": [[[10, 10], [30, 10], [20, 25]]]}],
    })
    assert layout.oxide_nm == 285 and layout.focus == (0.0, 0.0, 0.0)
    assert layout.query(0, 0, 15, 15).flakes[0].area_um2 == pytest.approx(150.0)


# ---- geometry rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chip", "chip60"])
def test_everything_inside_bounds(name: str, request) -> None:
    layout: ChipLayout = request.getfixturevalue(name)
    x0, y0, x1, y1 = layout.bounds_um
    m = MEDIUM.edge_margin_um
    for g in [f.polygon for f in layout.flakes] + [r.polygon for r in layout.residue]:
        b = g.bounds
        assert x0 + m <= b[0] and y0 + m <= b[1] and b[2] <= x1 - m and b[3] <= y1 - m
    for d in layout.dust:
        assert x0 + m <= d.x_um - d.radius_um and d.x_um + d.radius_um <= x1 - m
        assert y0 + m <= d.y_um - d.radius_um and d.y_um + d.radius_um <= y1 - m
    assert all(g.is_valid for g in [f.polygon for f in layout.flakes])


def test_spacing_rules(chip: ChipLayout) -> None:
    gap = MEDIUM.min_spacing_um
    thin = [f for f in chip.flakes if f.kind == "thin"]
    bodies = [f for f in chip.flakes if f.kind != "thin"]
    assert len(thin) == MEDIUM.thin_flakes
    for a, b in combinations(thin, 2):
        assert a.polygon.distance(b.polygon) >= gap - 1e-9
    for t in thin:
        for b in bodies:
            if b.id != t.attached_to:
                assert t.polygon.distance(b.polygon) >= gap - 1e-9
        for r in chip.residue:
            assert t.polygon.distance(r.polygon) >= gap - 1e-9
        for d in chip.dust:
            assert t.polygon.distance(shapely.Point(d.x_um, d.y_um)) >= d.radius_um + DUST_CLEARANCE_UM - 1e-9
    for a, b in combinations(bodies, 2):
        assert not a.polygon.intersects(b.polygon)


@pytest.mark.parametrize(("name", "step"), [("chip", 30.0), ("chip60", 60.0)])
def test_straight_edges_are_crystallographic(name: str, step: float, request) -> None:
    layout: ChipLayout = request.getfixturevalue(name)
    two_or_more = 0
    thin = [f for f in layout.flakes if f.kind == "thin"]
    for f in layout.flakes:
        assert 0.0 <= f.theta_deg < step
        sides = _long_sides(f)
        assert bool(sides) == f.straight_edges
        for direction in sides:
            off = (direction - f.theta_deg) % step
            assert min(off, step - off) < 1e-6, (f.id, direction, f.theta_deg)
        if f.kind == "thin" and len(sides) >= 2:
            two_or_more += 1
    assert two_or_more >= 0.6 * len(thin)  # most targets show several straight edges
    assert any(not f.straight_edges for f in thin)  # and a few are fully torn


@pytest.mark.parametrize("name", ["chip", "chip60"])
def test_attached_flakes_share_an_edge_with_their_body(name: str, request) -> None:
    layout: ChipLayout = request.getfixturevalue(name)
    by_id = {f.id: f for f in layout.flakes}
    attached = [f for f in layout.flakes if f.attached_to is not None]
    assert len(attached) >= 0.25 * MEDIUM.thin_flakes
    for f in attached:
        body = by_id[f.attached_to]
        assert f.kind == "thin" and body.kind in ("thick", "multilayer")
        assert f.theta_deg == body.theta_deg
        assert f.polygon.intersection(body.polygon).area < 1e-6 * f.polygon.area
        shared = f.polygon.boundary.intersection(body.polygon.buffer(1e-6)).length
        assert shared >= 1.0


def test_layer_weights_are_honoured() -> None:
    weights = {1: 0.5, 2: 0.3, 3: 0.15, 5: 0.05}
    spec = ChipSpec(size_um=(4000.0, 4000.0), thin_flakes=800, thick_flakes=0, multilayer_flakes=0,
                    residue_blobs=0, dust=0, min_spacing_um=5.0, thin_layer_weights=weights)
    layout = generate_chip(spec, _material(), 285.0, seed=5)
    counts = Counter(f.layers for f in layout.flakes)
    assert sum(counts.values()) == 800 and set(counts) <= set(weights)
    for n, w in weights.items():
        assert counts[n] / 800 == pytest.approx(w, abs=0.05)


def test_query_matches_brute_force(chip: ChipLayout) -> None:
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = chip.bounds_um
    boxes = [(x0, y0, x1, y1), (x0 - 10, y0 - 10, x0 - 1, y0 - 1)]
    for _ in range(40):
        w, h = rng.uniform(10, 1500, 2)
        cx, cy = rng.uniform((x0, y0), (x1, y1))
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    for b in boxes:
        view = chip.query(*b)
        box = shapely.box(*b)
        assert [f.id for f in view.flakes] == [f.id for f in chip.flakes if f.polygon.intersects(box)]
        assert [r.id for r in view.residue] == [r.id for r in chip.residue if r.polygon.intersects(box)]
        assert [d.id for d in view.dust] == [
            d.id for d in chip.dust if box.distance(shapely.Point(d.x_um, d.y_um)) <= d.radius_um]
    full = chip.query(*boxes[0])
    assert (len(full.flakes), len(full.residue), len(full.dust)) == (
        len(chip.flakes), len(chip.residue), len(chip.dust))
    with pytest.raises(ValueError):
        chip.query(10, 0, 0, 10)


def test_oxide_and_focus_follow_their_definitions(chip: ChipLayout) -> None:
    cx, cy = chip.centre_um()
    gx, gy = chip.oxide_gradient_nm_per_mm
    z0, sx, sy = chip.focus
    assert abs(chip.oxide_nm - chip.nominal_oxide_nm) <= MEDIUM.oxide_jitter_nm
    assert math.hypot(gx, gy) == pytest.approx(MEDIUM.oxide_gradient_nm_per_mm)
    assert math.hypot(sx, sy) == pytest.approx(MEDIUM.tilt_um_per_mm)
    assert z0 == MEDIUM.focus_z_um
    assert chip.oxide_nm_at(cx, cy) == pytest.approx(chip.oxide_nm)
    assert chip.oxide_nm_at(cx + 1000.0, cy - 2000.0) == pytest.approx(chip.oxide_nm + gx - 2 * gy)
    assert chip.focus_z_um_at(cx - 500.0, cy + 1000.0) == pytest.approx(z0 - 0.5 * sx + sy)
    xs, ys = np.meshgrid(np.linspace(-2000, 2000, 7), np.linspace(500, 3500, 5))
    ox = chip.oxide_nm_at(xs, ys)
    fz = chip.focus_z_um_at(xs, ys)
    assert ox.shape == fz.shape == xs.shape
    np.testing.assert_allclose(ox, chip.oxide_nm + (gx * (xs - cx) + gy * (ys - cy)) / 1000)
    np.testing.assert_allclose(fz, z0 + (sx * (xs - cx) + sy * (ys - cy)) / 1000)


# ---- crowding, speed and spec validation --------------------------------------------------------


def test_crowded_spec_terminates_with_shortfall() -> None:
    spec = ChipSpec(size_um=(600.0, 600.0), thin_flakes=2000, thick_flakes=100, multilayer_flakes=0,
                    residue_blobs=10, dust=20)
    t = time.process_time()
    layout = generate_chip(spec, _material(), 285.0, seed=1)
    assert time.process_time() - t < 3.0
    assert layout.shortfall["thin"] > 0 and layout.shortfall["thick"] > 0
    counts = Counter(f.kind for f in layout.flakes)
    assert counts["thin"] + layout.shortfall["thin"] == 2000
    assert counts["thick"] + layout.shortfall["thick"] == 100
    assert len(layout.residue) + layout.shortfall["residue"] == 10


def test_default_chip_is_fast_and_complete() -> None:
    t = time.process_time()
    layout = generate_chip(ChipSpec(), _material(), 285.0, seed=0)
    assert time.process_time() - t < 3.0  # CPU time, so a busy CI machine does not fail it
    spec = ChipSpec()
    assert sum(layout.shortfall.values()) == 0
    assert len(layout.flakes) == spec.thin_flakes + spec.thick_flakes + spec.multilayer_flakes
    assert (len(layout.residue), len(layout.dust)) == (spec.residue_blobs, spec.dust)
    x0, y0, x1, y1 = layout.bounds_um
    assert (x1 - x0, y1 - y0) == (10000.0, 10000.0)


@pytest.mark.parametrize(
    "bad",
    [{"colour": "red"}, {"thin_flakes": -1}, {"dust": -5}, {"size_um": (0.0, 100.0)},
     {"thin_layer_weights": {1: 0.0, 2: 0.0}}, {"thin_median_diameter_um": 0.0},
     {"torn_edge_fraction": (0.5, 0.2)}, {"attached_fraction": 1.5}],
)
def test_spec_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValidationError):
        ChipSpec(**bad)


def test_material_symmetry_must_close_a_polygon() -> None:
    with pytest.raises(ValueError, match="edge_symmetry_deg"):
        generate_chip(SMALL, _material(180.0), 285.0, seed=0)
