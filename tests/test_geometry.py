"""Tests of flakehunter.geometry: the pixel <-> stage transform, tile plans and tile ownership."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
from shapely.geometry import Point, box
from shapely.ops import unary_union

from flakehunter.config import FocusConfig, RegionConfig
from flakehunter.geometry import PixelTransform, TileOwnership, TilePlan, focus_plane, plan_tiles, region_polygon

ROTATIONS = [0.0, 0.7, 90.0, -179.3]
FLIPS = list(itertools.product([False, True], repeat=2))
SHAPE = (200, 300)  # rows, cols

REGIONS = {
    "rectangle": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [1000, 800]}},
    "wafer": {"wafer": {"center_um": [500, 500], "diameter_um": 1200, "edge_exclusion_um": 100}},
    "L-shape": {"polygon": {"vertices_um": [[0, 0], [1000, 0], [1000, 400], [400, 400], [400, 1000], [0, 1000]]}},
}


def region(name: str) -> RegionConfig:
    return RegionConfig.model_validate(REGIONS[name])


def plan(
    region_name: str, transform: PixelTransform, overlap: float = 10.0, order: str = "snake",
    shape: tuple[int, int] = SHAPE,
) -> list[TilePlan]:
    return plan_tiles(region(region_name), transform.grid_fov_um(shape), overlap, order, FocusConfig())


# -- PixelTransform ---------------------------------------------------------------------------------


def test_default_transform_is_the_documented_formula_exactly() -> None:
    """Default transform: pixel (row, col) of an HxW tile at (X, Y) is x = X + (col - W/2)·p, y = Y + (row - H/2)·p."""
    p, (h, w), (cx, cy) = 1.15, (1640, 2432), (5000.25, -1234.5)
    rows, cols = np.meshgrid(np.array([0, 1, 17, h / 2, h - 1, 1000.5]), np.array([0, 3, w / 2, w - 1, 7.25]))
    x, y = PixelTransform(p).pixel_to_stage(rows, cols, (cx, cy), (h, w))
    np.testing.assert_array_equal(x, cx + (cols - w / 2) * p)
    np.testing.assert_array_equal(y, cy + (rows - h / 2) * p)
    # And by hand: the first pixel and the centre pixel of a 200 x 300 tile at (1000, 2000), 2 µm/px.
    assert PixelTransform(2.0).pixel_to_stage(0, 0, (1000.0, 2000.0), (200, 300)) == (700.0, 1800.0)
    assert PixelTransform(2.0).pixel_to_stage(100, 150, (1000.0, 2000.0), (200, 300)) == (1000.0, 2000.0)


@pytest.mark.parametrize(
    ("transform", "d_col", "d_row"),
    [
        (PixelTransform(1.0), (1, 0), (0, 1)),
        (PixelTransform(1.0, rotation_deg=90), (0, 1), (-1, 0)),
        (PixelTransform(1.0, flip_cols=True), (-1, 0), (0, 1)),
        (PixelTransform(1.0, flip_rows=True), (1, 0), (0, -1)),
    ],
    ids=["default", "rotated 90 ccw", "flip cols", "flip rows"],
)
def test_transform_axis_directions(transform: PixelTransform, d_col: tuple[int, int], d_row: tuple[int, int]) -> None:
    """A step along col / row moves the stage point the documented way (rotation ccw, flips before it)."""
    x0, y0 = transform.pixel_to_stage(50, 50, (0.0, 0.0), (100, 100))
    x1, y1 = transform.pixel_to_stage(50, 51, (0.0, 0.0), (100, 100))
    x2, y2 = transform.pixel_to_stage(51, 50, (0.0, 0.0), (100, 100))
    np.testing.assert_allclose([x1 - x0, y1 - y0], d_col, atol=1e-12)
    np.testing.assert_allclose([x2 - x0, y2 - y0], d_row, atol=1e-12)


@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize(("flip_rows", "flip_cols"), FLIPS)
def test_pixel_stage_round_trip(rotation: float, flip_rows: bool, flip_cols: bool) -> None:
    """stage_to_pixel inverts pixel_to_stage (and vice versa) for any rotation and flips."""
    t = PixelTransform(1.15, rotation, flip_rows, flip_cols)
    rng = np.random.default_rng(42)
    centre, shape = (1234.5, -678.9), (1640, 2432)
    rows, cols = rng.uniform(-10, shape[0] + 10, 500), rng.uniform(-10, shape[1] + 10, 500)
    x, y = t.pixel_to_stage(rows, cols, centre, shape)
    r2, c2 = t.stage_to_pixel(x, y, centre, shape)
    np.testing.assert_allclose(r2, rows, atol=1e-8)
    np.testing.assert_allclose(c2, cols, atol=1e-8)
    xs, ys = rng.uniform(-2000, 4000, 500), rng.uniform(-3000, 2000, 500)
    x2, y2 = t.pixel_to_stage(*t.stage_to_pixel(xs, ys, centre, shape), centre, shape)
    np.testing.assert_allclose(x2, xs, atol=1e-8)
    np.testing.assert_allclose(y2, ys, atol=1e-8)


@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize(("flip_rows", "flip_cols"), FLIPS)
def test_footprint_area_and_position(rotation: float, flip_rows: bool, flip_cols: bool) -> None:
    """The footprint has area H·W·p² and spans the outer pixels' centres ± half a pixel."""
    t = PixelTransform(1.15, rotation, flip_rows, flip_cols)
    h, w = 1640, 2432
    fp = t.footprint((500.0, -250.0), (h, w))
    assert fp.is_valid
    assert fp.area == pytest.approx(h * w * 1.15**2, rel=1e-12)
    cx, cy = t.pixel_to_stage((h - 1) / 2, (w - 1) / 2, (500.0, -250.0), (h, w))
    assert (fp.centroid.x, fp.centroid.y) == pytest.approx((cx, cy), abs=1e-6)
    for row, col in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]:
        corner_pixel = Point(t.pixel_to_stage(row, col, (500.0, -250.0), (h, w)))
        assert fp.contains(corner_pixel)
        assert fp.exterior.distance(corner_pixel) == pytest.approx(0.5 * 1.15)


