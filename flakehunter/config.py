"""The scan configuration (``wafer.yaml``): pydantic models and a loader with one-line errors.

Unknown keys are rejected everywhere, so a typo never silently falls back to a default. Every
error names the file and the dotted field, e.g.
``configs/chip.yaml: stage.limits_um.x_um: expected a list of 2 numbers [min, max], got 'wide'``.
Plugin options are validated later, against the plugin's own ``Options`` model, by
`validate_plugin_options`, with the same kind of message.
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flakehunter.errors import ConfigError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=StrictModel)


class AxisLimits(StrictModel):
    x_um: tuple[float, float]
    y_um: tuple[float, float]
    z_um: tuple[float, float] = (-1000.0, 1000.0)

    @field_validator("x_um", "y_um", "z_um")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] >= v[1]:
            raise ValueError(f"expected [min, max] with min < max, got {list(v)}")
        return v


class DeviceSection(StrictModel):
    plugin: str
    options: dict[str, Any] = Field(default_factory=dict)


class StageSection(DeviceSection):
    limits_um: AxisLimits


class OpticsConfig(StrictModel):
    pixel_size_um: PositiveFloat
    rotation_deg: float = 0.0
    flip_rows: bool = False
    flip_cols: bool = False
    flatfield: list[Path] = Field(
        default_factory=list, description="Images of bare substrate (relative to the config); averaged"
    )

    @field_validator("flatfield", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | Path) else v


class RectangleRegion(StrictModel):
    corner1_um: tuple[float, float]
    corner2_um: tuple[float, float]

    @model_validator(mode="after")
    def _not_degenerate(self) -> RectangleRegion:
        if self.corner1_um[0] == self.corner2_um[0] or self.corner1_um[1] == self.corner2_um[1]:
            raise ValueError("corners must differ in both x and y")
        return self


class WaferRegion(StrictModel):
    center_um: tuple[float, float]
    diameter_um: PositiveFloat
    edge_exclusion_um: NonNegativeFloat = 0.0

    @field_validator("edge_exclusion_um")
    @classmethod
    def _exclusion(cls, v: float, info: ValidationInfo) -> float:
        diameter = info.data.get("diameter_um")
        if diameter is not None and v * 2 >= diameter:
            raise ValueError(
                f"expected less than half of diameter_um ({diameter / 2:g} µm), got {v:g}: nothing of the wafer is left"
            )
        return v


class PolygonRegion(StrictModel):
    vertices_um: list[tuple[float, float]] = Field(min_length=3)

    @field_validator("vertices_um")
    @classmethod
    def _valid(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        from shapely.geometry import Polygon

        poly = Polygon(v)
        if not poly.is_valid or poly.area <= 0:
            raise ValueError("vertices must form a simple polygon with non-zero area")
        return v


class RegionConfig(StrictModel):
    """Exactly one of: a rectangular chip, a round wafer, or a polygon."""

    rectangle: RectangleRegion | None = None
    wafer: WaferRegion | None = None
    polygon: PolygonRegion | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RegionConfig:
        given = [k for k in ("rectangle", "wafer", "polygon") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"expected exactly one of rectangle, wafer, polygon; got {given or 'none'}")
        return self


class FocusConfig(StrictModel):
    """How each tile's z is chosen (see `flakehunter.focus`).

    ``none``: every tile at ``z_um``; ``plane``: z from a plane through user-measured ``points_um``;
    ``map``: autofocus at a grid of points (or ``map_points_um``) before the scan, fit a ``surface``,
    take every tile's z from it; ``autofocus``: the map, plus a fresh autofocus every ``every_n_tiles``
    tiles. Searches span ``range_um`` around the seed (``z_um``, then the map) in ``coarse_step_um``,
    then ``fine_step_um`` steps, always approaching from ``backlash_um`` below.
    """

    mode: Literal["none", "plane", "map", "autofocus"] = "none"
    z_um: float = 0.0
    points_um: list[tuple[float, float, float]] = Field(default_factory=list, validate_default=True)
    map_points_um: list[tuple[float, float]] = Field(default_factory=list)
    grid: tuple[int, int] = (3, 3)
    surface: Literal["plane", "quadratic"] = "plane"
    metric: Literal["normalized_variance", "laplacian", "tenengrad"] = "tenengrad"
    range_um: PositiveFloat = 100.0
    coarse_step_um: PositiveFloat = 10.0
    fine_step_um: PositiveFloat = 2.0
    backlash_um: NonNegativeFloat = 20.0
    max_slope_um_per_mm: PositiveFloat = 50.0
    min_contrast: float = Field(1.1, gt=1.0)
    every_n_tiles: int = Field(1, ge=1)

    @field_validator("points_um")
    @classmethod
    def _points(cls, v: list[tuple[float, float, float]], info: ValidationInfo) -> list[tuple[float, float, float]]:
        if info.data.get("mode") == "plane" and len(v) < 3:
            raise ValueError(f"mode 'plane' needs at least 3 points [x, y, z], got {len(v)}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError(f"expected [rows, cols] of at least 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _steps(self) -> FocusConfig:
        if self.fine_step_um >= self.coarse_step_um:
            raise ValueError(
                f"fine_step_um ({self.fine_step_um:g}) must be smaller than coarse_step_um ({self.coarse_step_um:g})"
            )
        if self.range_um < 2 * self.coarse_step_um:
            raise ValueError(f"range_um ({self.range_um:g}) must span at least two coarse steps")
        return self


class MaterialConfig(StrictModel):
    name: str
    oxide_nm: PositiveFloat


class DetectorSection(StrictModel):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class OutputConfig(StrictModel):
    directory: Path | None = None


class ScanConfig(StrictModel):
    """A whole ``wafer.yaml``."""

    name: str = "scan"
    seed: int = 0
    stage: StageSection
    camera: DeviceSection
    optics: OpticsConfig
    region: RegionConfig
    overlap_percent: float = Field(default=10.0, ge=0.0, lt=50.0)
    order: Literal["snake", "raster", "column_snake", "column_raster"] = "snake"
    focus: FocusConfig = FocusConfig()
    material: MaterialConfig
    detectors: list[DetectorSection] = Field(default_factory=lambda: [DetectorSection(name="contrast")])
    output: OutputConfig = OutputConfig()


class WatchOptions(StrictModel):
    """How the watch folder decides that a file is complete, retries, and reports."""

    settle_s: NonNegativeFloat = Field(2.0, description="Size and mtime unchanged this long before a file is read")
    poll_interval_s: PositiveFloat = Field(2.0, description="Folder polling period with --polling")
    retry_initial_s: PositiveFloat = Field(1.0, description="First wait after a file fails to parse; doubles")
    retry_max_s: PositiveFloat = Field(60.0, description="Longest wait between two attempts")
    max_attempts: int = Field(8, ge=1, description="Failed parses of an unchanged file before it is quarantined")
    rescan_s: PositiveFloat = Field(300.0, description="Full rescan of the folder, in case an event was lost")
    status_interval_s: PositiveFloat = Field(60.0, description="Period of the status line")


class DetectConfig(StrictModel):
    """Detection on images written by other software (``flakehunter watch --config``)."""

    material: MaterialConfig
    pixel_size_um: PositiveFloat | None = Field(None, description="Used where a file's metadata has none")
    detectors: list[DetectorSection] = Field(default_factory=lambda: [DetectorSection(name="contrast")])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    watch: WatchOptions = WatchOptions()


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model in an annotation (``Model``, ``Model | None``), if any."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), None)


def _annotation_at(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The type annotation of the value ``loc`` points to, or None where it cannot tell."""
    current: Any = model
    for item in loc:
        if isinstance(item, str):
            m = _model_in(current)
            if m is None or item not in m.model_fields:
                return None
            current = m.model_fields[item].annotation
            continue
        origin, args = get_origin(current), get_args(current)
        if args and (origin is list or (origin is tuple and args[-1] is Ellipsis)):
            current = args[0]
        elif origin is tuple and item < len(args):
            current = args[item]
        else:
            return None
    return current


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the model that ``loc`` (minus its last item) points into."""
    current = _model_in(_annotation_at(model, loc[:-1]))
    return sorted(current.model_fields) if current is not None else None


def _expected_list(annotation: Any) -> str | None:
    """'a list of 2 numbers' for a fixed-length tuple annotation; None for anything else."""
    args = get_args(annotation)
    if get_origin(annotation) is not tuple or not args or Ellipsis in args:
        return None
    numbers = all(a in (int, float) for a in args)
    return f"a list of {len(args)} {'numbers' if numbers else 'values'}"


def format_validation_error(
    exc: ValidationError, path: str | Path | None, model: type[BaseModel], prefix: str = ""
) -> ConfigError:
    """Turn the first pydantic error into a one-line `ConfigError` naming file and field."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    # Union members and "after" validators add their own names to loc; drop those that are not fields.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "tuple["))))
    field = prefix + _field_path(loc) if loc else prefix.rstrip(".") or None
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return ConfigError(path, field, f"unknown key{hint}")
    if kind == "missing" and loc and isinstance(loc[-1], int):
        # pydantic reports a short tuple as its first missing item; name the list instead.
        expected = _expected_list(_annotation_at(model, loc[:-1])) or "more items"
        return ConfigError(path, prefix + _field_path(loc[:-1]), f"expected {expected}, got {err['input']!r}")
    if kind == "missing":
        return ConfigError(path, field, "required field is missing")
    if kind in ("tuple_type", "too_long") and (expected := _expected_list(_annotation_at(model, loc))):
        return ConfigError(path, field, f"expected {expected}, got {err['input']!r}")
    if kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        limit = err["ctx"]["min_length" if kind == "too_short" else "max_length"]
        return ConfigError(
            path, field, f"expected {bound} {limit} items, got {err['ctx']['actual_length']}: {err['input']!r}"
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return ConfigError(path, field, f"expected a section of key: value pairs, got {err['input']!r}")
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    else:
        message = message[0].lower() + message[1:]
        if "input" in err and not isinstance(err["input"], dict):
            message += f", got {err['input']!r}"
    return ConfigError(path, field, message)


def _validate(model: type[M], data: Any, path: str | Path | None) -> M:
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, path, model) from None


def parse_config(data: Any, path: str | Path | None = None) -> ScanConfig:
    """Validate an already-parsed YAML document."""
    return _validate(ScanConfig, data, path)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error becomes a one-line `ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, where, f"YAML syntax error: {problem}") from None


def load_config(path: str | Path) -> ScanConfig:
    """Read and validate ``wafer.yaml``; raises `ConfigError` naming the file and field."""
    return parse_config(read_yaml(path), path)


def parse_detect_config(data: Any, path: str | Path | None = None) -> DetectConfig:
    """Validate an already-parsed detect/watch config document."""
    return _validate(DetectConfig, data, path)


def load_detect_config(path: str | Path) -> DetectConfig:
    """Read and validate a detect/watch config (``configs/watch.yaml``); `ConfigError` names file and field."""
    return parse_detect_config(read_yaml(path), path)


def validate_plugin_options(
    factory: Any, options: dict[str, Any], path: str | Path | None, field: str
) -> Any:
    """Validate a section's ``options`` against the plugin's ``Options`` model, if it has one."""
    model = getattr(factory, "Options", None)
    if model is None:
        return dict(options)
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise format_validation_error(exc, path, model, prefix=f"{field}.") from None
