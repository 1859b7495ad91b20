"""`write_report`: ``RUN_DIR/report/`` for a scan, detect or watch run, in one pass over its images.

Each image that holds candidates or belongs on the overview is read once (threads, so that decoding
and resizing overlap): its candidates' crops are written at once and a downsampled copy is kept for
the mosaic, so memory holds the mosaic, never the tiles. The report is built in a hidden folder beside
``report/`` and swapped in at the end, so a reader sees the old report or the new one, never half.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flakehunter.candidates import Candidate
from flakehunter.errors import InputError
from flakehunter.image_decode import ImageFormatError
from flakehunter.image_windows import LARGE_IMAGE_PX, WindowedTiff
from flakehunter.report import files
from flakehunter.report.crops import candidate_crop, gradcam_thumbnail
from flakehunter.report.html import PageParts, render
from flakehunter.report.mosaic import (
    Georef,
    Mosaic,
    Placement,
    draw_marks,
    encode,
    nice_scale_um,
    plan_georef,
    scale_label,
)
from flakehunter.report.plots import candidates_png
from flakehunter.report.rundata import ImageInfo, RunData, load_run, resolve
from flakehunter.report.style import class_order, colour_rgb
from flakehunter.tiles import ImageMeta, read_image, read_pixels

#: Crops written at most, for the best-scoring candidates (~5 KB each); the others get a card without one,
#: so that a wafer with tens of thousands of candidates still has a report of bounded size.
MAX_CROPS = 5000
#: Evaluation pictures shown at most (evaluate-model --gradcam can leave hundreds; they stay in evaluation/).
MAX_EVALUATION_PICTURES = 40


@dataclass
class _Done:
    info: ImageInfo
    small: np.ndarray | None = None
    placement: Placement | None = None
    dtype: Any = None
    error: str | None = None


def write_report(
    run_dir: str | Path, *, overview_max_px: int = 2000, workers: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Write ``RUN_DIR/report/`` (overview, crops, index.html) and return the path of its index.html.

    ``overview_max_px`` bounds the overview's long side; ``workers`` the threads reading images (default:
    the CPU count, at most 8). Raises `InputError` when ``run_dir`` holds no candidates file.
    """
    if overview_max_px < 64:
        raise InputError(f"--overview-px: expected at least 64 pixels, got {overview_max_px}")
    t0 = time.perf_counter()
    data = load_run(run_dir)
    final = data.run.report
    _remove_abandoned(data.run.path)
    build = data.run.path / f".report.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    build.mkdir()
    try:
        parts = _build(data, build, overview_max_px, workers or min(8, os.cpu_count() or 1))
        (build / files.INDEX).write_text(render(data, parts), encoding="utf-8")
        _swap_in(build, final)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    if echo is not None:
        echo(f"Report of {len(data.candidates)} candidates in {time.perf_counter() - t0:.1f} s: {final / files.INDEX}")
    return final / files.INDEX


def _build(data: RunData, out: Path, overview_max_px: int, workers: int) -> PageParts:
    # The plot (matplotlib: Python, holding the GIL) is drawn while the images are read and shrunk and the
    # overview is composed (I/O and OpenCV, which release it).
    with ThreadPoolExecutor(max_workers=1) as plotter:
        plot = plotter.submit(candidates_png, out / files.CANDIDATES_PLOT, data.candidates)
        parts = _build_pages(data, out, overview_max_px, workers)
        if plot.result() is not None:
            parts.plot = files.CANDIDATES_PLOT
    return parts