# -- grid field of view and coverage ----------------------------------------------------------------


def test_grid_fov_unrotated_is_the_field_within_a_pixel() -> None:
    """Without rotation the grid step field is the camera field (W·p x H·p) less at most one pixel."""
    w, h = PixelTransform(1.15).grid_fov_um((1640, 2432))
    assert 2432 * 1.15 - 1.15 - 1e-9 <= w <= 2432 * 1.15
    assert 1640 * 1.15 - 1.15 - 1e-9 <= h <= 1640 * 1.15


@pytest.mark.parametrize("rotation", [0.7, -0.7, 2.0, 90.5, -179.3, 269.0])
def test_grid_fov_shrinks_for_small_rotations(rotation: float) -> None:
    """A slightly rotated camera gets a smaller axis-aligned grid field than an unrotated one."""
    shape = (1640, 2432)
    w0, h0 = PixelTransform(1.15).grid_fov_um(shape)
    w, h = PixelTransform(1.15, rotation).grid_fov_um(shape)
    if round(rotation / 90) % 2:  # a quarter turn swaps the field's width and height
        w0, h0 = h0, w0
    assert 0 < w < w0 and 0 < h < h0


def test_grid_fov_refuses_a_rotation_that_leaves_no_field() -> None:
    """45 degrees leaves no axis-aligned field for a 3:2 sensor; that is an error, not a zero grid step."""
    with pytest.raises(ValueError, match="rotation"):
        PixelTransform(1.0, 45.0).grid_fov_um((200, 300))


