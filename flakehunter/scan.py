"""The scan runner: plan -> move -> snap -> tile TIFF -> queue -> detect -> candidates.

Acquisition runs on the calling thread and detection on a worker thread, joined by a bounded queue
so that the stage moves to the next tile while earlier ones are analysed and memory stays flat.
Stop requests (Ctrl-C, SIGTERM) take effect at tile boundaries. Everything that matters is durable
as it happens: tile TIFFs are written atomically, candidates are appended and fsynced, and the
journal marks a tile done only after its candidates are on disk, so ``--resume`` after a crash
or ``kill -9`` neither re-acquires a finished tile nor duplicates a candidate.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flakehunter import __version__
from flakehunter.atomic import write_json_atomic, write_text_atomic
from flakehunter.candidates import CandidateSink
from flakehunter.config import ScanConfig, parse_config, read_yaml, validate_plugin_options
from flakehunter.detection.base import DetectionContext
from flakehunter.detection.pipeline import DetectionPipeline, bbox_polygon, to_candidates
from flakehunter.devices import AxisRange, Camera, DeviceContext, Position, Stage, TravelLimits
from flakehunter.errors import ConfigError, InputError
from flakehunter.focus import FocusStrategy, MapFocus, make_focus_strategy, planning_focus
from flakehunter.geometry import PixelTransform, TileOwnership, TilePlan, plan_tiles, region_polygon
from flakehunter.journal import ACQUIRED, DONE, FAILED, PLANNED, Journal
from flakehunter.materials import Material
from flakehunter.registry import Registry, broadcast, get_plugin_manager, get_registry

log = logging.getLogger(__name__)

QUEUE_TILES = 3  # tiles held in memory between acquisition and detection


@dataclass
class TileRecord:
    """A tile on its way from the camera to the detectors."""

    plan: TilePlan
    key: str  # path relative to the run directory; the journal and candidates use it
    path: Path
    image: np.ndarray | None = None
    position: Position | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ScanContext:
    """Everything about a running scan that hooks and devices may look at."""

    config: ScanConfig
    config_path: Path
    run_dir: Path
    run_id: str
    tiles: list[TilePlan]
    transform: PixelTransform
    material: Material
    registry: Registry
    stage: Stage
    camera: Camera


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
    try:
        fov = transform.grid_fov_um(tuple(camera.shape))
    except ValueError as exc:
        raise ConfigError(config_path, "optics.rotation_deg", str(exc)) from None
    tiles = plan_tiles(config.region, fov, config.overlap_percent, config.order, planning_focus(config.focus))
    if not tiles:
        raise ConfigError(config_path, "region", "the region yields no tiles")
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
    return ScanPlan(config, config_path, tiles, transform, material, stage, camera, fov, area, estimated, focus)


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


def _resolve(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_run_dir(config: ScanConfig) -> Path:
    if config.output.directory is not None:
        return config.output.directory
    return Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}"


class ScanRunner:
    """Runs one scan into one run directory; `run` may be called once.

    Args:
        config_path: the wafer.yaml (for a resumed run, the copy inside the run directory).
        run_dir: where tiles, candidates, journal and manifest go.
        resume: continue the run already in ``run_dir``.
        device: compute device preference for detectors ("auto", "cpu", "cuda").
        on_progress: called with (tiles done, tiles total, tiles acquired) after each tile.
    """

    def __init__(
        self,
        config_path: str | Path | None,
        run_dir: str | Path,
        *,
        resume: bool = False,
        device: str = "auto",
        on_progress: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.device = device
        self.on_progress = on_progress
        self._stop = threading.Event()
        self._worker_error: BaseException | None = None
        self._pipeline: DetectionPipeline | None = None
        self.pm = get_plugin_manager()
        self.registry = get_registry()
        if resume:
            self._load_for_resume()
        else:
            if config_path is None:
                raise InputError("scan: a config file is needed unless resuming")
            self.config_path = Path(config_path)
            self.config_text = self.config_path.read_text(encoding="utf-8")
            self.config = parse_config(read_yaml(self.config_path), self.config_path)
            self.origin_path = self.config_path.resolve()
            self.run_id = uuid.uuid4().hex[:12]
            self.created = _now()

    # -- set-up -----------------------------------------------------------------------------
    def _load_for_resume(self) -> None:
        manifest_path = self.run_dir / "manifest.json"
        config_copy = self.run_dir / "config.yaml"
        if not manifest_path.exists() or not config_copy.exists():
            raise InputError(f"{self.run_dir}: not a scan run directory (no manifest.json and config.yaml)")
        import json

        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.config_text = config_copy.read_text(encoding="utf-8")
        if _sha256(self.config_text) != manifest.get("config_sha256"):
            raise InputError(f"{config_copy}: changed since the scan started; refusing to resume")
        self.origin_path = Path(manifest["config_file"])
        # Relative paths in the options still resolve against the original config's folder.
        self.config_path = self.origin_path
        self.config = parse_config(read_yaml(config_copy), config_copy)
        self.run_id = manifest["run_id"]
        self.created = manifest["created"]

    def request_stop(self) -> None:
        """Finish the tile in hand and stop cleanly (safe to call from a signal handler)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def prepare(self) -> ScanPlan:
        return make_plan(self.config, self.config_path, self.registry, run_dir=self.run_dir)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Acquire and analyse every tile not yet done. Returns the manifest summary."""
        if not self.resume and (self.run_dir / "manifest.json").exists():
            raise InputError(f"{self.run_dir}: already holds a run; use --resume {self.run_dir} or another --out")
        plan = self.prepare()
        # Build the detectors before anything is written, so a bad detector option leaves no run behind.
        detection_context = DetectionContext(
            material=plan.material,
            oxide_nm=self.config.material.oxide_nm,
            pixel_size_um=plan.transform.pixel_size_um,
            device=self.device,
            run_dir=self.run_dir,
            seed=self.config.seed,
            config_dir=self.config_path.parent,
            flatfield=tuple(_resolve(p, self.config_path.parent) for p in self.config.optics.flatfield),
        )
        pipeline = DetectionPipeline.from_sections(
            self.config.detectors, self.registry, detection_context, self.config_path
        )
        (self.run_dir / "tiles").mkdir(parents=True, exist_ok=True)
        if not self.resume:
            write_text_atomic(self.run_dir / "config.yaml", self.config_text)
        journal = Journal(self.run_dir / "journal.sqlite")
        for t in plan.tiles:
            if journal.get(self._key(t)) is None:
                journal.set(self._key(t), PLANNED, index=t.index)
        saved = journal.get_state("pipeline")
        if saved:
            pipeline.load_state(saved)
        sink = CandidateSink(self.run_dir, done_images=journal.keys(DONE))
        self._pipeline = pipeline
        ctx = ScanContext(
            self.config, self.config_path, self.run_dir, self.run_id, plan.tiles, plan.transform,
            plan.material, self.registry, plan.stage, plan.camera,
        )
        self._started = time.monotonic()
        self._timings = {"acquire_s": 0.0, "detect_s": 0.0}
        self._write_manifest(plan, journal, sink, status="running")
        status = "failed"
        error: BaseException | None = None
        try:
            self._connect(plan)
            broadcast(self.pm, "scan_started", scan=ctx)
            self._acquire_and_detect(ctx, plan, journal, pipeline, sink)
            counts = journal.counts()
            if self._stop.is_set() and counts.get(DONE, 0) < len(plan.tiles):
                status = "interrupted"
            elif counts.get(FAILED, 0):
                status = "completed_with_errors"
            else:
                status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._disconnect(plan)
            summary = self._write_manifest(plan, journal, sink, status=status, error=error)
            sink.close()
            journal.close()
            if error is None:
                broadcast(self.pm, "scan_finished", scan=ctx, summary=summary)
            else:
                broadcast(self.pm, "scan_failed", scan=ctx, error=error)
        return summary

    def _key(self, tile: TilePlan) -> str:
        from flakehunter.tiles import tile_filename

        return f"tiles/{tile_filename(tile.index, tile.grid_row, tile.grid_col)}"

    def _connect(self, plan: ScanPlan) -> None:
        plan.stage.connect()
        plan.camera.connect()

    def _disconnect(self, plan: ScanPlan) -> None:
        for device in (plan.camera, plan.stage):
            try:
                device.close()
            except Exception:  # teardown must not mask the scan's own outcome
                log.exception("closing %s failed", getattr(device, "name", device))

    def _acquire_and_detect(
        self, ctx: ScanContext, plan: ScanPlan, journal: Journal, pipeline: DetectionPipeline, sink: CandidateSink
    ) -> None:
        from flakehunter.tiles import read_image, write_tile

        work: queue.Queue[TileRecord | None] = queue.Queue(maxsize=QUEUE_TILES)
        ownership = TileOwnership.for_plan(plan.tiles, plan.transform, tuple(plan.camera.shape))
        total = len(plan.tiles)
        done = len(journal.keys(DONE))
        acquired = done
        progress_lock = threading.Lock()

        def report() -> None:
            if self.on_progress:
                with progress_lock:
                    self.on_progress(done, total, acquired)

        remaining = total - done
        calibrating = pipeline.needs_calibration()
        held: list[TileRecord] = []  # the first tiles, kept until the detectors have calibrated on them

        def analyse(record: TileRecord) -> None:
            nonlocal done
            self._analyse(record, ctx, plan, journal, pipeline, sink, ownership, read_image)
            done += 1
            report()

        def calibrate_and_release() -> None:
            nonlocal calibrating, held
            self._calibrate(held, pipeline, journal, read_image)
            calibrating = False
            for r in held:
                if not self._stop.is_set():
                    analyse(r)
            held = []

        def worker() -> None:
            try:
                while True:
                    record = work.get()
                    if record is None:
                        if calibrating and held and not self._stop.is_set():
                            calibrate_and_release()  # fewer tiles than the calibration wants
                        return
                    if self._stop.is_set():
                        continue  # leave queued tiles 'acquired'; --resume analyses them from disk
                    if calibrating:
                        held.append(record)
                        if len(held) >= min(pipeline.calibration_images, remaining):
                            calibrate_and_release()
                        continue
                    analyse(record)
            except BaseException as exc:
                self._worker_error = exc
                self._stop.set()
                while work.get() is not None:  # unblock the producer
                    pass

        thread = threading.Thread(target=worker, name="flakehunter-detect", daemon=True)
        thread.start()
        report()
        try:
            for tile in plan.tiles:
                if self._stop.is_set():
                    break
                key = self._key(tile)
                item = journal.get(key)
                path = self.run_dir / key
                if item is not None and item.status == DONE:
                    continue
                record = TileRecord(tile, key, path)
                if item is not None and item.status == ACQUIRED and path.exists():
                    work.put(record)  # acquired before a crash: analyse the file, do not re-acquire
                    continue
                t0 = time.perf_counter()
                z_um = plan.focus.z_for(tile, plan.stage, plan.camera) if plan.focus else tile.z_um
                plan.stage.move_to_um(tile.x_um, tile.y_um, z_um)
                t1 = time.perf_counter()
                image = plan.camera.snap()
                t2 = time.perf_counter()
                position = plan.stage.position_um()
                write_tile(
                    path,
                    image,
                    pixel_size_um=plan.transform.pixel_size_um,
                    x_um=position.x_um,
                    y_um=position.y_um,
                    z_um=position.z_um,
                    provenance=self._provenance(tile, plan),
                )
                t3 = time.perf_counter()
                record.image, record.position = image, position
                record.timings = {"move_s": t1 - t0, "snap_s": t2 - t1, "write_s": t3 - t2}
                self._timings["acquire_s"] += t3 - t0
                journal.set(key, ACQUIRED, x_um=position.x_um, y_um=position.y_um, z_um=position.z_um,
                            **{k: round(v, 4) for k, v in record.timings.items()})
                broadcast(self.pm, "tile_acquired", scan=ctx, tile=record)
                acquired += 1
                report()
                work.put(record)
        finally:
            work.put(None)
            thread.join()
        if self._worker_error is not None:
            raise self._worker_error

    def _calibrate(
        self, held: list[TileRecord], pipeline: DetectionPipeline, journal: Journal, read_image: Callable
    ) -> None:
        """Calibrate the detectors on the first tiles and save the result before any tile is analysed."""
        from flakehunter.tiles import ImageMeta

        samples = [(r.image, ImageMeta()) if r.image is not None else read_image(r.path) for r in held]
        report = pipeline.calibrate(samples)
        journal.put_state("pipeline", pipeline.state())
        log.info("calibrated on %d tiles: %s", len(held), report)

    def _analyse(
        self, record: TileRecord, ctx: ScanContext, plan: ScanPlan, journal: Journal,
        pipeline: DetectionPipeline, sink: CandidateSink, ownership: TileOwnership, read_image: Callable,
    ) -> None:
        t0 = time.perf_counter()
        tile = record.plan
        try:
            if record.image is None:
                image, meta = read_image(record.path)
            else:
                image = record.image
                from flakehunter.tiles import ImageMeta

                pos = record.position
                meta = ImageMeta(
                    pixel_size_um=plan.transform.pixel_size_um,
                    x_um=pos.x_um if pos else tile.x_um,
                    y_um=pos.y_um if pos else tile.y_um,
                    z_um=pos.z_um if pos else tile.z_um,
                    provenance={},
                    source="flakehunter",
                )
            detections = pipeline.run(image, meta)
        except Exception as exc:
            # One bad tile must not end an unattended scan; it is retried on --resume.
            log.warning("tile %d (%s) failed: %s", tile.index, record.key, exc)
            journal.set(record.key, FAILED, error=f"{type(exc).__name__}: {exc}")
            return
        centre = (meta.x_um if meta.x_um is not None else tile.x_um, meta.y_um if meta.y_um is not None else tile.y_um)
        shape = image.shape[:2]
        kept = []
        for d, c in zip(
            detections,
            to_candidates(
                detections, image=record.key, shape=shape, centre_um=centre, transform=plan.transform,
                material=plan.material.name, z_um=meta.z_um, tile=tile.index,
                orientation_period_deg=plan.material.edge_symmetry_deg,
            ),
            strict=True,
        ):
            bbox = bbox_polygon(d.bbox, plan.transform, centre, shape)
            if ownership.keeps(tile.index, c.x_um, c.y_um, bbox):
                kept.append(c)
        written = sink.add(kept)
        elapsed = time.perf_counter() - t0
        self._timings["detect_s"] += elapsed
        with journal.transaction():
            journal.set(record.key, DONE, candidates=len(written), detect_s=round(elapsed, 4),
                        warnings=meta.warnings or None)
            journal.put_state("pipeline", pipeline.state())
        for c in written:
            broadcast(self.pm, "candidate_found", scan=ctx, candidate=c)

    def _provenance(self, tile: TilePlan, plan: ScanPlan) -> dict[str, Any]:
        return {
            "flakehunter": __version__,
            "run_id": self.run_id,
            "scan": self.config.name,
            "tile_index": tile.index,
            "grid_row": tile.grid_row,
            "grid_col": tile.grid_col,
            "target_um": [tile.x_um, tile.y_um, tile.z_um],
            "focus_z_um": tile.z_um,
            "stage": self.config.stage.plugin,
            "camera": self.config.camera.plugin,
            "exposure_ms": getattr(plan.camera, "exposure_ms", None),
            "transform": {
                "pixel_size_um": plan.transform.pixel_size_um,
                "rotation_deg": plan.transform.rotation_deg,
                "flip_rows": plan.transform.flip_rows,
                "flip_cols": plan.transform.flip_cols,
            },
            "acquired_at": _now(),
        }

    def _write_manifest(
        self, plan: ScanPlan, journal: Journal, sink: CandidateSink, *, status: str,
        error: BaseException | None = None,
    ) -> dict[str, Any]:
        items = {item.key: item for item in journal.items()}
        tiles = []
        for t in plan.tiles:
            item = items.get(self._key(t))
            entry: dict[str, Any] = {
                "index": t.index, "grid_row": t.grid_row, "grid_col": t.grid_col,
                "x_um": round(t.x_um, 3), "y_um": round(t.y_um, 3), "z_um": round(t.z_um, 3),
                "file": self._key(t), "status": item.status if item else PLANNED,
            }
            if item:
                entry.update({k: v for k, v in item.data.items() if k in ("candidates", "error", "warnings") and v})
                if item.data.get("z_um") is not None:  # where the stage really was (z from autofocus or a map)
                    entry["stage_um"] = [round(item.data[k], 3) for k in ("x_um", "y_um", "z_um")]
            tiles.append(entry)
        counts = {s: sum(1 for t in tiles if t["status"] == s) for s in (PLANNED, ACQUIRED, DONE, FAILED)}
        warned = [t["index"] for t in tiles if t.get("warnings")]
        wall = time.monotonic() - getattr(self, "_started", time.monotonic())
        summary = {
            "status": status,
            "tiles_total": len(tiles),
            "tiles": counts,
            "candidates": sink.count,
            "duplicates_dropped": sink.duplicates_dropped,
            "tiles_with_warnings": warned,
            "wall_s": round(wall, 2),
            **{k: round(v, 2) for k, v in getattr(self, "_timings", {}).items()},
        }
        manifest = {
            "flakehunter_version": __version__,
            "command": "scan",
            "run_id": self.run_id,
            "status": status,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "created": self.created,
            "updated": _now(),
            "config_file": str(self.origin_path),
            "config_sha256": _sha256(self.config_text),
            "config": self.config.model_dump(mode="json"),
            "versions": _versions(self.registry),
            "devices": {
                "stage": self._source("stage", self.config.stage.plugin),
                "camera": self._source("camera", self.config.camera.plugin),
                "detectors": [self._source("detector", d.name) for d in self.config.detectors],
            },
            "calibration": {
                "material": plan.material.name,
                "nominal_oxide_nm": self.config.material.oxide_nm,
                "detectors": self._pipeline.calibration_report() if self._pipeline else [],
                "transform": {
                    "pixel_size_um": plan.transform.pixel_size_um,
                    "rotation_deg": plan.transform.rotation_deg,
                    "flip_rows": plan.transform.flip_rows,
                    "flip_cols": plan.transform.flip_cols,
                },
            },
            "plan": plan.describe(),
            "focus": plan.focus.describe() if plan.focus else {"mode": self.config.focus.mode},
            "summary": summary,
            "tiles": tiles,
        }
        write_json_atomic(self.run_dir / "manifest.json", manifest)
        return summary

    def _source(self, kind: str, name: str) -> dict[str, str]:
        c = self.registry.contributions[kind].get(name)
        return {"name": name, "plugin": c.plugin if c else "?", "package": c.package if c else "?"}


def _versions(registry: Registry) -> dict[str, Any]:
    import tifffile

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tifffile": tifffile.__version__,
        "plugins": {p.name: f"{p.package} {p.version}".strip() for p in registry.plugins},
    }