def _build_pages(data: RunData, out: Path, overview_max_px: int, workers: int) -> PageParts:
    (out / files.CROPS).mkdir()
    by_image: dict[str, list[Candidate]] = defaultdict(list)
    best = sorted(data.candidates, key=lambda c: (-c.score, c.id))[:MAX_CROPS]
    for c in best:
        by_image[c.image].append(c)
    images = list(data.images)
    known = {i.key for i in images}
    images += [ImageInfo(key=k, path=resolve(data.run.path, k), pixel_size_um=_pixel(data, None))
               for k in by_image if k not in known]
    placements = {i.key: p for i in images if (p := _placement(data, i)) is not None}
    georef = plan_georef(placements.values(), overview_max_px)
    mosaic = Mosaic(georef) if georef is not None else None
    work = [i for i in images if i.key in by_image or (mosaic is not None and i.key in placements)]

    def process(info: ImageInfo) -> _Done:
        return _process(data, info, by_image.get(info.key, []), mosaic, placements.get(info.key), out)

    unreadable: dict[str, str] = {}
    crops: set[int] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in pool.map(process, work):
            if done.error is not None:
                unreadable[done.info.key] = done.error
                continue
            crops.update(c.id for c in by_image.get(done.info.key, []))
            if mosaic is not None and done.small is not None and done.placement is not None:
                mosaic.add(done.small, done.placement, done.dtype)
    gradcams = _gradcams(data, out)
    parts = PageParts(candidates=[], unreadable=unreadable)
    if mosaic is not None and georef is not None:
        parts.overview = _write_overview(data, mosaic, georef, out)
        parts.flat_field = mosaic.flat_field
    else:
        parts.no_overview = _why_no_overview(data)
    parts.candidates = [_page_entry(c, georef, c.id in crops, c.id in gradcams) for c in data.candidates]
    parts.evaluation = _copy_evaluation(data, out)
    return parts


def _pixel(data: RunData, info: ImageInfo | None) -> float | None:
    if info is not None and info.pixel_size_um:
        return info.pixel_size_um
    return data.transform.pixel_size_um if data.transform else None


def _placement(data: RunData, info: ImageInfo) -> Placement | None:
    """Where an image goes on the overview, when its position, pixel size and size are known."""
    if not info.positioned or not info.pixel_size_um:
        return None
    shape = info.shape or _plan_shape(data)
    transform = data.transform_for(info)
    if shape is None or transform is None:
        return None
    return Placement((float(info.x_um), float(info.y_um)), shape, transform)  # type: ignore[arg-type]


def _plan_shape(data: RunData) -> tuple[int, int] | None:
    """A scan's camera frame (rows, cols) from its plan, so tiles need not be opened to plan the overview."""
    shape = (((data.manifest or {}).get("inputs") or {}).get("plan") or {}).get("camera_shape")
    return (int(shape[0]), int(shape[1])) if shape else None


def _process(
    data: RunData, info: ImageInfo, candidates: list[Candidate], mosaic: Mosaic | None, placement: Placement | None,
    out: Path,
) -> _Done:
    """Read one image: write its candidates' crops and shrink it for the overview."""
    try:
        pixels, meta = read_pixels(info.path, LARGE_IMAGE_PX)
        if isinstance(pixels, np.ndarray):
            return _crops_and_small(data, info, candidates, mosaic, placement, out, pixels, meta)
        with pixels:  # a large TIFF: crops and the overview's copy are read a window at a time
            return _crops_and_small(data, info, candidates, mosaic, placement, out, pixels, meta)
    except InputError as exc:
        return _Done(info, error=str(exc).removeprefix(f"{info.path}: "))
    except ImageFormatError as exc:  # a corrupt strip or tile met while reading a window
        return _Done(info, error=f"not a readable image ({exc})")


def _crops_and_small(
    data: RunData, info: ImageInfo, candidates: list[Candidate], mosaic: Mosaic | None, placement: Placement | None,
    out: Path, image: np.ndarray | WindowedTiff, meta: ImageMeta,
) -> _Done:
    pixel = info.pixel_size_um or meta.pixel_size_um or _pixel(data, None)
    transform = data.transform_for(info)
    for c in candidates:
        rgb = colour_rgb(c.layer_class)
        (out / files.crop_name(c.id)).write_bytes(candidate_crop(image, c, pixel, transform, rgb))
    if mosaic is None or placement is None:
        return _Done(info)
    shape = (int(image.shape[0]), int(image.shape[1]))
    if shape != placement.shape:  # the plan's frame size was a guess; the file decides
        placement = Placement(placement.centre_um, shape, placement.transform)
    from flakehunter.report.mosaic import downsample

    factor = mosaic.factor(placement)
    if isinstance(image, np.ndarray):
        return _Done(info, downsample(image, factor), placement, image.dtype)
    whole = max(1, int(factor))  # shrink by a whole factor while reading, the rest as any image
    return _Done(info, downsample(image.reduced(whole), factor / whole), placement, image.dtype)