@pytest.mark.parametrize("rotation", [*ROTATIONS, -3.0])
@pytest.mark.parametrize(("flip_rows", "flip_cols"), [(False, False), (True, False), (False, True)])
def test_grid_fov_rectangle_lies_inside_the_field(rotation: float, flip_rows: bool, flip_cols: bool) -> None:
    """The grid field, centred on the tile's stage position, lies inside the tile's real footprint."""
    t = PixelTransform(1.15, rotation, flip_rows, flip_cols)
    w, h = t.grid_fov_um(SHAPE)
    fp = t.footprint((100.0, 200.0), SHAPE)
    assert fp.buffer(1e-9).contains(box(100 - w / 2, 200 - h / 2, 100 + w / 2, 200 + h / 2))


@pytest.mark.parametrize("region_name", list(REGIONS))
@pytest.mark.parametrize("rotation", [0.0, 0.7, -3.0, 90.0, -179.3])
@pytest.mark.parametrize("flip_rows", [False, True])
def test_tiles_cover_the_region_without_gaps(region_name: str, rotation: float, flip_rows: bool) -> None:
    """At 10% overlap the union of the planned tiles' footprints covers the whole region polygon."""
    t = PixelTransform(1.0, rotation, flip_rows=flip_rows)
    tiles = plan(region_name, t)
    polygon = region_polygon(region(region_name))
    footprints = [t.footprint((tile.x_um, tile.y_um), SHAPE) for tile in tiles]
    uncovered = polygon.difference(unary_union(footprints))
    assert uncovered.area < 1e-6, f"{uncovered.area:.3f} µm² of the region is never imaged"
    assert all(f.intersects(polygon) for f in footprints), "a planned tile sees nothing of the region"


def test_wafer_edge_exclusion_shrinks_the_region() -> None:
    """A wafer's scan region is a disc of radius diameter/2 - edge exclusion, and its plan is smaller."""
    polygon = region_polygon(region("wafer"))
    assert polygon.area == pytest.approx(math.pi * 500**2, rel=1e-3)
    assert (polygon.centroid.x, polygon.centroid.y) == pytest.approx((500, 500))
    full = RegionConfig.model_validate({"wafer": {"center_um": [500, 500], "diameter_um": 1200}})
    fov = PixelTransform(1.0).grid_fov_um(SHAPE)
    assert len(plan("wafer", PixelTransform(1.0))) < len(plan_tiles(full, fov, 10, "snake", FocusConfig()))


# -- acquisition order and overlap ------------------------------------------------------------------


def rows_in_order(tiles: list[TilePlan]) -> list[list[TilePlan]]:
    """Tiles grouped by grid row, in acquisition order; each row must be visited in one go."""
    assert [t.index for t in tiles] == list(range(len(tiles)))
    rows: list[list[TilePlan]] = []
    for t in tiles:
        if not rows or rows[-1][0].grid_row != t.grid_row:
            rows.append([])
        rows[-1].append(t)
    assert len({r[0].grid_row for r in rows}) == len(rows), "a grid row was visited twice"
    return rows


def test_snake_order_alternates_rows_and_steps_to_neighbours() -> None:
    """Snake: consecutive tiles in a row are grid neighbours one step apart; rows alternate direction."""
    t = PixelTransform(1.0)
    w, h = t.grid_fov_um(SHAPE)
    rows = rows_in_order(plan("rectangle", t, order="snake"))
    assert len(rows) >= 3 and all(len(r) >= 3 for r in rows)
    directions = []
    for row in rows:
        steps = {b.grid_col - a.grid_col for a, b in itertools.pairwise(row)}
        assert steps in ({1}, {-1})
        directions.append(steps.pop())
        for a, b in itertools.pairwise(row):
            assert abs(b.x_um - a.x_um) == pytest.approx(w * 0.9) and b.y_um == pytest.approx(a.y_um)
    assert all(d1 == -d2 for d1, d2 in itertools.pairwise(directions))
    for previous, row in itertools.pairwise(rows):  # a row starts above where the last one ended
        assert row[0].grid_col == previous[-1].grid_col
        assert abs(row[0].y_um - previous[-1].y_um) == pytest.approx(h * 0.9)


