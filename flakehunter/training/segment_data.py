"""Segmentation datasets: images with a class for every pixel, from the simulator or from people's labels.

Formats (``--format``, or recognised from the path):

``simulator``     ``flakehunter simulate dataset --task segment``: ``dataset.json`` (task ``segment``), grid images in
                  ``images/`` and class maps in ``labels/`` (0 substrate, 1-3 for 1-3L, 4 few, 5 bulk, 6 junk,
                  255 ignore), already on the analysis grid.
``label-images``  ``DATA/images/NAME.*`` with ``DATA/labels/NAME.png|tif``: pixel = layer count (0 substrate, 255
                  ignore; DESIGN.md §4), at the camera's resolution.
``coco``, ``instance-mask``   polygons, RLE or instance masks with a layer count per class
                  (`flakehunter.analysis.annotations`); pixels outside every annotation that look like bare
                  substrate are substrate, the rest is ignored.
``yolo``          boxes (Roboflow exports) as weak labels: inside a box, the pixels that stand out of the substrate
                  take the box's class and the rest is ignored; outside every box, as for COCO.

Images at the camera's resolution are averaged to the analysis grid (`segment_input`) with their pixel size:
the file's metadata, else ``pixel_size_um`` (``--set pixel_size_um=1.0``), else 1 µm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flakehunter.errors import InputError
from flakehunter.tiles import iter_image_files, read_image
from flakehunter.training.datasets import read_dataset_meta
from flakehunter.training.segment_input import (
    CLASSES,
    IGNORE,
    SUBSTRATE,
    class_fractions_to_grid,
    class_of_layers,
    classes_from_layer_image,
    contrast_grid,
)

SEGMENT_FORMATS = ("auto", "simulator", "label-images", "coco", "yolo", "instance-mask")
#: Weak labels: a pixel this many noise σ from the substrate stands out; within this many it is substrate.
STANDS_OUT_SIGMA = 4.0
SUBSTRATE_SIGMA = 2.0


@dataclass(frozen=True)
class SegmentSample:
    """One image and where its per-pixel truth comes from.

    ``labels`` is a class map on the grid (simulator) or a layer-count label image (label-images);
    ``flakes`` are annotated regions ((col, row) pixel polygons with a layer count, or None for a class of
    unknown thickness) for COCO, instance masks and YOLO (``weak`` boxes). ``pixel_size_um`` is the camera's.
    """

    image: Path
    group: str
    labels: Path | None = None
    kind: str = "classes"  # "classes" (grid class map), "layers" (layer-count label image), "flakes"
    pixel_size_um: float | None = None
    flakes: tuple[tuple[Any, int | None], ...] = ()
    weak: bool = False


@dataclass
class SegmentData:
    """Samples of the segment task (the classes are always `segment_input.CLASSES`)."""

    samples: list[SegmentSample]
    source: Path
    format: str
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    task: str = "segment"
    period_deg: float | None = None

    def class_counts(self) -> dict[str, int]:
        """Images per class do not apply to a segmentation (pixels are counted when loaded)."""
        return {}


def detect_segment_format(path: Path) -> str:
    """simulator (a dataset.json of task segment), label-images (images/ + labels/), else an annotation format."""
    if (path / "dataset.json").is_file() or path.name == "dataset.json":
        return "simulator"
    if (path / "images").is_dir() and (path / "labels").is_dir():
        if any(p.suffix.lower() == ".txt" for p in (path / "labels").iterdir()):
            return "yolo"
        return "label-images"
    from flakehunter.analysis.annotations import detect_format

    return detect_format([path])


def open_segment_dataset(path: Path, format: str = "auto", pixel_size_um: float | None = None,
                         class_layers: str | None = None) -> SegmentData:
    """Read a segmentation dataset in any supported format (InputError naming the file otherwise).

    ``class_layers`` ("0=1,bulk=none") gives annotation classes their layer counts where the class names do not
    say (`flakehunter.analysis.annotations.parse_class_layers`)."""
    path = Path(path)
    if format not in SEGMENT_FORMATS:
        raise InputError(f"--format: for --task segment expected one of {', '.join(SEGMENT_FORMATS)}, got {format!r}")
    if not path.exists():
        raise InputError(f"{path}: no such dataset file or folder")
    fmt = detect_segment_format(path) if format == "auto" else format
    if fmt == "simulator":
        samples = _read_simulator(path)
    elif fmt == "label-images":
        samples = _read_label_images(path, pixel_size_um)
    elif fmt in ("coco", "yolo", "instance-mask"):
        samples = _read_annotations(path, fmt, pixel_size_um, class_layers)
    else:
        raise InputError(f"{path}: {fmt} data cannot train a segmentation (expected {', '.join(SEGMENT_FORMATS[1:])})")
    if not samples:
        raise InputError(f"{path}: the dataset holds no labelled images")
    return SegmentData(samples, path, fmt)


def _read_simulator(path: Path) -> list[SegmentSample]:
    import csv

    meta_path, meta = read_dataset_meta(path)
    if meta.get("task") != "segment":
        raise InputError(f"{meta_path}: task: this is a {meta.get('task')!r} dataset; it does not fit --task segment")
    if list(meta.get("classes", [])) != list(CLASSES):
        raise InputError(f"{meta_path}: classes: expected {', '.join(CLASSES)}")
    root = meta_path.parent
    with (root / meta.get("labels", "labels.csv")).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [SegmentSample(root / r["path"], f"setup{r.get('setup_seed', i)}", root / r["labels"], "classes",
                          float(r["pixel_size_um"])) for i, r in enumerate(rows)]


def _read_label_images(path: Path, pixel_size_um: float | None) -> list[SegmentSample]:
    from flakehunter.analysis.evaluation import LABEL_SUFFIXES

    labels = {p.stem: p for p in (path / "labels").iterdir() if p.suffix.lower() in LABEL_SUFFIXES}
    out = []
    for image in iter_image_files([path / "images"]):
        label = labels.get(image.stem)
        if label is not None:
            out.append(SegmentSample(image, image.stem, label, "layers", pixel_size_um))
    return out


def _read_annotations(path: Path, fmt: str, pixel_size_um: float | None, class_layers: str | None
                      ) -> list[SegmentSample]:
    from flakehunter.analysis.annotations import load_annotations, parse_class_layers

    found = load_annotations([path], fmt, explicit=parse_class_layers(class_layers))
    by_image: dict[str, list[tuple[Any, int | None]]] = {key: [] for key in found.images}
    for flake in found.flakes:
        by_image.setdefault(flake.image or "", []).append((flake.polygon, flake.layers))
    out = []
    for key, image in sorted(found.images.items()):
        if image is None:
            continue
        out.append(SegmentSample(image, key, None, "flakes", pixel_size_um, tuple(by_image.get(key, [])),
                                 weak=fmt == "yolo"))
    return out


# ------------------------------------------------------------------------------------------ loading


def load_sample(sample: SegmentSample) -> tuple[np.ndarray, np.ndarray]:
    """(contrast on the grid (rows, cols, 3) float32, class map on the grid (rows, cols) uint8, 255 ignore)."""
    image, meta = read_image(sample.image)
    pixel = meta.pixel_size_um or sample.pixel_size_um
    if sample.kind == "classes":
        grid = contrast_grid(image, pixel, factor=1)  # already on the grid
        assert sample.labels is not None
        classes = _read_label(sample.labels)
    else:
        grid = contrast_grid(image, pixel)
        if sample.kind == "layers":
            assert sample.labels is not None
            full = classes_from_layer_image(_read_label(sample.labels))
        else:
            full = _rasterise(sample, grid.contrast, grid.noise, grid.factor, image.shape[:2])
        if full.shape != image.shape[:2]:
            raise InputError(f"{sample.labels or sample.image}: labels are {full.shape[1]}x{full.shape[0]} px, the "
                             f"image {image.shape[1]}x{image.shape[0]}")
        classes = class_fractions_to_grid(full, grid.factor)
    if classes.shape != grid.contrast.shape[:2]:
        raise InputError(f"{sample.labels}: labels are {classes.shape[1]}x{classes.shape[0]} px, the image "
                         f"{grid.contrast.shape[1]}x{grid.contrast.shape[0]}")
    return grid.contrast, classes


def _read_label(path: Path) -> np.ndarray:
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise InputError(f"{path}: not a readable label image")
    if label.ndim == 3:
        label = label[..., 0]
    return np.asarray(label, np.uint8)


def _rasterise(sample: SegmentSample, contrast: np.ndarray, noise: np.ndarray, factor: int,
               shape: tuple[int, int]) -> np.ndarray:
    """Annotated regions as a full-resolution class map; unannotated pixels: substrate where they look bare."""
    # Judge "looks bare" on the grid, then carry it to full resolution.
    sigma = np.maximum(noise, 1e-4)
    distance = np.sqrt(np.mean((contrast / sigma) ** 2, axis=2))
    up = cv2.resize(distance.astype(np.float32), (contrast.shape[1] * factor, contrast.shape[0] * factor),
                    interpolation=cv2.INTER_NEAREST)[: shape[0], : shape[1]]
    out = np.where(up <= SUBSTRATE_SIGMA, SUBSTRATE, IGNORE).astype(np.uint8)
    for polygon, layers in sample.flakes:
        mask = np.zeros(shape, np.uint8)
        for poly in getattr(polygon, "geoms", [polygon]):
            if poly.is_empty or poly.geom_type != "Polygon":
                continue
            ring = np.rint(np.asarray(poly.exterior.coords) * 16).astype(np.int32)
            cv2.fillPoly(mask, [ring], 1, lineType=cv2.LINE_8, shift=4)
        inside = mask > 0
        value = IGNORE if layers is None else class_of_layers(int(layers))
        if sample.weak:  # a box: only what stands out of the substrate is the flake
            out[inside] = np.where(up[inside] >= STANDS_OUT_SIGMA, value, IGNORE)
        else:
            out[inside] = value
    return out


def split_groups(data: SegmentData, val_fraction: float, seed: int) -> tuple[SegmentData, SegmentData]:
    """Hold out about ``val_fraction`` of the groups (setups, or images) for validation, seeded."""
    groups = sorted({s.group for s in data.samples})
    if len(groups) < 2:
        raise InputError(f"{data.source}: too few images to hold out a validation set; give --val PATH")
    rng = np.random.default_rng([seed, 1])
    n_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    held = {groups[i] for i in rng.permutation(len(groups))[:n_val]}
    train = [s for s in data.samples if s.group not in held]
    val = [s for s in data.samples if s.group in held]
    return (SegmentData(train, data.source, data.format, data.classes),
            SegmentData(val, data.source, data.format, data.classes))
