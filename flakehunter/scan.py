"""A scan: config -> plan -> run directory -> engine and runner -> the analysis step -> manifest.

`Scan` ties the parts together and owns nothing they do: the plan (`flakehunter.acquisition.plan`), the
tile engine and the runner (`flakehunter.acquisition`), the analysis step (`flakehunter.analysis.step`,
the same one ``detect`` and ``watch`` use) and the run directory (`flakehunter.run`). Everything that
matters is durable as it happens: tile TIFFs are written atomically, candidates are appended and
fsynced, and the journal marks a tile done only after its candidates are on disk, so ``--resume`` after
a crash or ``kill -9`` neither re-acquires a finished tile nor duplicates a candidate.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flakehunter.acquisition.engine import TileEngine, TileRecord, tile_key
from flakehunter.acquisition.plan import ScanPlan, make_plan
from flakehunter.acquisition.runner import ScanRunner
from flakehunter.analysis.pipeline import PipelineSpec, build_pipeline
from flakehunter.analysis.step import AnalysisInput, AnalysisResult, AnalysisStep, image_megapixel_limit
from flakehunter.atomic import write_text_atomic
from flakehunter.candidates import Candidate
from flakehunter.config import ScanConfig, parse_config
from flakehunter.config_yaml import parse_yaml, read_config_text
from flakehunter.devices import Camera, Stage
from flakehunter.errors import InputError
from flakehunter.geometry import PixelTransform, TileOwnership, TilePlan
from flakehunter.journal import ACQUIRED, DONE, FAILED, PLANNED, Journal
from flakehunter.materials import Material
from flakehunter.registry import Registry, broadcast, get_plugin_manager, get_registry
from flakehunter.run import manifest as run_manifest
from flakehunter.run.candidate_writer import CandidateWriter
from flakehunter.run.layout import RunDirectory, output_error

log = logging.getLogger(__name__)

__all__ = ["Scan", "ScanContext", "TileRecord", "default_run_dir"]


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


def default_run_dir(config: ScanConfig) -> Path:
    if config.output.directory is not None:
        return config.output.directory
    return Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _TileAnalysis:
    """Hands the runner's tiles to the analysis step (the runner knows tiles, the step knows images)."""

    def __init__(self, step: AnalysisStep) -> None:
        self.step = step

    def submit(self, record: TileRecord, *, retake_allowed: bool) -> list[AnalysisResult]:
        return self.step.submit(AnalysisInput(
            record.key, path=record.path, image=record.image, meta=record.meta, tile=record.plan.index,
            retake_allowed=retake_allowed,
        ))

    def flush(self) -> list[AnalysisResult]:
        return self.step.flush()


