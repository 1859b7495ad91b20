"""Dataset formats for training and evaluation, each read into a list of `Sample`.

Formats (``--format``, or recognised automatically from the path):

``imagefolder``  a folder of class subfolders: ``DATA/coarse/*.png``, ``DATA/fine/*.png`` (images found
                 recursively inside each class folder; classes are the folder names).
``csv``          a CSV file whose first column (or a column called ``path``) holds image paths relative
                 to the CSV's folder, and another column the label (``--label-column``, default the
                 second column): ``path,primary_microconstituent``. For ``--task angle`` the label is θ.
``axis``         the crystal-axis CSV ``basename, axis_angle, count``: ``count`` pre-augmented copies of
                 each picture are named ``basename-n.tif`` (or .tiff/.jpg/.jpeg/.png), n = 0..count−1 or
                 1..count; every copy carries the row's angle, and the copies of one picture are kept
                 on one side of a train/validation split.
``label-images`` ``DATA/images/NAME.*`` with ``DATA/labels/NAME.png|tif`` the same size, whose pixel value
                 is the layer count (0 substrate, 255 ignore; DESIGN.md §4). Each connected region of
                 one layer count becomes a sample: a crop centred on the region's innermost pixel,
                 labelled ``"{n}L"``.
``simulator``    a folder written by ``flakehunter simulate dataset``: ``dataset.json`` names its task,
                 classes or angle period, and its ``labels.csv``.

A folder holding exactly one CSV file is read as that CSV. Angles follow `angles`' convention (from +col
towards +row) and are reduced modulo the period.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flakehunter.errors import InputError
from flakehunter.tiles import IMAGE_SUFFIXES, iter_image_files, read_image

FORMATS = ("auto", "imagefolder", "csv", "axis", "label-images", "simulator")
TASKS = ("classify", "angle")
DATASET_FORMAT = "flakehunter.dataset"
_AXIS_COLUMNS = ("basename", "axis_angle", "count")
_SIM_TASKS = {"thickness": "classify", "axis": "angle", "microstructure": "classify"}


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    ``target`` is the class index (classify) or θ in degrees modulo the period (angle); ``label`` is the
    class name or the angle as written. Samples sharing a ``group`` (the copies of one picture, the regions
    of one label image) stay together in a split. ``box`` = (row0, col0, row1, col1) crops a larger image.
    """

    path: Path
    label: str
    target: float
    group: str
    box: tuple[int, int, int, int] | None = None

    @property
    def name(self) -> str:
        """How results.csv names the sample: the path, plus the crop box when there is one."""
        if self.box is None:
            return str(self.path)
        return f"{self.path}[{self.box[0]}:{self.box[2]},{self.box[1]}:{self.box[3]}]"


@dataclass
class LabelledData:
    """Samples of one task, with the class names (classify) or the angle period (angle)."""

    samples: list[Sample]
    task: str
    source: Path
    format: str
    classes: list[str] = field(default_factory=list)
    period_deg: float | None = None

    def class_counts(self) -> dict[str, int]:
        counts = Counter(int(s.target) for s in self.samples)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}

    def targets(self) -> list[float]:
        return [s.target for s in self.samples]