def test_raster_order_does_not_alternate() -> None:
    """Raster: every row runs the same direction and starts in the same column."""
    rows = rows_in_order(plan("rectangle", PixelTransform(1.0), order="raster"))
    assert len(rows) >= 3
    for row in rows:
        assert [b.grid_col - a.grid_col for a, b in itertools.pairwise(row)] == [1] * (len(row) - 1)
    assert len({row[0].x_um for row in rows}) == 1


@pytest.mark.parametrize("overlap", [10.0, 25.0])
@pytest.mark.parametrize(("flip_rows", "flip_cols"), [(False, False), (True, True)])
def test_neighbouring_tiles_overlap_by_the_requested_percent(overlap: float, flip_rows: bool, flip_cols: bool) -> None:
    """Side-by-side and stacked neighbours share the requested percentage of their field (±1%)."""
    shape = (400, 600)
    t = PixelTransform(1.15, 0.0, flip_rows, flip_cols)
    tiles = plan_tiles(
        RegionConfig.model_validate({"rectangle": {"corner1_um": [0, 0], "corner2_um": [3000, 2000]}}),
        t.grid_fov_um(shape), overlap, "snake", FocusConfig(),
    )
    cells = {(tile.grid_row, tile.grid_col): t.footprint((tile.x_um, tile.y_um), shape) for tile in tiles}
    pairs = defaultdict(list)
    for (r, c), fp in cells.items():
        for kind, neighbour in (("side", (r, c + 1)), ("stacked", (r + 1, c))):
            if neighbour in cells:
                pairs[kind].append(100 * fp.intersection(cells[neighbour]).area / fp.area)
    assert pairs["side"] and pairs["stacked"]
    for shares in pairs.values():
        assert shares == pytest.approx([overlap] * len(shares), abs=1.0)


# -- focus ------------------------------------------------------------------------------------------


def test_focus_plane_through_three_points_is_exact() -> None:
    """Three points define the focus plane exactly, and every tile's z lies on it."""
    z0, a, b = 12.5, 0.004, -0.0025
    points = [(x, y, z0 + a * x + b * y) for x, y in [(0, 0), (1000, 0), (0, 800)]]
    focus = FocusConfig(mode="plane", points_um=points)
    assert focus_plane(focus) == pytest.approx((z0, a, b), abs=1e-12)
    t = PixelTransform(1.0)
    for tile in plan_tiles(region("rectangle"), t.grid_fov_um(SHAPE), 10, "snake", focus):
        assert tile.z_um == pytest.approx(z0 + a * tile.x_um + b * tile.y_um, abs=1e-9)


def test_focus_plane_through_four_points_is_least_squares() -> None:
    """With four points the plane is the least-squares fit, not an interpolation of any three."""
    z0, a, b, e = -3.0, 0.002, 0.001, 0.5
    # Residuals +e, -e, -e, +e at the corners of a square are orthogonal to 1, x and y, so the
    # least-squares plane is exactly (z0, a, b) though no point lies on it.
    corners = [(0, 0, e), (1000, 0, -e), (0, 1000, -e), (1000, 1000, e)]
    points = [(x, y, z0 + a * x + b * y + r) for x, y, r in corners]
    fitted = focus_plane(FocusConfig(mode="plane", points_um=points))
    assert fitted == pytest.approx((z0, a, b), abs=1e-12)
    residuals = [z - (fitted[0] + fitted[1] * x + fitted[2] * y) for x, y, z in points]
    assert residuals == pytest.approx([e, -e, -e, e])


