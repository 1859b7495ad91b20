"""The scan configuration (``wafer.yaml``): pydantic models and a loader with one-line errors.

Unknown keys are rejected everywhere, so a typo never silently falls back to a default. Every
error names the file and the dotted field, e.g.
``configs/chip.yaml: stage.limits_um.x_um: expected a list of 2 numbers [min, max], got 'wide'``.
Plugin options are validated later, against the plugin's own ``Options`` model, by
`validate_plugin_options`, with the same kind of message.

What is refused at the door, before anything is planned or written: NaN and infinity anywhere
(also in plugin options), ``true`` where a number is meant and ``2.0`` where an integer is,
duplicate YAML keys, documents nested deeper than `MAX_YAML_DEPTH` or expanding (through
anchors) to more than `MAX_YAML_VALUES` values, files that are missing, unreadable, not UTF-8 or
larger than `MAX_CONFIG_BYTES`, scan names that are not plain file names, and files named in the
options (`ConfigFile`) that do not exist. Plans that would exceed the ``budget:`` section are
refused by `flakehunter.acquisition.plan.make_plan`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from flakehunter.config_messages import check_numbers, format_validation_error
from flakehunter.config_yaml import parse_yaml, read_config_text
from flakehunter.errors import ConfigError, short_repr

#: Stage coordinates and lengths in µm are bounded (±1 km), so that no product of two overflows.
MAX_COORD_UM = 1e9
CoordUm = Annotated[float, Field(ge=-MAX_COORD_UM, le=MAX_COORD_UM)]
LengthUm = Annotated[float, Field(gt=0, le=MAX_COORD_UM)]
NonNegativeUm = Annotated[float, Field(ge=0, le=MAX_COORD_UM)]
PositiveFloat = Annotated[float, Field(gt=0)]
Seconds = Annotated[float, Field(ge=0, le=1e6)]
PositiveSeconds = Annotated[float, Field(gt=0, le=1e6)]
#: Longest scan name (it becomes a folder name under runs/).
MAX_NAME_CHARS = 100
#: Most focus-map points per side, and most frames one autofocus may take.
MAX_FOCUS_GRID = 100
MAX_FOCUS_FRAMES = 1000


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


M = TypeVar("M", bound=StrictModel)


# -- files named in a config ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExistingFile:
    """Pydantic marker: the value names a file that must exist when the config is validated.

    A relative path resolves against ``config_dir`` in the validation context (the config file's
    folder; `validate_plugin_options` passes it), else against the current folder, and the value
    becomes the resolved path. With ``search``, a value that is no file may be a *name*, found as
    ``folder / (name + suffix)`` in one of the folders ``search()`` returns; a name is kept as given.
    Use `ConfigFile` for a plain path option, e.g. ``layout: ConfigFile | None = None``.
    """

    search: Callable[[], Iterable[Path]] | None = None
    suffix: str = ""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self._check, handler(source))

    def _check(self, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        raw = str(value)
        if not raw.strip():
            raise ValueError("expected a file name, got an empty text")
        context = info.context if isinstance(info.context, dict) else {}
        config_dir = context.get("config_dir")
        try:
            path = Path(raw).expanduser()
            if not path.is_absolute() and config_dir is not None:
                path = Path(config_dir) / path
            if path.is_file():
                return str(path) if isinstance(value, str) else path
            folders = list(self.search()) if self.search is not None else []
            if any((folder / f"{raw}{self.suffix}").is_file() for folder in folders):
                return value
            exists = path.exists()
        except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, unknown ~user, names too long
            raise ValueError(f"not a usable file name ({exc})") from None
        if exists:
            raise ValueError(f"{path} is a folder, not a file")
        names = f", and no {raw}{self.suffix} in {', '.join(map(str, folders))}" if self.search else ""
        if names and (raw.endswith(self.suffix) or "/" in raw or "\\" in raw):
            names = ""  # a file name, not a name to look up: say only that the file is missing
        raise ValueError(f"no such file {path}{names}")


#: A path option naming a file that must exist; relative to the config file's folder.
ConfigFile = Annotated[Path, ExistingFile()]


# -- the sections -------------------------------------------------------------------------------------------


class AxisLimits(StrictModel):
    x_um: tuple[CoordUm, CoordUm]
    y_um: tuple[CoordUm, CoordUm]
    z_um: tuple[CoordUm, CoordUm] = (-1000.0, 1000.0)

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
    pixel_size_um: float = Field(gt=0, le=1e4, description="µm of the sample per camera pixel (at most 1 cm)")
    rotation_deg: float = Field(0.0, ge=-360, le=360)
    flip_rows: bool = False
    flip_cols: bool = False
    flatfield: list[Path] = Field(
        default_factory=list,
        description="Images of bare substrate (relative to the config's folder; must exist); averaged",
    )

    @field_validator("flatfield", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | Path) else v


class RectangleRegion(StrictModel):
    corner1_um: tuple[CoordUm, CoordUm]
    corner2_um: tuple[CoordUm, CoordUm]

    @model_validator(mode="after")
    def _not_degenerate(self) -> RectangleRegion:
        if self.corner1_um[0] == self.corner2_um[0] or self.corner1_um[1] == self.corner2_um[1]:
            raise ValueError("corners must differ in both x and y")
        return self


class WaferRegion(StrictModel):
    center_um: tuple[CoordUm, CoordUm]
    diameter_um: LengthUm
    edge_exclusion_um: NonNegativeUm = 0.0

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
    vertices_um: list[tuple[CoordUm, CoordUm]] = Field(min_length=3)

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
    z_um: CoordUm = 0.0
    points_um: list[tuple[CoordUm, CoordUm, CoordUm]] = Field(default_factory=list, validate_default=True)
    map_points_um: list[tuple[CoordUm, CoordUm]] = Field(default_factory=list)
    grid: tuple[int, int] = Field((3, 3), description=f"Focus-map points [rows, cols], each 1 to {MAX_FOCUS_GRID}")
    surface: Literal["plane", "quadratic"] = "plane"
    metric: Literal["normalized_variance", "laplacian", "tenengrad"] = "tenengrad"
    range_um: LengthUm = 100.0
    coarse_step_um: LengthUm = 10.0
    fine_step_um: LengthUm = 2.0
    backlash_um: NonNegativeUm = 20.0
    max_slope_um_per_mm: PositiveFloat = 50.0
    min_contrast: float = Field(1.1, gt=1.0)
    every_n_tiles: int = Field(1, ge=1)

    @field_validator("points_um")
    @classmethod
    def _points(cls, v: list[tuple[float, float, float]], info: ValidationInfo) -> list[tuple[float, float, float]]:
        if info.data.get("mode") == "plane":
            if len(v) < 3:
                raise ValueError(f"mode 'plane' needs at least 3 points [x, y, z], got {len(v)}")
            if problem := _not_a_plane([(p[0], p[1]) for p in v]):
                raise ValueError(f"mode 'plane' needs 3 points [x, y, z] that span a plane: {problem}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1 or max(v) > MAX_FOCUS_GRID:
            raise ValueError(f"expected [rows, cols] of 1 to {MAX_FOCUS_GRID} each, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _steps(self) -> FocusConfig:
        if self.fine_step_um >= self.coarse_step_um:
            raise ValueError(
                f"fine_step_um ({self.fine_step_um:g}) must be smaller than coarse_step_um ({self.coarse_step_um:g})"
            )
        if self.range_um < 2 * self.coarse_step_um:
            raise ValueError(f"range_um ({self.range_um:g}) must span at least two coarse steps")
        frames = self.range_um / self.coarse_step_um + 2 * self.coarse_step_um / self.fine_step_um
        if frames > MAX_FOCUS_FRAMES:
            raise ValueError(
                f"range_um / coarse_step_um + 2 coarse_step_um / fine_step_um gives ~{frames:.3g} frames per autofocus "
                f"(at most {MAX_FOCUS_FRAMES})"
            )
        return self


def _not_a_plane(points: list[tuple[float, float]]) -> str | None:
    """Why (x, y) points cannot carry a plane (all at one spot, or on one line), or None."""
    a = points[0]
    b = max(points, key=lambda p: math.hypot(p[0] - a[0], p[1] - a[1]))
    span = math.hypot(b[0] - a[0], b[1] - a[1])
    if span == 0:
        return f"all {len(points)} lie at (x, y) = ({a[0]:g}, {a[1]:g})"
    off = max(abs((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])) / span for p in points)
    if off <= 1e-3 * span:
        return f"all {len(points)} lie on one line in (x, y) (at most {off:.3g} µm off it over {span:.3g} µm)"
    return None


class MaterialConfig(StrictModel):
    name: str
    oxide_nm: float = Field(gt=0, le=1e4, description="Nominal oxide (SiO2) thickness in nm, at most 10 µm")


class DetectorSection(StrictModel):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


def _at_least_one_detector(v: list[DetectorSection]) -> list[DetectorSection]:
    if not v:
        raise ValueError("at least one detector is needed, e.g. [{name: contrast}]")
    return v


Detectors = Annotated[list[DetectorSection], AfterValidator(_at_least_one_detector)]


class OutputConfig(StrictModel):
    directory: Path | None = None


class BudgetConfig(StrictModel):
    """Limits a scan plan must stay within; checked from the region and the field of view before any
    tile is planned, so that a typo (a pixel size of 1e-4 µm, a corner at 1e15 µm) is refused at once
    instead of filling memory. Raise them on purpose for a really large scan."""

    max_tiles: int = Field(
        100_000, ge=1, le=1_000_000,
        description="Most tiles one scan may plan (a 300 mm wafer at 5x is ~20,000 tiles); at most 1,000,000",
    )
    max_tile_megapixels: float = Field(
        100.0, gt=0, le=1000,
        description="Largest camera frame, rows x cols / 1e6; each megapixel takes ~12 MB while analysed; at most 1000",
    )


class ScanConfig(StrictModel):
    """A whole ``wafer.yaml``."""

    name: str = Field(
        "scan", description=f"Names the run folder runs/NAME-TIME: a plain file name of at most {MAX_NAME_CHARS} "
        "characters (no / or \\, no leading dot, no control characters)"
    )
    seed: int = Field(0, ge=0, lt=2**63)
    stage: StageSection
    camera: DeviceSection
    optics: OpticsConfig
    region: RegionConfig
    overlap_percent: float = Field(default=10.0, ge=0.0, lt=50.0)
    order: Literal["snake", "raster", "column_snake", "column_raster"] = "snake"
    focus: FocusConfig = FocusConfig()
    material: MaterialConfig
    detectors: Detectors = Field(default_factory=lambda: [DetectorSection(name="contrast")])
    output: OutputConfig = OutputConfig()
    budget: BudgetConfig = BudgetConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        bad = (
            not v or len(v) > MAX_NAME_CHARS or v.startswith(".") or any(c in v for c in "/\\")
            or any(ord(c) < 32 or ord(c) == 127 for c in v)
        )
        if bad:
            raise ValueError(
                f"expected a plain file name (1 to {MAX_NAME_CHARS} characters, no / or \\, no leading dot, "
                f"no control characters), got {short_repr(v, 60)}"
            )
        return v


class WatchOptions(StrictModel):
    """How the watch folder decides that a file is complete, retries, and reports."""

    settle_s: Seconds = Field(2.0, description="Size and mtime unchanged this long before a file is read")
    poll_interval_s: PositiveSeconds = Field(2.0, description="Folder polling period with --polling")
    retry_initial_s: PositiveSeconds = Field(1.0, description="First wait after a file fails to parse; doubles")
    retry_max_s: PositiveSeconds = Field(60.0, description="Longest wait between two attempts")
    max_attempts: int = Field(8, ge=1, description="Failed parses of an unchanged file before it is quarantined")
    rescan_s: PositiveSeconds = Field(300.0, description="Full rescan of the folder, in case an event was lost")
    status_interval_s: PositiveSeconds = Field(60.0, description="Period of the status line")


class DetectConfig(StrictModel):
    """Detection on images written by other software (``flakehunter watch --config``)."""

    material: MaterialConfig
    pixel_size_um: float | None = Field(None, gt=0, le=1e4, description="Used where a file's metadata has none")
    detectors: Detectors = Field(default_factory=lambda: [DetectorSection(name="contrast")])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, ge=0, lt=2**63, description="Seed for anything stochastic in the detectors")
    flatfield: list[Path] = Field(
        default_factory=list,
        description="Images of bare substrate (relative to the config's folder); averaged, as optics.flatfield",
    )
    watch: WatchOptions = WatchOptions()

    @field_validator("flatfield", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | Path) else v


def _validate(model: type[M], data: Any, path: str | Path | None) -> M:
    if data is None:
        raise ConfigError(path, None, "the file is empty; expected a mapping of sections (see configs/)")
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, path, model) from None
    check_numbers(data, validated, path)
    return validated


def parse_config(data: Any, path: str | Path | None = None) -> ScanConfig:
    """Validate an already-parsed YAML document."""
    return _validate(ScanConfig, data, path)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML config file; anything wrong with the file or its syntax is a one-line `ConfigError`."""
    return parse_yaml(read_config_text(path), path)


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
    factory: Any,
    options: dict[str, Any],
    path: str | Path | None,
    field: str,
    *,
    context: dict[str, Any] | None = None,
) -> Any:
    """Validate a section's ``options`` against the plugin's ``Options`` model, if it has one.

    ``context`` is the pydantic validation context; by default ``{"config_dir": the folder of
    path}``, against which `ConfigFile` options resolve. Non-finite numbers, and numbers made from
    ``true`` or (for integers) from floats, are refused anywhere in the validated options too.
    """
    if context is None:
        context = {"config_dir": Path(path).parent if path is not None else None}
    model = getattr(factory, "Options", None)
    if model is None:
        validated: Any = dict(options)
    else:
        try:
            validated = model.model_validate(options, context=context)
        except ValidationError as exc:
            raise format_validation_error(exc, path, model, prefix=f"{field}.") from None
    check_numbers(options, validated, path, f"{field}.")
    return validated