class Scan:
    """One scan into one run directory; `run` may be called once.

    Args:
        config_path: the wafer.yaml (ignored when resuming: the run directory's copy is used).
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
        self.out = RunDirectory(run_dir)
        self.run_dir = self.out.path
        self.resume = resume
        self.device = device
        self.on_progress = on_progress
        self.pm = get_plugin_manager()
        self.registry = get_registry()
        self._runner: ScanRunner | None = None
        self._stop_requested = False
        if resume:
            self._load_for_resume()
        else:
            if config_path is None:
                raise InputError("scan: a config file is needed unless resuming")
            self.config_path = Path(config_path)
            # Read once: the copy in the run directory is exactly what was validated.
            self.config_text = read_config_text(self.config_path)
            self.config = parse_config(parse_yaml(self.config_text, self.config_path), self.config_path)
            self.origin_path = self.config_path.resolve()
            self.run_id = uuid.uuid4().hex[:12]
            self.created = run_manifest.now_iso()

    def _load_for_resume(self) -> None:
        import json

        if not self.out.manifest.exists() or not self.out.config_copy.exists():
            raise InputError(f"{self.run_dir}: no scan to resume here (no manifest.json and config.yaml; a scan "
                             "stopped before its first tile is simply run again)")
        try:
            manifest = json.loads(self.out.manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.out.manifest}: cannot read the run to resume ({exc})") from None
        self.config_text = read_config_text(self.out.config_copy)
        if manifest.get("kind") != "scan":
            raise InputError(f"{self.run_dir}: holds a {manifest.get('kind', 'unknown')} run, not a scan")
        if _sha256(self.config_text) != manifest.get("config_sha256"):
            raise InputError(f"{self.out.config_copy}: changed since the scan started; refusing to resume")
        self.origin_path = Path(manifest["config_file"])
        # Relative paths in the options still resolve against the original config's folder.
        self.config_path = self.origin_path
        self.config = parse_config(parse_yaml(self.config_text, self.out.config_copy), self.out.config_copy)
        self.run_id = manifest["run_id"]
        self.created = manifest["created"]

    # -- control ------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the tile in hand and stop cleanly (safe to call from a signal handler)."""
        self._stop_requested = True
        if self._runner is not None:
            self._runner.request_stop()

    @property
    def stopped(self) -> bool:
        return self._stop_requested

    def prepare(self) -> ScanPlan:
        """The validated plan (what ``--dry-run`` shows); nothing connects, moves or is written."""
        return make_plan(self.config, self.config_path, self.registry, run_dir=self.run_dir)

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Acquire and analyse every tile not yet done. Returns the manifest summary plus ``status``."""
        self.out.open("scan")
        try:
            return self._run_owned()
        finally:
            self.out.close()

    def _run_owned(self) -> dict[str, Any]:
        if not self.resume and self.out.holds_run():
            raise InputError(f"{self.run_dir}: already holds a run; use --resume {self.run_dir} or another --out")
        if not self.resume:
            self.out.discard_unstarted()  # a scan killed before its first tile left only a plan behind
        plan = self.prepare()
        # The detectors are built before anything is written, so a bad detector option leaves no run behind.
        spec = PipelineSpec.from_scan(self.config, self.config_path, self.device)
        pipeline = build_pipeline(spec, self.registry, self.run_dir)
        image_megapixel_limit()  # a bad FLAKEHUNTER_MAX_IMAGE_MP is refused before anything is written too
        try:
            self.out.tiles.mkdir(parents=True, exist_ok=True)
            if not self.resume:
                write_text_atomic(self.out.config_copy, self.config_text)
        except OSError as exc:
            raise output_error(self.out.config_copy, exc) from exc
        ctx = ScanContext(
            self.config, self.config_path, self.run_dir, self.run_id, plan.tiles, plan.transform,
            plan.material, self.registry, plan.stage, plan.camera,
        )
        with Journal(self.out.journal) as journal:
            with journal.transaction():
                for t in plan.tiles:
                    if journal.get(tile_key(t)) is None:
                        journal.set(tile_key(t), PLANNED, index=t.index)
            writer = CandidateWriter(self.run_dir, done_images=journal.keys(DONE))
            try:
                return self._acquire_and_analyse(ctx, plan, journal, writer, pipeline)
            finally:
                writer.close()

    def _acquire_and_analyse(
        self, ctx: ScanContext, plan: ScanPlan, journal: Journal, writer: CandidateWriter, pipeline: Any
    ) -> dict[str, Any]:
        import time

        ownership = TileOwnership.for_plan(plan.tiles, plan.transform, plan.camera.shape, key_of=tile_key)

        def found(candidate: Candidate) -> None:
            broadcast(self.pm, "candidate_found", scan=ctx, candidate=candidate)

        step = AnalysisStep(pipeline, journal, writer, transform=plan.transform, ownership=ownership,
                            on_candidate=found)
        engine = TileEngine(plan, self.out, self.run_id)
        runner = ScanRunner(
            engine, plan.tiles, journal, _TileAnalysis(step),
            on_acquired=lambda record: broadcast(self.pm, "tile_acquired", scan=ctx, tile=record),
            on_progress=self.on_progress,
            on_started=lambda: broadcast(self.pm, "scan_started", scan=ctx),
        )
        self._runner = runner
        if self._stop_requested:
            runner.request_stop()
        started = time.monotonic()
        manifest = _ScanManifest(self, plan, journal, writer, step, runner, started)
        manifest.write("running")
        status, error = "failed", None
        try:
            runner.run()
            counts = journal.counts()
            keys = {tile_key(t) for t in plan.tiles}
            done = len(keys & journal.keys(DONE))
            if runner.stopped and done < len(plan.tiles):
                status = "interrupted"
            elif len(keys & journal.keys(FAILED)) or done < len(plan.tiles):
                status = "completed_with_errors"
            else:
                status = "completed"
            del counts
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            summary = manifest.write(status, error)
            if error is None:
                broadcast(self.pm, "scan_finished", scan=ctx, summary=summary)
            else:
                broadcast(self.pm, "scan_failed", scan=ctx, error=error)
        return summary


class _ScanManifest:
    """Writes a scan's manifest.json (schema in `flakehunter.run.manifest`)."""

    def __init__(self, scan: Scan, plan: ScanPlan, journal: Journal, writer: CandidateWriter, step: AnalysisStep,
                 runner: ScanRunner, started: float) -> None:
        self.scan, self.plan, self.journal, self.writer = scan, plan, journal, writer
        self.step, self.runner, self.started = step, runner, started

    def write(self, status: str, error: BaseException | None = None) -> dict[str, Any]:
        import time

        scan, plan = self.scan, self.plan
        journal_items = {item.key: item for item in self.journal.items()}
        items = list(self._items(journal_items))
        summary = run_manifest.summarize(
            items, items_total=len(items), statuses=(PLANNED, ACQUIRED, DONE, FAILED), candidates=self.writer.count,
            duplicates_dropped=self.writer.duplicates_dropped, wall_s=time.monotonic() - self.started,
            timings={"acquire_s": self.runner.counts.acquire_s, "detect_s": self.step.detect_s},
            retaken=self.runner.counts.retaken,
        )
        config = scan.config
        head = run_manifest.header(
            kind="scan", run_id=scan.run_id, status=status, created=scan.created,  # type: ignore[arg-type]
            config=config.model_dump(mode="json"), config_file=str(scan.origin_path),
            config_sha256=_sha256(scan.config_text),
            inputs={
                "plan": plan.describe(),
                "focus": plan.focus.describe() if plan.focus else {"mode": config.focus.mode},
            },
            plugins={
                "stage": scan.registry.source("stage", config.stage.plugin),
                "camera": scan.registry.source("camera", config.camera.plugin),
                "detectors": [scan.registry.source("detector", d.name) for d in config.detectors],
            },
            calibration={
                "material": plan.material.name,
                "nominal_oxide_nm": config.material.oxide_nm,
                "detectors": self.step.pipeline.calibration_report(),
                "transform": {
                    "pixel_size_um": plan.transform.pixel_size_um,
                    "rotation_deg": plan.transform.rotation_deg,
                    "flip_rows": plan.transform.flip_rows,
                    "flip_cols": plan.transform.flip_cols,
                },
            },
            summary=summary,
            versions=run_manifest.versions(scan.registry.plugin_versions()),
            error=None if error is None else f"{type(error).__name__}: {error}",
        )
        run_manifest.write_manifest_safely(scan.out, head, lambda: items)
        return {"status": status, **head["summary"]}

    def _items(self, journal_items: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for t in self.plan.tiles:
            key = tile_key(t)
            item = journal_items.get(key)
            entry: dict[str, Any] = {
                "key": key, "file": key, "status": item.status if item else PLANNED,
                "index": t.index, "grid_row": t.grid_row, "grid_col": t.grid_col,
                "x_um": round(t.x_um, 3), "y_um": round(t.y_um, 3), "z_um": round(t.z_um, 3),
            }
            if item:
                data = item.data
                entry.update({k: v for k, v in data.items() if k not in ("x_um", "y_um", "z_um", "index")
                              and v is not None})
                if data.get("z_um") is not None:  # where the stage really was (z from autofocus or a map)
                    entry["stage_um"] = [round(data[k], 3) for k in ("x_um", "y_um", "z_um")]
            yield entry
