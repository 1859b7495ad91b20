"""The plan of a scan: validated plugins and options, unconnected devices, the tile plan and its estimate.

`make_plan` is what ``scan --dry-run`` shows and what a real scan starts from: everything that can be
wrong with a config is found here, before anything connects, moves or is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flakehunter.config import RegionConfig, ScanConfig, validate_plugin_options
from flakehunter.devices import AxisRange, Camera, DeviceContext, Position, Stage, TravelLimits
from flakehunter.errors import ConfigError, InputError, short_repr
from flakehunter.focus import FocusStrategy, MapFocus, make_focus_strategy, planning_focus
from flakehunter.geometry import PixelTransform, TilePlan, plan_tiles, region_polygon
from flakehunter.materials import Material
from flakehunter.registry import Registry


@dataclass
class ScanPlan:
    """The validated plan of a scan, before anything moves."""

    config: ScanConfig
    config_path: Path
    tiles: list[TilePlan]
    transform: PixelTransform
    material: Material
    stage: Stage
    camera: Camera
    fov_um: tuple[float, float]
    region_area_mm2: float
    estimated_s: float
    focus: FocusStrategy | None = None  # decides each tile's z as it is acquired (flakehunter.focus)

    def describe(self) -> dict[str, Any]:
        xs = [t.x_um for t in self.tiles]
        ys = [t.y_um for t in self.tiles]
        rows = len({t.grid_row for t in self.tiles})
        cols = len({t.grid_col for t in self.tiles})
        return {
            "tiles": len(self.tiles),
            "grid": f"{rows} rows x {cols} columns",
            "fov_um": [round(v, 1) for v in self.fov_um],
            "pixel_size_um": self.transform.pixel_size_um,
            "camera_shape": list(self.camera.shape),
            "overlap_percent": self.config.overlap_percent,
            "order": self.config.order,
            "region_area_mm2": round(self.region_area_mm2, 3),
            "imaged_area_mm2": round(len(self.tiles) * self.fov_um[0] * self.fov_um[1] / 1e6, 3),
            "x_range_um": [round(min(xs), 1), round(max(xs), 1)],
            "y_range_um": [round(min(ys), 1), round(max(ys), 1)],
            "estimated_s": round(self.estimated_s, 1),
        }


def build_transform(config: ScanConfig) -> PixelTransform:
    o = config.optics
    return PixelTransform(o.pixel_size_um, o.rotation_deg, o.flip_rows, o.flip_cols)


def device_limits(config: ScanConfig) -> TravelLimits:
    lim = config.stage.limits_um
    return TravelLimits(AxisRange(*lim.x_um), AxisRange(*lim.y_um), AxisRange(*lim.z_um))


def make_plan(
    config: ScanConfig, config_path: Path, registry: Registry, *, run_dir: Path | None = None
) -> ScanPlan:
    """Validate plugins and options, build (unconnected) devices and the tile plan.

    Raises `ConfigError` naming the field for anything wrong, including a region whose tiles lie
    outside the stage's soft travel limits. Nothing connects or moves.
    """
    try:
        material = registry.material(config.material.name)
    except InputError as exc:
        raise ConfigError(config_path, "material.name", str(exc)) from None
    _check_flatfield(config, config_path)
    transform = build_transform(config)
    context = DeviceContext(
        transform=transform,
        material=config.material.name,
        oxide_nm=config.material.oxide_nm,
        seed=config.seed,
        run_dir=run_dir,
        config_dir=config_path.parent,
    )
    stage = _build_device("stage", config.stage.plugin, config.stage.options, registry, context, config_path)
    stage.limits = device_limits(config)
    context.stage = stage
    camera = _build_device("camera", config.camera.plugin, config.camera.options, registry, context, config_path)
    fov = _field_of_view(config, camera, transform, config_path)
    _check_region(config, fov, stage.limits, config_path)
    tiles = plan_tiles(config.region, fov, config.overlap_percent, config.order, planning_focus(config.focus))
    if not tiles:
        raise ConfigError(config_path, "region", "the region yields no tiles")
    if len(tiles) > config.budget.max_tiles:  # the estimate above is rough for wafers and polygons
        xmin, ymin, xmax, ymax = _region_bounds(config.region)
        _check_tile_budget(config, len(tiles), fov, (xmax - xmin, ymax - ymin), config_path)
    _check_travel(tiles, stage.limits, config_path)
    for i, section in enumerate(config.detectors):  # validated here so that --dry-run catches them
        try:
            factory = registry.get("detector", section.name).obj
        except InputError as exc:
            raise ConfigError(config_path, f"detectors[{i}].name", str(exc)) from None
        validate_plugin_options(factory, section.options, config_path, f"detectors[{i}].options")
    estimated = 0.0
    here = Position(tiles[0].x_um, tiles[0].y_um, tiles[0].z_um)
    for t in tiles:
        there = Position(t.x_um, t.y_um, t.z_um)
        estimated += stage.estimate_move_s(here, there) + camera.frame_time_s()
        here = there
    area = region_polygon(config.region).area / 1e6
    focus = make_focus_strategy(config.focus, config.region, stage.limits, config_path)
    if isinstance(focus, MapFocus):
        estimated += focus.estimate_s(camera.frame_time_s(), config.focus.coarse_step_um / 200.0, len(tiles))
    if not math.isfinite(estimated):
        raise ConfigError(
            config_path, "stage.options", f"the plan's acquisition time comes out as {estimated} s; check the speeds"
        )
    return ScanPlan(config, config_path, tiles, transform, material, stage, camera, fov, area, estimated, focus)


def _check_flatfield(config: ScanConfig, config_path: Path) -> None:
    """Every flat-field image must exist (relative paths are relative to the config file's folder)."""
    for i, image in enumerate(config.optics.flatfield):
        path = image.expanduser()
        path = path if path.is_absolute() else config_path.parent / path
        try:
            ok = path.is_file()
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(config_path, f"optics.flatfield[{i}]", f"no such image file {path}")


def _camera_field(config: ScanConfig) -> str:
    return "camera.options.shape" if "shape" in config.camera.options else "camera"


def _field_of_view(config: ScanConfig, camera: Camera, transform: PixelTransform, path: Path) -> tuple[float, float]:
    """The grid step's field of view (µm), after checking the camera frame against the budget."""
    field = _camera_field(config)
    try:
        rows, cols = (int(n) for n in camera.shape)
    except (TypeError, ValueError):
        raise ConfigError(path, field, f"expected [rows, cols], got {short_repr(camera.shape)}") from None
    if rows < 1 or cols < 1:
        raise ConfigError(path, field, f"expected [rows, cols] of at least 1 pixel each, got {[rows, cols]}")
    megapixels = rows * cols / 1e6
    budget = config.budget.max_tile_megapixels
    if megapixels > budget:
        raise ConfigError(
            path, field,
            f"{rows} x {cols} px is {megapixels:.4g} megapixels per frame (budget {budget:g}; "
            "raise budget.max_tile_megapixels to allow)",
        )
    try:
        fov = transform.grid_fov_um((rows, cols))
    except ValueError as exc:
        try:  # the same frame unrotated: if that has no field either, the frame is too small
            PixelTransform(transform.pixel_size_um).grid_fov_um((rows, cols))
        except ValueError:
            raise ConfigError(path, field, f"a {rows} x {cols} px frame has no field of view") from None
        raise ConfigError(path, "optics.rotation_deg", str(exc)) from None
    if not all(math.isfinite(v) and v > 0 for v in fov):
        raise ConfigError(
            path, "optics.pixel_size_um", f"{config.optics.pixel_size_um:g} µm/px gives a field of view of {fov} µm"
        )
    return fov


def _region_bounds(region: RegionConfig) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of the region in µm, from the config alone (no polygon built)."""
    if region.rectangle is not None:
        (x0, y0), (x1, y1) = region.rectangle.corner1_um, region.rectangle.corner2_um
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
    if region.wafer is not None:
        (cx, cy), r = region.wafer.center_um, region.wafer.diameter_um / 2 - region.wafer.edge_exclusion_um
        return cx - r, cy - r, cx + r, cy + r
    assert region.polygon is not None
    xs, ys = zip(*region.polygon.vertices_um, strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _check_region(config: ScanConfig, fov: tuple[float, float], limits: TravelLimits, path: Path) -> None:
    """Refuse, before any tile is planned, a region far outside the stage's travel or one that
    needs more tiles than ``budget.max_tiles`` (counted as useq's grid would, over the bounding
    box, times the share of the box the region covers)."""
    xmin, ymin, xmax, ymax = _region_bounds(config.region)
    for axis, lo, hi, width, rng in (("x", xmin, xmax, fov[0], limits.x), ("y", ymin, ymax, fov[1], limits.y)):
        # Tile centres lie within a field of the region's edges, so a region a whole field beyond
        # the limits would be refused by _check_travel anyway; say so before planning its tiles.
        if lo < rng.min_um - width or hi > rng.max_um + width:
            raise ConfigError(
                path, "region",
                f"spans {axis} {lo:.6g}..{hi:.6g} µm, outside the stage's travel "
                f"stage.limits_um.{axis}_um [{rng.min_um:g}, {rng.max_um:g}]",
            )
    keep = 1 - config.overlap_percent / 100
    spans = ((xmax - xmin, fov[0]), (ymax - ymin, fov[1]))
    per_axis = [_tiles_along(span, width, width * keep) for span, width in spans]
    tiles = per_axis[0] * per_axis[1] * _area_fraction(config.region, (xmax - xmin) * (ymax - ymin))
    _check_tile_budget(config, tiles, fov, (xmax - xmin, ymax - ymin), path)


def _tiles_along(span: float, width: float, step: float) -> float:
    """Tiles a grid needs along one axis (useq: ``ceil((span - width) / step) + 1``); inf rather than overflow."""
    if span <= width:
        return 1.0
    steps = (span - width) / step
    return float(math.ceil(steps) + 1) if steps < 1e15 else steps + 1.0


def _area_fraction(region: RegionConfig, box_um2: float) -> float:
    """The share of its bounding box the region covers (tiles outside it are not planned)."""
    if region.rectangle is not None or box_um2 <= 0:
        return 1.0
    if region.wafer is not None:
        return math.pi / 4
    return min(1.0, float(region_polygon(region).area) / box_um2)


def _check_tile_budget(
    config: ScanConfig, tiles: float, fov: tuple[float, float], span: tuple[float, float], path: Path
) -> None:
    budget = config.budget.max_tiles
    if tiles <= budget:
        return
    region = f"{span[0]:.4g} x {span[1]:.4g} µm region"
    tiling = f"~{tiles:.3g} tiles of {fov[0]:.4g} x {fov[1]:.4g} µm"
    # Blame the region when it is larger than any wafer (1 m²), else the optics' small field.
    if span[0] * span[1] > 1e12:
        field, what = "region", f"a {region} needs {tiling}"
    else:
        field, what = "optics.pixel_size_um", f"{config.optics.pixel_size_um:g} µm/px gives {tiling} over the {region}"
    raise ConfigError(path, field, f"{what} (budget {budget}; raise budget.max_tiles to allow)")


def _build_device(
    kind: str, plugin: str, options: dict[str, Any], registry: Registry, context: DeviceContext, path: Path
) -> Any:
    try:
        factory = registry.get(kind, plugin).obj
    except InputError as exc:
        raise ConfigError(path, f"{kind}.plugin", str(exc)) from None
    validated = validate_plugin_options(factory, options, path, f"{kind}.options")
    try:
        return factory(validated, context)
    except InputError as exc:
        raise ConfigError(path, f"{kind}.options", str(exc)) from None


def _check_travel(tiles: list[TilePlan], limits: TravelLimits, path: Path) -> None:
    for axis in ("x", "y", "z"):
        values = [getattr(t, f"{axis}_um") for t in tiles]
        rng: AxisRange = getattr(limits, axis)
        lo, hi = min(values), max(values)
        if lo < rng.min_um or hi > rng.max_um:
            field_name = "focus" if axis == "z" else "region"
            raise ConfigError(
                path,
                field_name,
                f"tile centres span {axis} {lo:.1f}..{hi:.1f} µm, outside the stage's travel "
                f"stage.limits_um.{axis}_um [{rng.min_um:g}, {rng.max_um:g}]",
            )