def test_focus_none_keeps_z_constant() -> None:
    """mode none puts every tile at z_um."""
    focus = FocusConfig(mode="none", z_um=42.0)
    assert focus_plane(focus) == (42.0, 0.0, 0.0)
    tiles = plan_tiles(region("rectangle"), PixelTransform(1.0).grid_fov_um(SHAPE), 10, "snake", focus)
    assert {tile.z_um for tile in tiles} == {42.0}


# -- tile ownership ---------------------------------------------------------------------------------

# Two 400 x 600 px tiles at 1 µm/px side by side with 10% overlap, centres 540 µm apart. Their inner
# fields (2 px in from the edge) span x -298.5..297.5 and 241.5..837.5; the bisector is x = 270 and
# the hysteresis margin 10 µm.
OWN_SHAPE = (400, 600)
LEFT, RIGHT = TilePlan(0, 0, 0, 0.0, 0.0, 0.0), TilePlan(1, 0, 1, 540.0, 0.0, 0.0)


@pytest.fixture
def ownership() -> TileOwnership:
    return TileOwnership.for_plan([LEFT, RIGHT], PixelTransform(1.0), OWN_SHAPE)


def keepers(
    own: TileOwnership, x: float, half: float = 3.0, x0: float | None = None, x1: float | None = None
) -> list[bool]:
    """[left keeps, right keeps] for a flake centred at (x, 0) with bbox x0..x1 (default x ± half)."""
    bbox = box(x - half if x0 is None else x0, -half, x + half if x1 is None else x1, half)
    return [own.keeps(tile.index, x, 0.0, bbox) for tile in (LEFT, RIGHT)]


@pytest.mark.parametrize(("x", "owner"), [(250.0, "left"), (290.0, "right"), (246.0, "left"), (283.0, "right")])
def test_flake_in_the_overlap_is_kept_by_exactly_one_tile(ownership: TileOwnership, x: float, owner: str) -> None:
    """A flake wholly inside both tiles, clear of the hysteresis margin, is reported by the nearer tile only."""
    assert keepers(ownership, x) == [owner == "left", owner == "right"]


@pytest.mark.parametrize("x", [266.0, 274.0])
def test_flake_near_the_bisector_is_kept_by_both(ownership: TileOwnership, x: float) -> None:
    """Within the margin of the bisector, on either side, both tiles keep the flake (the sink de-duplicates)."""
    assert keepers(ownership, x) == [True, True]


def test_flake_in_the_overlap_is_never_dropped_by_both(ownership: TileOwnership) -> None:
    """Across the whole overlap, a flake is kept at least once, and exactly once outside the margin."""
    for x in np.arange(245.0, 294.5, 0.5):
        kept = keepers(ownership, float(x))
        assert any(kept), x
        if abs(x - 270.0) > 10.0 + 1e-9:
            assert sum(kept) == 1, x


def test_flake_cut_by_a_tile_border_is_kept_by_the_neighbour_only(ownership: TileOwnership) -> None:
    """A flake that runs off the left tile's edge but lies whole in the right tile is the right tile's."""
    # The left tile sees only the part up to its edge (x = 299.5), so its bbox and centre differ.
    assert keepers(ownership, 297.5, x0=295.5, x1=299.5)[0] is False
    assert keepers(ownership, 301.0, x0=295.5, x1=306.5)[1] is True
    # Even a flake whose centre lies nearer the left tile belongs to the only tile that sees it whole.
    assert keepers(ownership, 262.0, x0=250.0, x1=300.0) == [False, True]


def test_flake_at_the_scan_edge_is_kept(ownership: TileOwnership) -> None:
    """A flake cut by the scan's outer edge (no neighbour sees it whole) stays with its tile."""
    assert keepers(ownership, -298.0, x0=-300.5, x1=-295.0) == [True, False]
    assert keepers(ownership, 837.0, x0=834.0, x1=839.5) == [False, True]
    assert keepers(ownership, 0.0) == [True, False]  # whole in one tile only, far from the overlap
