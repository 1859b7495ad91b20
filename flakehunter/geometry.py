"""Geometry: scan regions, the tile plan, and the pixel <-> stage transform.

Image coordinates are (row, col) in pixels; stage coordinates are (x_um, y_um). With the default
transform, pixel (row, col) of a tile of H x W pixels centred at stage (X, Y) lies at
``x = X + (col - W/2)·p``, ``y = Y + (row - H/2)·p``. Flips apply to the image axes first, then the
rotation (counter-clockwise, degrees) turns image axes into stage axes.

Grid plans come from useq-schema (overlap in %, snake order, polygon grids for round wafers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from shapely.geometry import Polygon, box

if TYPE_CHECKING:
    from flakehunter.config import FocusConfig, RegionConfig


@dataclass(frozen=True)
class PixelTransform:
    """Affine map between a tile's pixels and stage µm."""

    pixel_size_um: float
    rotation_deg: float = 0.0
    flip_rows: bool = False
    flip_cols: bool = False

    def _axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Stage displacement (µm) of one pixel step along col and along row."""
        t = math.radians(self.rotation_deg)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        col_step = rot @ np.array([-1.0 if self.flip_cols else 1.0, 0.0]) * self.pixel_size_um
        row_step = rot @ np.array([0.0, -1.0 if self.flip_rows else 1.0]) * self.pixel_size_um
        return col_step, row_step

    def pixel_to_stage(
        self, row: np.ndarray | float, col: np.ndarray | float, centre_um: tuple[float, float],
        shape: tuple[float, float],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage (x_um, y_um) of pixel (row, col) in a tile of ``shape`` = (rows, cols) centred at ``centre_um``."""
        col_step, row_step = self._axes()
        dc = np.asarray(col, float) - shape[1] / 2
        dr = np.asarray(row, float) - shape[0] / 2
        x = centre_um[0] + dc * col_step[0] + dr * row_step[0]
        y = centre_um[1] + dc * col_step[1] + dr * row_step[1]
        return x, y

    def stage_to_pixel(
        self, x_um: np.ndarray | float, y_um: np.ndarray | float, centre_um: tuple[float, float],
        shape: tuple[int, int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of `pixel_to_stage`: (row, col) of stage point(s)."""
        col_step, row_step = self._axes()
        m = np.column_stack([col_step, row_step])  # [dx, dy] = m @ [dc, dr]
        inv = np.linalg.inv(m)
        dx = np.asarray(x_um, float) - centre_um[0]
        dy = np.asarray(y_um, float) - centre_um[1]
        dc = inv[0, 0] * dx + inv[0, 1] * dy
        dr = inv[1, 0] * dx + inv[1, 1] * dy
        return dr + shape[0] / 2, dc + shape[1] / 2

    def angle_to_stage(self, angle_deg: float) -> float:
        """The stage-frame direction (deg, atan2(Δy, Δx)) of an image direction atan2(Δrow, Δcol)."""
        col_step, row_step = self._axes()
        t = math.radians(angle_deg)
        direction = math.cos(t) * col_step + math.sin(t) * row_step
        return math.degrees(math.atan2(direction[1], direction[0]))

    def footprint(self, centre_um: tuple[float, float], shape: tuple[float, float]) -> Polygon:
        """The tile's field of view on the stage, as a polygon in µm; ``shape`` (rows, cols) in pixels may be
        fractional (a field shrunk by an edge margin)."""
        rows = np.array([-0.5, -0.5, shape[0] - 0.5, shape[0] - 0.5])
        cols = np.array([-0.5, shape[1] - 0.5, shape[1] - 0.5, -0.5])
        x, y = self.pixel_to_stage(rows, cols, centre_um, shape)
        return Polygon(np.column_stack([x, y]))

    def grid_fov_um(self, shape: tuple[int, int]) -> tuple[float, float]:
        """Width and height (µm, along stage x and y) of the largest axis-aligned rectangle
        inside the field of view, so that a grid with this step leaves no gaps."""
        width = shape[1] * self.pixel_size_um
        height = shape[0] * self.pixel_size_um
        quarter_turns = round(self.rotation_deg / 90.0)
        if quarter_turns % 2:
            width, height = height, width
        residual = abs(math.radians(self.rotation_deg - 90.0 * quarter_turns))
        w = width * math.cos(residual) - height * math.sin(residual)
        h = height * math.cos(residual) - width * math.sin(residual)
        # Pixel centres sit at integer (row, col), so the field's true centre, pixel
        # ((H - 1)/2, (W - 1)/2), lies half a pixel from the tile centre (pixel (H/2, W/2)).
        # Shrink the rectangle so that, centred on the tile centre, it still lies inside the field.
        col_step, row_step = self._axes()
        offset = np.abs(col_step + row_step) / 2
        w -= 2 * float(offset[0])
        h -= 2 * float(offset[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"camera rotation {self.rotation_deg}° leaves no axis-aligned field of view")
        return w, h


@dataclass(frozen=True)
class TilePlan:
    """One planned tile: acquisition order, grid cell and stage target in µm."""

    index: int
    grid_row: int
    grid_col: int
    x_um: float
    y_um: float
    z_um: float


def region_polygon(region: RegionConfig) -> Polygon:
    """The scan region as a shapely polygon in stage µm."""
    if region.rectangle is not None:
        (x0, y0), (x1, y1) = region.rectangle.corner1_um, region.rectangle.corner2_um
        return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if region.wafer is not None:
        w = region.wafer
        radius = w.diameter_um / 2 - w.edge_exclusion_um
        # 256 vertices keep the chord error below 0.01% of the radius.
        return shapely.Point(w.center_um).buffer(radius, quad_segs=64)
    assert region.polygon is not None
    return Polygon(region.polygon.vertices_um)


_ORDER_MODES = {
    "snake": "row_wise_snake",
    "raster": "row_wise",
    "column_snake": "column_wise_snake",
    "column_raster": "column_wise",
}


def plan_tiles(
    region: RegionConfig,
    fov_um: tuple[float, float],
    overlap_percent: float,
    order: str,
    focus: FocusConfig,
) -> list[TilePlan]:
    """Tile centres covering ``region`` with useq-schema grid plans.

    A rectangle uses `useq.GridFromEdges` (its edges are the outer edges of the images); a wafer
    or polygon uses `useq.GridFromPolygon`, which keeps every tile whose field touches the region.
    """
    import useq

    polygon = region_polygon(region)
    common = {
        "fov_width": fov_um[0],
        "fov_height": fov_um[1],
        "overlap": (overlap_percent, overlap_percent),
        "mode": _ORDER_MODES[order],
    }
    grid: useq.GridFromEdges | useq.GridFromPolygon
    if region.rectangle is not None:
        xmin, ymin, xmax, ymax = polygon.bounds
        grid = useq.GridFromEdges(top=ymax, bottom=ymin, left=xmin, right=xmax, **common)
    else:
        grid = useq.GridFromPolygon(vertices=list(polygon.exterior.coords)[:-1], **common)
    plane = focus_plane(focus)
    tiles = []
    for index, pos in enumerate(grid):
        # Grid plans set every coordinate and index (None would mean "stay on this axis").
        assert pos.x is not None and pos.y is not None and pos.grid_row is not None and pos.grid_col is not None
        z = float(plane[0] + plane[1] * pos.x + plane[2] * pos.y)
        tiles.append(TilePlan(index, int(pos.grid_row), int(pos.grid_col), float(pos.x), float(pos.y), z))
    return tiles


def focus_plane(focus: FocusConfig) -> tuple[float, float, float]:
    """Coefficients (z0, dz/dx, dz/dy) of the focus surface z = z0 + a·x + b·y in µm.

    ``mode: none`` keeps z constant; ``mode: plane`` fits a plane through at least three
    user-measured points (least squares when more are given).
    """
    if focus.mode == "none":
        return (focus.z_um, 0.0, 0.0)
    pts = np.asarray(focus.points_um, float)
    a = np.column_stack([np.ones(len(pts)), pts[:, 0], pts[:, 1]])
    coef, *_ = np.linalg.lstsq(a, pts[:, 2], rcond=None)
    return (float(coef[0]), float(coef[1]), float(coef[2]))


class TileOwnership:
    """Decides which image reports a flake seen in several overlapping images (scan tiles, or files).

    Among the images that see a detection whole (its bounding box inside the image's field, away
    from the edge), the one whose centre is nearest the detection reports it. A small hysteresis
    margin means two images whose centroid estimates straddle the boundary both keep it (the sink's
    distance check then drops the second) rather than both dropping it. A detection no image sees
    whole (larger than the overlap, or cut by the scan edge) stays with the image nearest to it.

    ``fields`` maps an image key (tile index or file path) to its centre and footprint in stage µm.
    """

    # Keys typed Any: mapping keys are invariant, so Mapping[object, ...] would refuse a dict keyed by str or int.
    def __init__(
        self, fields: Mapping[Any, tuple[tuple[float, float], Polygon]], margin_um: float = 10.0
    ) -> None:
        from shapely import STRtree

        self.margin_um = margin_um
        self._keys = list(fields)
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._centres = np.array([fields[k][0] for k in self._keys], float).reshape(-1, 2)
        self._tree = STRtree([fields[k][1] for k in self._keys])

    @classmethod
    def for_plan(
        cls, tiles: list[TilePlan], transform: PixelTransform, shape: tuple[int, int], edge_px: float = 2.0,
        key_of: Callable[[TilePlan], object] = lambda t: t.index,
    ) -> TileOwnership:
        """Ownership over a scan's tile plan, keyed by ``key_of(tile)``; fields shrunk by ``edge_px`` so
        "whole" means clear of the edge."""
        inner = (shape[0] - 2 * edge_px, shape[1] - 2 * edge_px)
        return cls({key_of(t): ((t.x_um, t.y_um), transform.footprint((t.x_um, t.y_um), inner)) for t in tiles})

    def keeps(self, key: object, x_um: float, y_um: float, bbox_um: Polygon) -> bool:
        """Whether image ``key`` should report a detection centred at (x_um, y_um)."""
        if key not in self._index:
            return True
        me = self._index[key]
        whole = [int(i) for i in self._tree.query(bbox_um, predicate="within")]
        point = np.array([x_um, y_um])
        if not whole:
            d = np.hypot(*(self._centres - point).T)
            return bool(d[me] <= d.min() + 1e-9)
        if me not in whole:
            return False
        others = [i for i in whole if i != me]
        if not others:
            return True
        d_me = np.hypot(*(self._centres[me] - point))
        d_other = np.hypot(*(self._centres[others] - point).T)
        j = int(np.argmin(d_other))
        separation = np.hypot(*(self._centres[me] - self._centres[others[j]]))
        if separation < 1e-6:  # the same field imaged twice: the first image reports it
            return me < others[j]
        # (d_me² − d_other²) / (2·separation) is how far the point lies past the bisector.
        past_bisector = (d_me**2 - d_other[j] ** 2) / (2 * separation)
        return bool(past_bisector <= self.margin_um)
