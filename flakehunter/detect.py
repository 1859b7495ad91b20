"""Detection on existing image files (``flakehunter detect``; the watch folder reuses `FileAnalyzer`).

Stage position and pixel size come from the file's metadata (flakehunter's own, OME-XML or
Micro-Manager) and fall back to the command line's values. A file with no stage position gets
candidates relative to its centre, marked ``positioned = false``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flakehunter import __version__
from flakehunter.atomic import write_json_atomic
from flakehunter.candidates import Candidate, CandidateSink
from flakehunter.config import DetectorSection
from flakehunter.detection.base import DetectionContext
from flakehunter.detection.pipeline import DetectionPipeline, bbox_polygon, to_candidates
from flakehunter.errors import InputError
from flakehunter.geometry import PixelTransform, TileOwnership
from flakehunter.journal import DONE, FAILED, Journal
from flakehunter.registry import Registry


@dataclass
class FileResult:
    path: Path
    candidates: list[Candidate]
    position_source: str
    seconds: float
    warnings: list[str]


class FileAnalyzer:
    """Runs the detector pipeline over image files into one run directory, durably.

    Each file is keyed in the journal by its absolute path; its candidates are appended before the
    journal marks it done, so a restart neither repeats nor skips a file.
    """

    def __init__(
        self,
        run_dir: Path,
        pipeline: DetectionPipeline,
        journal: Journal,
        sink: CandidateSink,
        *,
        pixel_size_um: float | None = None,
        ownership: TileOwnership | None = None,
        overlays: bool = False,
    ) -> None:
        self.run_dir = run_dir
        self.pipeline = pipeline
        self.journal = journal
        self.sink = sink
        self.pixel_size_um = pixel_size_um
        self.ownership = ownership
        self.overlays = overlays

    @staticmethod
    def key(path: Path) -> str:
        return str(path.resolve())

    def is_done(self, path: Path) -> bool:
        item = self.journal.get(self.key(path))
        return item is not None and item.status == DONE

    def calibrate(self, paths: list[Path]) -> list[dict[str, Any]]:
        """Let the detectors calibrate on the first readable files before any is analysed.

        Unreadable files are skipped here; `analyse` reports them. The calibration is saved in the
        journal, so a rerun over the same folder keeps it.
        """
        from flakehunter.tiles import read_image

        if not self.pipeline.needs_calibration():
            return []
        samples = []
        for path in paths:
            if len(samples) >= self.pipeline.calibration_images:
                break
            try:
                samples.append(read_image(path))
            except InputError:
                continue
        if not samples:
            return []
        report = self.pipeline.calibrate(samples)
        self.journal.put_state("pipeline", self.pipeline.state())
        return report

    def analyse(self, path: Path) -> FileResult:
        """Detect in one file. Raises `InputError` (and records the failure) for a bad file."""
        from flakehunter.tiles import read_image

        t0 = time.perf_counter()
        key = self.key(path)
        try:
            image, meta = read_image(path)
            pixel_size = meta.pixel_size_um or self.pixel_size_um
            if pixel_size is None:
                raise InputError(f"{path}: no pixel size in the file's metadata; pass --pixel-size-um")
        except InputError as exc:
            self.journal.set(key, FAILED, error=str(exc))
            raise
        positioned = meta.x_um is not None and meta.y_um is not None
        centre = (meta.x_um, meta.y_um) if positioned else (0.0, 0.0)
        detections = self.pipeline.run(image, meta)
        transform = PixelTransform(pixel_size)
        candidates = to_candidates(
            detections,
            image=key,
            shape=image.shape[:2],
            centre_um=centre,  # type: ignore[arg-type]
            transform=transform,
            material=self.pipeline.context.material.name,
            z_um=meta.z_um,
            positioned=positioned,
            orientation_period_deg=self.pipeline.context.material.edge_symmetry_deg,
        )
        if positioned and self.ownership is not None:
            # Overlapping images: report each flake from the image that sees it whole.
            kept = [
                (d, c)
                for d, c in zip(detections, candidates, strict=True)
                if self.ownership.keeps(key, c.x_um, c.y_um, bbox_polygon(d.bbox, transform, centre, image.shape[:2]))
            ]
            detections, candidates = [d for d, _ in kept], [c for _, c in kept]
        written = self.sink.add(candidates)
        if self.overlays:
            from flakehunter.detection.overlay import save_overlay

            ids = {id(c): c.id for c in written}
            labels = [f"#{ids.get(id(c), '-')} {c.layer_class} {c.score:.2f}" for c in candidates]
            save_overlay(self.run_dir / "overlays" / f"{path.stem}.png", image, detections, labels)
        seconds = time.perf_counter() - t0
        with self.journal.transaction():
            self.journal.set(
                key, DONE, candidates=len(written), position_source=meta.source if positioned else "none",
                pixel_size_um=pixel_size, seconds=round(seconds, 4), warnings=meta.warnings or None,
            )
            self.journal.put_state("pipeline", self.pipeline.state())
        return FileResult(path, written, meta.source if positioned else "none", seconds, meta.warnings)


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
        fields[FileAnalyzer.key(path)] = (centre, PixelTransform(pixel).footprint(centre, inner))
    return TileOwnership(fields)


def build_pipeline(
    registry: Registry,
    material_name: str,
    oxide_nm: float,
    *,
    detectors: list[DetectorSection],
    pixel_size_um: float | None,
    device: str,
    run_dir: Path,
    seed: int = 0,
    flatfield: tuple[Path, ...] = (),
    config_dir: Path | None = None,
) -> DetectionPipeline:
    try:
        material = registry.material(material_name)
    except InputError as exc:
        raise InputError(f"--material: {exc}") from None
    context = DetectionContext(
        material=material, oxide_nm=oxide_nm, pixel_size_um=pixel_size_um, device=device, run_dir=run_dir,
        seed=seed, config_dir=config_dir, flatfield=flatfield,
    )
    return DetectionPipeline.from_sections(detectors, registry, context)


def run_detect(
    paths: list[Path],
    *,
    material: str,
    oxide_nm: float,
    out: Path,
    pixel_size_um: float | None = None,
    detectors: list[DetectorSection] | None = None,
    device: str = "auto",
    flatfield: tuple[Path, ...] = (),
    overlays: bool = False,
) -> dict[str, Any]:
    """Detect in every image under ``paths`` into ``out``; resumable. Returns the summary.

    Files already done in ``out``'s journal are skipped. Bad files are recorded and skipped; the
    summary lists them so the caller can exit 2 after finishing the good ones.
    """
    from flakehunter.registry import get_registry
    from flakehunter.tiles import iter_image_files

    files = iter_image_files(paths)
    if not files:
        raise InputError(f"{', '.join(map(str, paths))}: no image files (.tif, .tiff, .png, .jpg, .jpeg) found")
    out.mkdir(parents=True, exist_ok=True)
    registry = get_registry()
    sections = detectors or [DetectorSection(name="contrast")]
    pipeline = build_pipeline(
        registry, material, oxide_nm, detectors=sections, pixel_size_um=pixel_size_um, device=device, run_dir=out,
        flatfield=flatfield, config_dir=Path.cwd(),
    )
    started = time.monotonic()
    bad: dict[str, str] = {}
    with Journal(out / "journal.sqlite") as journal:
        saved = journal.get_state("pipeline")
        if saved:
            pipeline.load_state(saved)
        with CandidateSink(out, done_images=journal.keys(DONE)) as sink:
            analyzer = FileAnalyzer(
                out, pipeline, journal, sink, pixel_size_um=pixel_size_um,
                ownership=image_ownership(files, pixel_size_um), overlays=overlays,
            )
            analyzer.calibrate([f for f in files if not analyzer.is_done(f)])
            for path in files:
                if analyzer.is_done(path):
                    continue
                try:
                    analyzer.analyse(path)
                except InputError as exc:
                    bad[str(path)] = str(exc)
            items = {item.key: item for item in journal.items()}
            summary = {
                "files": len(files),
                "done": sum(1 for f in files if (i := items.get(FileAnalyzer.key(f))) and i.status == DONE),
                "failed": len(bad),
                "candidates": sink.count,
                "files_with_warnings": sorted(k for k, i in items.items() if i.data.get("warnings")),
                "wall_s": round(time.monotonic() - started, 2),
            }
            manifest = {
                "flakehunter_version": __version__,
                "command": "detect",
                "run_id": uuid.uuid4().hex[:12],
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
                "arguments": {
                    "paths": [str(p) for p in paths], "material": material, "oxide_nm": oxide_nm,
                    "pixel_size_um": pixel_size_um, "device": device, "flatfield": [str(p) for p in flatfield],
                    "detectors": [s.model_dump(mode="json") for s in sections],
                },
                "calibration": {
                    "material": material, "nominal_oxide_nm": oxide_nm, "detectors": pipeline.calibration_report()
                },
                "summary": summary,
                "files": [
                    {"file": k, "status": i.status, **i.data} for k, i in items.items()
                ],
            }
            write_json_atomic(out / "manifest.json", manifest)
    summary["bad_files"] = bad
    return summary