def natural_key(text: str) -> list[Any]:
    """Sort "2L" before "10L": digits compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


# ------------------------------------------------------------------------------------------ opening


def open_dataset(
    path: Path,
    task: str,
    *,
    format: str = "auto",
    label_column: str | None = None,
    classes: Sequence[str] | None = None,
    period_deg: float | None = None,
    label_crop_px: int = 64,
    min_region_px: int = 20,
) -> LabelledData:
    """Read a dataset in any supported format.

    ``classes`` fixes the class list (a validation set or a checkpoint's classes); without it the classes
    are the labels found, in natural order. ``period_deg`` is the angle period (angle task); a simulator
    dataset's own period wins and a conflicting one is an error. Raises InputError naming the file,
    the row or field and what was expected.
    """
    path = Path(path)
    if task not in TASKS:
        raise InputError(f"--task: expected classify or angle, got {task!r}")
    if format not in FORMATS:
        raise InputError(f"--format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if not path.exists():
        raise InputError(f"{path}: no such dataset file or folder")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "simulator":
        return _open_simulator(path, task, classes, period_deg)
    if task == "angle" and period_deg is None:
        period_deg = 30.0
    if fmt == "imagefolder":
        raw = _read_imagefolder(path)
    elif fmt in ("csv", "axis"):
        csv_path = _csv_in(path)
        if fmt == "axis":
            if task != "angle":
                raise InputError(
                    f"{csv_path}: an axis CSV (basename, axis_angle, count) holds angles; use --task angle"
                )
            raw = _read_axis_csv(csv_path)
        else:
            raw = _read_csv(csv_path, label_column)
    elif fmt == "label-images":
        if task != "classify":
            raise InputError(f"{path}: label images hold layer counts; use --task classify")
        raw = _read_label_images(path, label_crop_px, min_region_px)
    else:  # pragma: no cover - FORMATS is checked above
        raise InputError(f"--format: {fmt!r} is not readable here")
    if not raw:
        raise InputError(f"{path}: the dataset holds no labelled images")
    return _labelled(raw, task, path, fmt, classes, period_deg)


def detect_format(path: Path) -> str:
    """Which format ``path`` is in; an InputError lists the formats when it is none of them."""
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise InputError(f"{path}: a dataset file must be a .csv (or give a folder)")
        return "axis" if set(_AXIS_COLUMNS) <= set(_csv_header(path)) else "csv"
    if (path / "dataset.json").is_file():
        return "simulator"
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return "label-images"
    csvs = sorted(p for p in path.glob("*.csv") if not p.name.startswith("."))
    if any(_images_under(d) for d in _subfolders(path)):
        return "imagefolder"
    if len(csvs) == 1:
        return detect_format(csvs[0])
    raise InputError(
        f"{path}: not a dataset: expected class subfolders of images, a CSV of path,label, an axis CSV "
        "(basename, axis_angle, count), images/ + labels/ label images, or a dataset.json"
    )


def _subfolders(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    return iter_image_files([folder])


def _csv_in(path: Path) -> Path:
    if path.is_file():
        return path
    csvs = sorted(p for p in path.glob("*.csv") if not p.name.startswith("."))
    if len(csvs) != 1:
        raise InputError(f"{path}: expected exactly one CSV file in the folder, found {len(csvs)}")
    return csvs[0]


# A raw record before labels become targets: (path, label text, group, box).
_Raw = tuple[Path, str, str, "tuple[int, int, int, int] | None"]


def _read_imagefolder(path: Path) -> list[_Raw]:
    raw: list[_Raw] = []
    for folder in _subfolders(path):
        for image in _images_under(folder):
            raw.append((image, folder.name, str(image), None))
    return raw


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            row = next(csv.reader(fh, skipinitialspace=True), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the CSV ({exc})") from None
    return [c.strip() for c in row]


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    header = _csv_header(path)
    if len(header) < 2 or any(not c for c in header):
        raise InputError(f"{path}: expected a header row with at least two named columns, got {header}")
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        next(reader)
        for line, values in enumerate(reader, start=2):
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise InputError(
                    f"{path}: line {line}: expected {len(header)} values ({', '.join(header)}), got {len(values)}"
                )
            rows.append((line, {k: v.strip() for k, v in zip(header, values, strict=True)}))
    return header, rows


def _read_csv(path: Path, label_column: str | None) -> list[_Raw]:
    header, rows = _csv_rows(path)
    path_column = "path" if "path" in header else header[0]
    if label_column is None:
        label_column = next(c for c in header if c != path_column)
    elif label_column not in header:
        raise InputError(f"{path}: --label-column {label_column!r} is not a column (columns: {', '.join(header)})")
    raw: list[_Raw] = []
    for line, row in rows:
        image = path.parent / row[path_column]
        if not image.is_file():
            raise InputError(f"{path}: line {line}: {path_column} {row[path_column]!r}: no such file {image}")
        if not row[label_column]:
            raise InputError(f"{path}: line {line}: {label_column} is empty")
        raw.append((image, row[label_column], str(image), None))
    return raw


def _read_axis_csv(path: Path) -> list[_Raw]:
    _, rows = _csv_rows(path)
    raw: list[_Raw] = []
    for line, row in rows:
        base = row["basename"]
        try:
            count = int(row["count"])
        except ValueError:
            raise InputError(f"{path}: line {line}: count: expected an integer, got {row['count']!r}") from None
        if count < 1:
            raise InputError(f"{path}: line {line}: count: expected >= 1 copies, got {count}")
        first = _find_copy(path.parent, base, 0)
        numbers = range(count) if first is not None else range(1, count + 1)
        for n in numbers:
            image = _find_copy(path.parent, base, n)
            if image is None:
                raise InputError(
                    f"{path}: line {line}: {base}: copy {n} of {count} not found (expected {base}-{n}.tif|jpg|png)"
                )
            raw.append((image, row["axis_angle"], base, None))
    return raw


def _find_copy(folder: Path, base: str, n: int) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{base}-{n}{suffix}", folder / f"{base}-{n}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _read_label_images(path: Path, crop_px: int, min_region_px: int) -> list[_Raw]:
    labels = {p.stem: p for p in iter_image_files([path / "labels"])}
    raw: list[_Raw] = []
    for image in iter_image_files([path / "images"]):
        stem = image.name.split(".")[0]
        label_path = labels.get(image.stem) or labels.get(stem)
        if label_path is None:
            raise InputError(f"{image}: no label image labels/{stem}.png (or .tif)")
        raw.extend(_regions(image, label_path, crop_px, min_region_px))
    return raw


def _regions(image: Path, label_path: Path, crop_px: int, min_region_px: int) -> list[_Raw]:
    label, _ = read_image(label_path)
    shape, _ = read_image(image)
    if label.ndim != 2:
        raise InputError(f"{label_path}: a label image must have one channel (pixel = layer count), got {label.shape}")
    if label.shape != shape.shape[:2]:
        raise InputError(f"{label_path}: size {label.shape} differs from its image {image} {shape.shape[:2]}")
    out: list[_Raw] = []
    half = crop_px // 2
    for value in sorted(int(v) for v in np.unique(label) if 0 < v < 255):
        mask = (label == value).astype(np.uint8)
        count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for k in range(1, count):
            if stats[k, cv2.CC_STAT_AREA] < min_region_px:
                continue
            # The innermost pixel (farthest from the region's edge) lies inside even a C-shaped region.
            region = np.pad((components == k).astype(np.uint8), 1)
            dist = cv2.distanceTransform(region, cv2.DIST_L2, 3)[1:-1, 1:-1]
            r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
            box = (int(r) - half, int(c) - half, int(r) - half + crop_px, int(c) - half + crop_px)
            out.append((image, f"{value}L", str(image), box))
    return out


def read_dataset_meta(path: Path) -> tuple[Path, dict[str, Any]]:
    """A simulator dataset's ``dataset.json`` (``path`` is the folder or the file), checked for its format."""
    meta_path = path / "dataset.json" if path.is_dir() else path
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{meta_path}: not a readable dataset.json ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
        raise InputError(f"{meta_path}: format: expected {DATASET_FORMAT!r}")
    return meta_path, meta


def _open_simulator(path: Path, task: str, classes: Sequence[str] | None, period_deg: float | None) -> LabelledData:
    meta_path, meta = read_dataset_meta(path)
    sim_task = meta.get("task")
    if not isinstance(sim_task, str) or _SIM_TASKS.get(sim_task) != task:
        raise InputError(f"{meta_path}: task: this is a {sim_task!r} dataset; it does not fit --task {task}")
    if task == "angle":
        own = float(meta["period_deg"])
        if period_deg is not None and not math.isclose(period_deg, own):
            raise InputError(f"{meta_path}: period_deg is {own}°, but {period_deg}° was asked for")
        period_deg = own
    raw = _read_csv(meta_path.parent / meta.get("labels", "labels.csv"), meta.get("label_column"))
    if classes is None and meta.get("classes"):
        classes = [c for c in meta["classes"] if any(label == c for _, label, _, _ in raw)]
    return _labelled(raw, task, path, "simulator", classes, period_deg)


# ------------------------------------------------------------------------------------------ targets


def _labelled(
    raw: list[_Raw], task: str, source: Path, fmt: str, classes: Sequence[str] | None, period_deg: float | None
) -> LabelledData:
    if task == "classify":
        found = sorted({label for _, label, _, _ in raw}, key=natural_key)
        class_list = list(classes) if classes is not None else found
        index = {name: i for i, name in enumerate(class_list)}
        unknown = [name for name in found if name not in index]
        if unknown:
            raise InputError(f"{source}: labels {', '.join(unknown)} are not among the classes {', '.join(class_list)}")
        if classes is None and len(class_list) < 2:
            raise InputError(f"{source}: a classifier needs at least 2 classes, found {', '.join(found) or 'none'}")
        samples = [Sample(p, label, float(index[label]), g, box) for p, label, g, box in raw]
        return LabelledData(samples, task, source, fmt, classes=class_list)
    assert period_deg is not None
    samples = []
    for p, label, g, box in raw:
        try:
            theta = float(label)
        except ValueError:
            raise InputError(f"{source}: {p.name}: angle label: expected degrees, got {label!r}") from None
        if not math.isfinite(theta):
            raise InputError(f"{source}: {p.name}: angle label: expected a finite number, got {label!r}")
        samples.append(Sample(p, label, float(np.mod(theta, period_deg)), g, box))
    return LabelledData(samples, task, source, fmt, period_deg=period_deg)


# ------------------------------------------------------------------------------------------ subsets


def split(data: LabelledData, val_fraction: float, seed: int) -> tuple[LabelledData, LabelledData]:
    """Hold out about ``val_fraction`` of the groups for validation, per class, with a fixed seed.

    Groups (copies of one picture, regions of one label image) never straddle the split. Every class
    keeps at least one group for training.
    """
    if not 0 < val_fraction < 1:
        raise InputError(f"--val-fraction: expected a fraction in (0, 1), got {val_fraction}")
    rng = np.random.default_rng([seed, 1])
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(data.samples):
        groups.setdefault(s.group, []).append(i)
    strata: dict[int, list[str]] = {}
    for g, members in groups.items():
        key = int(data.samples[members[0]].target) if data.task == "classify" else 0
        strata.setdefault(key, []).append(g)
    val_groups: set[str] = set()
    for key in sorted(strata):
        names = sorted(strata[key])
        order = rng.permutation(len(names))
        n_val = min(len(names) - 1, round(val_fraction * len(names)))
        val_groups.update(names[i] for i in order[:n_val])
    train = [s for s in data.samples if s.group not in val_groups]
    val = [s for s in data.samples if s.group in val_groups]
    if not val:
        raise InputError(f"{data.source}: too few images to hold out a validation set; give --val PATH")
    return _with(data, train), _with(data, val)


def limit(data: LabelledData, count: int, seed: int) -> LabelledData:
    """A random subset of ``count`` samples, stratified by class (largest remainders), with a fixed seed."""
    n = len(data.samples)
    if count >= n:
        return data
    if count < 1:
        raise InputError(f"--limit: expected a positive number of labels, got {count}")
    rng = np.random.default_rng([seed, 2])
    order = rng.permutation(n)
    if data.task != "classify":
        return _with(data, [data.samples[i] for i in sorted(order[:count])])
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(int(data.samples[i].target), []).append(int(i))
    exact = {c: count * len(ix) / n for c, ix in by_class.items()}
    quota = {c: math.floor(q) for c, q in exact.items()}
    for c in sorted(exact, key=lambda c: (quota[c] - exact[c], c))[: count - sum(quota.values())]:
        quota[c] += 1
    if count >= len(by_class):  # every class keeps at least one example when there is room
        for c in by_class:
            if quota[c] == 0:
                donor = max(quota, key=lambda k: quota[k])
                quota[donor] -= 1
                quota[c] = 1
    chosen = sorted(i for c, ix in by_class.items() for i in ix[: quota[c]])
    return _with(data, [data.samples[i] for i in chosen])


def _with(data: LabelledData, samples: list[Sample]) -> LabelledData:
    return LabelledData(samples, data.task, data.source, data.format, list(data.classes), data.period_deg)
