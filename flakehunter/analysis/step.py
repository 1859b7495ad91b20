"""The one analysis step: images in, owned and de-duplicated candidates and durable journal state out.

``scan``, ``detect`` and ``watch`` all hand their images to an `AnalysisStep`, keyed by the journal key
(a tile's path relative to the run directory, or a file's absolute path). For every image the step

1. reads it (unless the caller has it in memory), refuses what cannot be analysed (unreadable, no
   pixel size, larger than the memory budget, no finite pixel) and replaces non-finite pixels;
2. holds the first images of a run until the detectors have calibrated on them, and saves that
   calibration durably before any image counts as done, so every mode analyses with the same
   calibration and a resume reproduces it;
3. runs the detector pipeline (several images per call where a detector batches; an image larger
   than the analysis window is analysed in overlapping windows, and a large TIFF is read a window at a
   time (`flakehunter.image_windows`), so memory grows with the window, not with the image);
4. maps detections to stage µm, keeps those this image owns where images overlap, appends them
   durably, and only then marks the image done in the journal together with the detectors' state.

A bad image is recorded as failed with its reason and the step goes on; a failure to write the run's
own output (disk full) stops the run with a `RuntimeFailure` naming the file.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flakehunter.analysis.detector import Detection
from flakehunter.analysis.localise import bbox_polygon, to_candidates
from flakehunter.analysis.pipeline import DetectionPipeline
from flakehunter.analysis.windows import Window, add_window, windows
from flakehunter.candidates import Candidate
from flakehunter.errors import InputError, RuntimeFailure
from flakehunter.geometry import PixelTransform, TileOwnership
from flakehunter.image_decode import ImageFormatError
from flakehunter.image_windows import LARGE_IMAGE_PX, WindowedTiff
from flakehunter.journal import DONE, FAILED, Journal
from flakehunter.run.candidate_writer import CandidateWriter
from flakehunter.run.layout import output_error
from flakehunter.tiles import ImageMeta

log = logging.getLogger(__name__)

#: Images read whole (not windowed TIFFs) with more megapixels than this are refused; the variable raises it.
DEFAULT_MAX_IMAGE_MP = 400.0
MAX_IMAGE_MP_VARIABLE = "FLAKEHUNTER_MAX_IMAGE_MP"

#: Flag a detector sets on an image softer than the run's sharpest; a scan retakes such a tile once.
OUT_OF_FOCUS = "out_of_focus"


@dataclass
class AnalysisInput:
    """One image handed to the step.

    Attributes:
        key: the journal key, also the candidates' ``image`` column.
        path: where to read the image when ``image`` is None (and where overlays name it from).
        image: the pixels, when the caller has them (a freshly acquired tile).
        meta: its metadata, when the caller has it (required with ``image``).
        tile: the scan tile index, for the candidates' ``tile`` column.
        retake_allowed: an out-of-focus result is deferred (nothing written) so the scan can retake it.
    """

    key: str
    path: Path | None = None
    image: np.ndarray | None = None
    meta: ImageMeta | None = None
    tile: int | None = None
    retake_allowed: bool = False


@dataclass
class AnalysisResult:
    """What became of one image: ``done`` (candidates written), ``failed`` (bad input) or ``deferred``."""

    key: str
    status: Literal["done", "failed", "deferred"]
    candidates: list[Candidate] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    seconds: float = 0.0
    error: str | None = None
    position_source: str = "none"
    tile: int | None = None


@dataclass
class _Loaded:
    item: AnalysisInput
    image: np.ndarray | None  # None: too large to hold while waiting, or windowed; read from item.path
    meta: ImageMeta
    warnings: list[str]
    seconds: float
    shape: tuple[int, int] = (0, 0)
    windowed: bool = False  # a large TIFF read a window at a time, never whole


class AnalysisStep:
    """Turns (image, metadata, key) into owned, de-duplicated candidates and journal state.

    Args:
        pipeline: the detectors, from `flakehunter.analysis.pipeline.build_pipeline`.
        journal: the run's journal; the step marks images done or failed and saves detector state.
        writer: the run's candidate writer.
        transform: pixel -> stage transform of every image (a scan's calibrated optics); None: each
            image's own pixel size (from its metadata, else ``pixel_size_um``), no rotation.
        pixel_size_um: fallback pixel size for files whose metadata has none.
        ownership: which overlapping image reports a flake (keyed by the journal key).
        overlays: folder for PNGs of each image with its candidates drawn, or None.
        on_candidate: called with every candidate written (lifecycle hooks).
        max_image_megapixels: larger images are refused with a clear message, unless they are TIFFs read
            a window at a time (their memory does not grow with their size); None: the environment's
            ``FLAKEHUNTER_MAX_IMAGE_MP``, else 400.
        window_px: images larger than this on a side are analysed in overlapping windows.
    """

    def __init__(
        self,
        pipeline: DetectionPipeline,
        journal: Journal,
        writer: CandidateWriter,
        *,
        transform: PixelTransform | None = None,
        pixel_size_um: float | None = None,
        ownership: TileOwnership | None = None,
        overlays: Path | None = None,
        on_candidate: Callable[[Candidate], None] | None = None,
        max_image_megapixels: float | None = None,
        window_px: int = LARGE_IMAGE_PX,
        window_overlap_px: int = 384,
    ) -> None:
        self.pipeline = pipeline
        self.journal = journal
        self.writer = writer
        self.transform = transform
        self.pixel_size_um = pixel_size_um
        self.ownership = ownership
        self.overlays = overlays
        self.on_candidate = on_candidate
        self.max_image_megapixels = max_image_megapixels or image_megapixel_limit()
        self.window_px = window_px
        self.window_overlap_px = window_overlap_px
        self.material = pipeline.context.material
        self.detect_s = 0.0
        self._held: list[_Loaded] = []  # waiting for calibration
        self._batch: list[_Loaded] = []  # waiting for a full batch
        saved = journal.get_state("pipeline")
        if saved:
            pipeline.load_state(saved)
        self._calibrating = pipeline.needs_calibration()

    # -- feeding ------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Images accepted but not yet analysed (held for calibration or for a batch)."""
        return len(self._held) + len(self._batch)

    @property
    def calibrating(self) -> bool:
        return self._calibrating

    def is_done(self, key: str) -> bool:
        item = self.journal.get(key)
        return item is not None and item.status == DONE

    def submit(self, item: AnalysisInput) -> list[AnalysisResult]:
        """Accept one image; returns the results of whatever got analysed now (maybe none, maybe several)."""
        try:
            loaded = self._load(item)
        except InputError as exc:
            return [self._fail(item, str(exc), 0.0)]
        if self._calibrating:
            self._held.append(self._keep_or_drop_pixels(loaded))
            if len(self._held) < self.pipeline.calibration_images:
                return []
            return self._calibrate_and_release()
        self._batch.append(loaded)
        if len(self._batch) < self.pipeline.batch_size:
            return []
        return self._run_batch()

    def flush(self) -> list[AnalysisResult]:
        """Analyse everything accepted: calibrate on the held images if fewer came than wanted."""
        results = self._calibrate_and_release() if self._held else []
        if self._batch:
            results += self._run_batch()
        return results

    def analyse(self, items: Sequence[AnalysisInput]) -> list[AnalysisResult]:
        """Submit ``items`` and flush: every result, for callers that have all their images at hand."""
        results = []
        for item in items:
            results += self.submit(item)
        return results + self.flush()

    # -- loading ------------------------------------------------------------------------------------
    def _load(self, item: AnalysisInput) -> _Loaded:
        from flakehunter.tiles import read_pixels

        t0 = time.perf_counter()
        if item.image is None:
            if item.path is None:
                raise InputError(f"{item.key}: no image and no path")
            path = item.path
            # Refused on the size its header gives, before its pixels are decoded.
            pixels, meta = read_pixels(path, self.window_px, lambda shape: self._check_size(shape, path))
            if not isinstance(pixels, np.ndarray):
                with pixels:  # a large TIFF, read a window at a time when it is analysed
                    self._check_pixel_size(meta, path)
                    shape = (int(pixels.shape[0]), int(pixels.shape[1]))
                return _Loaded(item, None, meta, [], time.perf_counter() - t0, shape, windowed=True)
            image = pixels
        else:
            image, meta = item.image, item.meta or ImageMeta()
        where = item.path or item.key
        self._check_size(image.shape[:2], where)
        self._check_pixel_size(meta, where)
        image, warnings = _finite(image, where)
        shape = (int(image.shape[0]), int(image.shape[1]))
        return _Loaded(item, image, meta, warnings, time.perf_counter() - t0, shape)

    def _check_size(self, shape: tuple[int, ...], where: object) -> None:
        rows, cols = int(shape[0]), int(shape[1])
        megapixels = rows * cols / 1e6
        if megapixels > self.max_image_megapixels:
            raise InputError(
                f"{where}: {cols}x{rows} px ({megapixels:.0f} MP) is more than the "
                f"{self.max_image_megapixels:g} MP an image may have; split it or raise the limit "
                f"({MAX_IMAGE_MP_VARIABLE}=MEGAPIXELS)"
            )

    def _check_pixel_size(self, meta: ImageMeta, where: object) -> None:
        if self.transform is None and (meta.pixel_size_um or self.pixel_size_um) is None:
            raise InputError(f"{where}: no pixel size in the file's metadata; pass --pixel-size-um")

    def _keep_or_drop_pixels(self, loaded: _Loaded) -> _Loaded:
        # A huge image waiting for calibration is read again later rather than held in memory.
        if loaded.item.path is not None and loaded.image is not None and loaded.image.size > 3 * self.window_px**2:
            loaded.image = None
        return loaded

    def _pixels(self, loaded: _Loaded) -> np.ndarray:
        if loaded.image is not None:
            return loaded.image
        from flakehunter.tiles import read_image

        assert loaded.item.path is not None
        image, _ = read_image(loaded.item.path)
        return _finite(image, loaded.item.path)[0]

    # -- calibration --------------------------------------------------------------------------------
    def _calibrate_and_release(self) -> list[AnalysisResult]:
        held, self._held = self._held, []
        samples = []
        for loaded in held:
            try:
                window = self._calibration_window(loaded)
            except InputError:
                continue  # gone or changed since; its own analysis reports it
            samples.append((window, _fresh(loaded.meta)))
        samples = _same_kind(samples)
        if samples and self.pipeline.needs_calibration():
            try:
                reports = self.pipeline.calibrate(samples)
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as exc:  # a detector that cannot calibrate on these images calibrates as it goes
                log.warning("calibration on %d image(s) failed (%s: %s); the detectors calibrate as images come",
                            len(samples), type(exc).__name__, exc)
            else:
                self._durable(lambda: self.journal.put_state("pipeline", self.pipeline.state()))
                log.info("calibrated on %d image(s): %s", len(samples), reports)
        del samples
        self._calibrating = False
        results: list[AnalysisResult] = []
        for loaded in held:
            self._batch.append(loaded)
            if len(self._batch) >= self.pipeline.batch_size:
                results += self._run_batch()
        return results

    def _calibration_window(self, loaded: _Loaded) -> np.ndarray:
        """The image, or its central analysis window when it is larger than one."""
        rows, cols = loaded.shape
        r0, c0 = max((rows - self.window_px) // 2, 0), max((cols - self.window_px) // 2, 0)
        r1, c1 = min(r0 + self.window_px, rows), min(c0 + self.window_px, cols)
        if not loaded.windowed:
            image = self._pixels(loaded)
            return image if (r0, c0, r1, c1) == (0, 0, rows, cols) else image[r0:r1, c0:c1]
        with self._windows_of(loaded) as source:
            window, _ = _finite(source.read(r0, c0, r1, c1), loaded.item.path)
        return window

    def _windows_of(self, loaded: _Loaded) -> WindowedTiff:
        """The windowed TIFF of ``loaded``, opened again (InputError if it is gone or no longer windowed)."""
        from flakehunter.tiles import open_windows

        assert loaded.item.path is not None
        source = open_windows(loaded.item.path)
        if source is None or tuple(source.shape[:2]) != loaded.shape:
            if source is not None:
                source.close()
            raise InputError(f"{loaded.item.path}: changed while it waited to be analysed")
        return source

    # -- analysis -----------------------------------------------------------------------------------
    def _run_batch(self) -> list[AnalysisResult]:
        batch, self._batch = self._batch, []
        return self._analyse_batch(batch)

    def _analyse_batch(self, batch: list[_Loaded]) -> list[AnalysisResult]:
        results: list[AnalysisResult] = []
        ready = []
        for loaded in batch:  # pixels dropped while waiting for calibration are read again now
            try:
                if not loaded.windowed:
                    loaded.image = self._pixels(loaded)
                ready.append(loaded)
            except InputError as exc:
                results.append(self._fail(loaded.item, str(exc), loaded.seconds))
        batch = ready
        while batch:
            snapshot = _copy_state(self.pipeline.state())
            try:
                found = self._detect(batch)
            except _DetectorFailure as failure:
                self.pipeline.load_state(snapshot)  # whatever the detectors learnt from a failing image, forget it
                if len(batch) > 1:  # find the image that fails; analyse the others
                    for loaded in batch:
                        results += self._analyse_batch([loaded])
                    return results
                cause = failure.__cause__
                where = batch[0].item.path or batch[0].item.key
                reason = failure.reason or f"{where}: analysis failed ({type(cause).__name__}: {cause})"
                results.append(self._fail(batch[0].item, reason, batch[0].seconds))
                return results
            deferred = [
                i for i, (loaded, (_, meta, _)) in enumerate(zip(batch, found, strict=True))
                if loaded.item.retake_allowed and OUT_OF_FOCUS in meta.flags
            ]
            if not deferred:
                for loaded, (detections, meta, seconds) in zip(batch, found, strict=True):
                    results.append(self._finish(loaded, detections, meta, seconds))
                return results
            # A soft tile to be retaken must leave no trace: undo what the detectors learnt from this
            # batch and analyse the others again without it.
            self.pipeline.load_state(snapshot)
            for i in reversed(deferred):
                loaded = batch.pop(i)
                meta = found[i][1]
                results.append(AnalysisResult(
                    loaded.item.key, "deferred", warnings=[*loaded.warnings, *meta.warnings],
                    flags=set(meta.flags), tile=loaded.item.tile,
                ))
        return results

    def _detect(self, batch: list[_Loaded]) -> list[tuple[list[Detection], ImageMeta, float]]:
        """The pipeline over a batch (large images in windows): detections, metadata and seconds per image."""
        images: list[np.ndarray] = []
        metas: list[ImageMeta] = []
        owners: list[tuple[int, Window, tuple[int, int]]] = []
        t0 = time.perf_counter()
        for n, loaded in enumerate(batch):
            if loaded.windowed:
                continue  # read and analysed a window at a time below
            assert loaded.image is not None
            shape = loaded.shape
            for window in windows(shape, self.window_px, self.window_overlap_px):
                r0, c0, r1, c1 = window[0]
                images.append(loaded.image[r0:r1, c0:c1] if (r1 - r0, c1 - c0) != shape else loaded.image)
                metas.append(_fresh(loaded.meta))
                owners.append((n, window, shape))
        found = self._run_pipeline(images, metas) if images else []
        out: list[tuple[list[Detection], ImageMeta, float]] = [([], _fresh(loaded.meta), 0.0) for loaded in batch]
        for (n, window, shape), dets, meta in zip(owners, found, metas, strict=True):
            add_window(out[n], dets, meta, window, shape)
        for n, loaded in enumerate(batch):
            if loaded.windowed:
                self._detect_windowed(loaded, out[n])
        per_image = (time.perf_counter() - t0) / len(batch)
        return [(dets, meta, per_image + loaded.seconds) for (dets, meta, _), loaded in zip(out, batch, strict=True)]

    def _detect_windowed(self, loaded: _Loaded, into: tuple[list[Detection], ImageMeta, float]) -> None:
        """The pipeline over a large TIFF, one window read, analysed and let go at a time."""
        where = loaded.item.path
        non_finite, analysed = 0, 0
        try:
            source = self._windows_of(loaded)
        except InputError as exc:
            raise _DetectorFailure(str(exc)) from exc
        with source:
            for window in windows(loaded.shape, self.window_px, self.window_overlap_px):
                try:
                    pixels = source.read(*window[0])
                except ImageFormatError as exc:  # a corrupt strip or tile
                    raise _DetectorFailure(f"{where}: not a readable image ({exc})") from exc
                if np.issubdtype(pixels.dtype, np.floating):
                    bad = int((~np.isfinite(pixels)).sum())
                    non_finite += bad
                    if bad == pixels.size:
                        continue  # nothing to analyse in this window
                    pixels, _ = _finite(pixels, where)
                meta = _fresh(loaded.meta)
                add_window(into, self._run_pipeline([pixels], [meta])[0], meta, window, loaded.shape)
                analysed += 1
        if not analysed:
            raise _DetectorFailure(f"{where}: no finite pixel (all NaN or inf)")
        if non_finite:
            into[1].warnings.append(f"{non_finite} NaN/inf pixel value(s) replaced by the median of their window")

    def _run_pipeline(self, images: list[np.ndarray], metas: list[ImageMeta]) -> list[list[Detection]]:
        try:
            return self.pipeline.run_batch(images, metas)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise _DetectorFailure() from exc

    def _finish(self, loaded: _Loaded, detections: list[Detection], meta: ImageMeta, seconds: float) -> AnalysisResult:
        item = loaded.item
        image_shape = loaded.shape
        t0 = time.perf_counter()
        positioned = meta.x_um is not None and meta.y_um is not None
        centre = (float(meta.x_um), float(meta.y_um)) if positioned else (0.0, 0.0)  # type: ignore[arg-type]
        pixel_size = meta.pixel_size_um or self.pixel_size_um
        transform = self.transform or PixelTransform(float(pixel_size))  # type: ignore[arg-type]
        candidates = to_candidates(
            detections, image=item.key, shape=image_shape, centre_um=centre, transform=transform,
            material=self.material.name, z_um=meta.z_um, tile=item.tile, positioned=positioned,
            orientation_period_deg=self.material.edge_symmetry_deg,
        )
        if positioned and self.ownership is not None:
            # Overlapping images: report each flake from the image that sees it whole.
            keep = [
                self.ownership.keeps(item.key, c.x_um, c.y_um, bbox_polygon(d.bbox, transform, centre, image_shape))
                for d, c in zip(detections, candidates, strict=True)
            ]
            detections = [d for d, k in zip(detections, keep, strict=True) if k]
            candidates = [c for c, k in zip(candidates, keep, strict=True) if k]
        try:
            written = self.writer.add(candidates)
        except OSError as exc:
            raise output_error(self.writer.jsonl_path, exc) from exc
        warnings = [*loaded.warnings, *meta.warnings]
        source = meta.source if positioned else "none"
        seconds += time.perf_counter() - t0
        self.detect_s += seconds
        data: dict[str, Any] = {
            "candidates": len(written), "seconds": round(seconds, 4), "warnings": warnings or None,
            "position_source": source, "pixel_size_um": pixel_size, "error": None,
        }
        if meta.flags:
            data["flags"] = sorted(meta.flags)

        def mark() -> None:
            with self.journal.transaction():
                self.journal.set(item.key, DONE, **data)
                self.journal.put_state("pipeline", self.pipeline.state())

        self._durable(mark)
        if self.overlays is not None:
            self._overlay(loaded, detections, candidates, written)
        if self.on_candidate is not None:
            for c in written:
                self.on_candidate(c)
        return AnalysisResult(item.key, "done", written, detections, warnings, set(meta.flags), seconds,
                              position_source=source, tile=item.tile)

    def _overlay(self, loaded: _Loaded, detections: list[Detection], candidates: list[Candidate],
                 written: list[Candidate]) -> None:
        from flakehunter.analysis.overlay import OVERLAY_SIDE_PX, save_overlay

        assert self.overlays is not None
        ids = {id(c): c.id for c in written}
        labels = [f"#{ids.get(id(c), '-')} {c.layer_class} {c.score:.2f}" for c in candidates]
        name = (loaded.item.path or Path(loaded.item.key)).stem
        try:
            if loaded.windowed:  # drawn on the image shrunk while it is read, as the PNG is shrunk anyway
                factor = max(1, -(-max(loaded.shape) // OVERLAY_SIDE_PX))
                with self._windows_of(loaded) as source:
                    preview, _ = _finite(source.reduced(factor), loaded.item.path)
                save_overlay(self.overlays / f"{name}.png", preview, detections, labels, scale=1 / factor)
            else:
                assert loaded.image is not None
                save_overlay(self.overlays / f"{name}.png", loaded.image, detections, labels)
        except InputError as exc:
            log.warning("%s; no overlay drawn", exc)
        except OSError as exc:
            raise output_error(self.overlays / f"{name}.png", exc) from exc

    def _fail(self, item: AnalysisInput, reason: str, seconds: float) -> AnalysisResult:
        self._durable(lambda: self.journal.set(item.key, FAILED, error=reason))
        log.info("%s", reason)  # the caller reports it (detect's last lines, watch's retry and quarantine)
        return AnalysisResult(item.key, "failed", seconds=seconds, error=reason, tile=item.tile)

    def _durable(self, write: Callable[[], None]) -> None:
        try:
            write()
        except sqlite3.Error as exc:
            raise RuntimeFailure(f"{self.journal.path}: cannot write ({exc})") from exc
        except OSError as exc:
            raise output_error(self.journal.path, exc) from exc


def image_megapixel_limit() -> float:
    """The largest image read whole, in megapixels: ``FLAKEHUNTER_MAX_IMAGE_MP``, else 400. A bad value is
    an ``InputError``; the commands ask before they write anything."""
    import math
    import os

    raw = os.environ.get(MAX_IMAGE_MP_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_MP
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{MAX_IMAGE_MP_VARIABLE}: expected a positive number of megapixels, got {raw[:80]!r}")
    return value


class _DetectorFailure(Exception):
    """A detector raised on one image, or a windowed image could not be read (``reason`` says why)."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason


def _fresh(meta: ImageMeta) -> ImageMeta:
    """A copy of ``meta`` with its own (empty) warnings and flags, for one pass of the detectors."""
    return dataclasses.replace(meta, warnings=[], flags=set())


def _same_kind(samples: list[tuple[np.ndarray, ImageMeta]]) -> list[tuple[np.ndarray, ImageMeta]]:
    """The samples of the most common kind (channels and shape), first come first: a grayscale image among
    colour ones, or a stray image of another camera, must not decide the calibration."""
    def kind(image: np.ndarray) -> tuple[int, ...]:
        return (image.shape[2] if image.ndim == 3 else 1, *image.shape[:2])

    counts: dict[tuple[int, ...], int] = {}
    for image, _ in samples:
        counts[kind(image)] = counts.get(kind(image), 0) + 1
    if len(counts) <= 1:
        return samples
    best = max(counts, key=lambda k: (counts[k], -next(i for i, (im, _) in enumerate(samples) if kind(im) == k)))
    return [(image, meta) for image, meta in samples if kind(image) == best]


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.copy() if isinstance(v, np.ndarray) else copy.deepcopy(v)) for k, v in state.items()}


def _finite(image: np.ndarray, where: object) -> tuple[np.ndarray, list[str]]:
    """``image`` with NaN and inf pixels replaced by the median of the finite ones, and a warning saying so."""
    if not np.issubdtype(image.dtype, np.floating):
        return image, []
    bad = ~np.isfinite(image)
    count = int(bad.sum())
    if count == 0:
        return image, []
    if count == bad.size:
        raise InputError(f"{where}: no finite pixel (all NaN or inf)")
    image = image.copy()
    image[bad] = np.median(image[~bad])
    return image, [f"{count} NaN/inf pixel value(s) replaced by the image's median"]
