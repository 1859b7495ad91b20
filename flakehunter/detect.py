"""``flakehunter detect``: the analysis step over existing image files, into one run directory.

Stage position and pixel size come from each file's metadata (flakehunter's own, OME-XML or
Micro-Manager) and fall back to the command line's values; a file with no stage position gets
candidates relative to its centre, marked ``positioned = false``. Overlapping positioned images report
each flake once. Every good file is analysed: a file that cannot be read or analysed is recorded with
its reason (journal, manifest, the command's last lines) and the run goes on; a rerun skips the files
already done and tries the bad ones again.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from flakehunter.analysis.pipeline import PipelineSpec, build_pipeline
from flakehunter.analysis.step import AnalysisInput, AnalysisStep, image_megapixel_limit
from flakehunter.errors import InputError
from flakehunter.geometry import PixelTransform, TileOwnership
from flakehunter.journal import DONE, FAILED, Journal
from flakehunter.run import manifest as run_manifest
from flakehunter.run.candidate_writer import CandidateWriter
from flakehunter.run.layout import RunDirectory


def file_key(path: Path) -> str:
    """The journal key of an image file: its absolute, resolved path (detect and watch alike)."""
    return str(path.resolve())


def image_ownership(files: list[Path], pixel_size_um: float | None, edge_px: float = 2.0) -> TileOwnership:
    """Ownership over the files whose TIFF metadata give a stage position (read without pixels)."""
    from flakehunter.tiles import read_geometry

    fields = {}
    for path in files:
        found = read_geometry(path)
        if found is None:
            continue
        (rows, cols), meta = found
        pixel = meta.pixel_size_um or pixel_size_um
        if meta.x_um is None or meta.y_um is None or pixel is None:
            continue
        centre = (meta.x_um, meta.y_um)
        inner = (rows - 2 * edge_px, cols - 2 * edge_px)
        fields[file_key(path)] = (centre, PixelTransform(pixel).footprint(centre, inner))
    return TileOwnership(fields)


def run_detect(
    paths: list[Path], spec: PipelineSpec, out: Path, *, overlays: bool = False
) -> dict[str, Any]:
    """Detect in every image under ``paths`` into ``out``; resumable. Returns the manifest summary.

    ``summary["bad_inputs"]`` maps every file that could not be analysed to the reason; the caller
    exits 2 when there is any, after the good files are done.
    """
    from flakehunter.registry import get_registry
    from flakehunter.tiles import iter_image_files

    files = iter_image_files(paths)
    if not files:
        raise InputError(f"{', '.join(map(str, paths))}: no image files (.tif, .tiff, .png, .jpg, .jpeg) found")
    registry = get_registry()
    run = RunDirectory(out)
    pipeline = build_pipeline(spec, registry, run.path)  # a bad option is refused before anything is written
    image_megapixel_limit()  # a bad FLAKEHUNTER_MAX_IMAGE_MP is refused before anything is written too
    run.open("detect")
    try:
        with Journal(run.journal) as journal:
            return _detect_owned(run, journal, files, paths, spec, pipeline, overlays, registry)
    finally:
        run.close()


def _detect_owned(
    run: RunDirectory, journal: Journal, files: list[Path], paths: list[Path], spec: PipelineSpec, pipeline: Any,
    overlays: bool, registry: Any,
) -> dict[str, Any]:
    started = time.monotonic()
    created = run_manifest.now_iso()
    previous = _previous_manifest(run)
    run_id = previous.get("run_id") or uuid.uuid4().hex[:12]
    created = previous.get("created") or created
    with CandidateWriter(run.path, done_images=journal.keys(DONE)) as writer:
        step = AnalysisStep(
            pipeline, journal, writer, pixel_size_um=spec.pixel_size_um,
            ownership=image_ownership(files, spec.pixel_size_um), overlays=run.overlays if overlays else None,
        )
        keys = [file_key(f) for f in files]

        def write(status: str) -> dict[str, Any]:
            return _write_manifest(run, journal, writer, step, spec, paths, keys, status, run_id, created,
                                   started, registry)

        write("running")
        status = "failed"
        try:
            for path, key in zip(files, keys, strict=True):
                if not step.is_done(key):
                    step.submit(AnalysisInput(key, path=path))
            step.flush()
            done = journal.keys(DONE)
            status = "completed" if all(k in done for k in keys) else "completed_with_errors"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            summary = write(status)
    return summary


def _previous_manifest(run: RunDirectory) -> dict[str, Any]:
    import json

    try:
        data = json.loads(run.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if data.get("kind") not in (None, "detect"):
        raise InputError(f"{run.path}: holds a {data.get('kind')} run; use another --out for detect")
    return data if isinstance(data, dict) else {}


def _write_manifest(
    run: RunDirectory, journal: Journal, writer: CandidateWriter, step: AnalysisStep, spec: PipelineSpec,
    paths: list[Path], keys: list[str], status: str, run_id: str, created: str, started: float, registry: Any,
) -> dict[str, Any]:
    wanted = set(keys)
    items = [{"key": i.key, "file": i.key, "status": i.status, **i.data} for i in journal.items() if i.key in wanted]
    summary = run_manifest.summarize(
        items, items_total=len(keys), statuses=("pending", DONE, FAILED), candidates=writer.count,
        duplicates_dropped=writer.duplicates_dropped, wall_s=time.monotonic() - started,
        timings={"detect_s": step.detect_s},
    )
    summary["counts"]["pending"] += len(keys) - len(items)
    head = run_manifest.header(
        kind="detect", run_id=run_id, status=status, created=created,  # type: ignore[arg-type]
        config=spec.describe(), config_file=str(spec.config_path) if spec.config_path else None,
        inputs={"paths": [str(p) for p in paths], "files": len(keys)},
        plugins={"detectors": [registry.source("detector", d.name) for d in spec.detectors]},
        calibration={
            "material": spec.material, "nominal_oxide_nm": spec.oxide_nm,
            "detectors": step.pipeline.calibration_report(),
        },
        summary=summary,
        versions=run_manifest.versions(registry.plugin_versions()),
    )
    run_manifest.write_manifest_safely(run, head, lambda: items)
    return {"status": status, **head["summary"]}