def _gradcams(data: RunData, out: Path) -> set[int]:
    """Thumbnails of the Grad-CAM pictures detectors left (a ``gradcam`` path per candidate record)."""
    done = set()
    for cid, extra in data.extras.items():
        name = extra.get("gradcam")
        if not isinstance(name, str) or not name:
            continue
        try:
            image, _ = read_image(resolve(data.run.path, name))
        except InputError:
            continue
        (out / files.GRADCAM).mkdir(exist_ok=True)
        (out / files.gradcam_name(cid)).write_bytes(gradcam_thumbnail(image))
        done.add(cid)
    return done


def _write_overview(data: RunData, mosaic: Mosaic, georef: Georef, out: Path) -> dict[str, Any]:
    overview = mosaic.compose()
    (out / files.OVERVIEW_BASE).write_bytes(encode(overview, ".jpg", 90))
    marks = [(c.x_um, c.y_um, c.equivalent_diameter_um / 2, colour_rgb(c.layer_class))
             for c in data.candidates if c.positioned]
    counts: dict[str, int] = defaultdict(int)
    for c in data.candidates:
        counts[c.layer_class] += 1
    legend = [(cls, colour_rgb(cls), counts[cls]) for cls in class_order(set(counts))]
    (out / files.OVERVIEW_PNG).write_bytes(encode(draw_marks(overview, georef, marks, legend), ".png"))
    (out / files.OVERVIEW_JSON).write_text(json.dumps({**georef.to_dict(), "flat_field": mosaic.flat_field},
                                                      indent=2), encoding="utf-8")
    scale = nice_scale_um(georef.cols * georef.um_per_px)
    return {"image": files.OVERVIEW_BASE, "rows": georef.rows, "cols": georef.cols, "um_per_px": georef.um_per_px,
            "scale_um": scale, "scale_label": scale_label(scale)}


def _why_no_overview(data: RunData) -> str:
    if not any(i.positioned for i in data.images):
        return (f"No overview: the images of this {data.kind} run carry no stage positions, so the candidates "
                "are shown as a gallery only.")
    return "No overview: no image had both a stage position and a pixel size."


def _page_entry(c: Candidate, georef: Georef | None, has_crop: bool, has_gradcam: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": c.id, "cls": c.layer_class, "layers": c.layers, "score": c.score, "area": c.area_um2,
        "x": c.x_um, "y": c.y_um, "positioned": c.positioned, "axis": c.orientation_deg,
        "image": Path(c.image).name, "detector": c.detector,
        "crop": files.crop_name(c.id) if has_crop else None,
        "gradcam": files.gradcam_name(c.id) if has_gradcam else None, "marker": None, "radius": None,
    }
    if georef is not None and c.positioned:
        row, col = georef.to_px(c.x_um, c.y_um)
        entry["marker"] = [round(float(row), 2), round(float(col), 2)]
        radius_px = c.equivalent_diameter_um / 2 / georef.um_per_px
        entry["radius"] = round(max(radius_px + 3, 0.006 * max(georef.rows, georef.cols), 4.0), 2)
    return entry


def _copy_evaluation(data: RunData, out: Path) -> list[str]:
    """Copy RUN_DIR/evaluation/*.png and one folder down (evaluate-model's output) into report/evaluation/."""
    source = data.run.evaluation
    if not source.is_dir():
        return []
    found = sorted(p for p in [*source.glob("*.png"), *source.glob("*/*.png")] if "gradcam" not in p.parts[-2:-1])
    names = []
    for path in found[:MAX_EVALUATION_PICTURES]:
        rel = path.relative_to(source)
        target = out / files.EVALUATION / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        names.append(f"{files.EVALUATION}/{rel.as_posix()}")
    return names


def _swap_in(build: Path, final: Path) -> None:
    """Replace ``final`` by ``build`` with two renames; the old report is removed afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(build, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_abandoned(run_path: Path) -> None:
    """Remove half-built reports of processes that died while building them."""
    for path in run_path.glob(".report.*-*-*"):
        try:
            pid = int(path.name.split("-")[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
