"""Annotations as people have them: YOLO boxes (Roboflow exports), COCO polygons / RLE / boxes, instance masks.

Each format becomes `TruthFlake` records in the pixels of their image (shapely x = col, y = row, pixel
centres at integer coordinates, so a pixel covers [col - 0.5, col + 0.5]) keyed by the image's file stem,
plus the set of annotated images: an image annotated with no flake is evidence too (every candidate on it is
a stray). `detect_format` tells the formats apart from what the user gives; docs/evaluation.md shows each.
Label images (pixel value = layer count) and the simulator's truth.json are read in `evaluation`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon

from flakehunter.analysis.evaluation import LABEL_SUFFIXES, TruthFlake, image_key, label_key, region_polygon
from flakehunter.errors import InputError
from flakehunter.run.layout import TRUTH

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
CLASS_FILES = ("classes.txt", "obj.names", "_darknet.labels")
DATA_YAML = ("data.yaml", "data.yml", "dataset.yaml")
INSTANCE_TAGS = ("_instances", "_instance", "_masks", "_mask", "_inst", "-instances", "-instance", "-masks", "-mask")
INSTANCE_MAPS = ("instances.json", "instances.csv")
EXPECTED = (
    "expected a truth.json, YOLO labels (labels/NAME.txt), a COCO .json with \"images\" and \"annotations\", "
    "instance masks with an id -> layers .json/.csv, or label images (.png/.tif)"
)


@dataclass
class AnnotationSet:
    """Annotated flakes and the images they were annotated on (image key -> the image file, where known)."""

    format: str  # "yolo", "coco" or "instance-mask"
    flakes: list[TruthFlake]
    images: dict[str, Path | None] = field(default_factory=dict)


# --- class names and layer counts ------------------------------------------------------------------------------

_WORDS = {"mono": 1, "single": 1, "bi": 2, "double": 2, "tri": 3, "tetra": 4, "quad": 4, "penta": 5}
_NOT_COUNTS = ("bulk", "thick", "multi", "few", "many")


def layers_from_name(name: str) -> int | None:
    """The layer count a class name states ("monolayer", "1L", "1-layer", "bilayer", "WSe2_2L", "3"), else None
    (a plain "flake", or "bulk" / "few-layer" / "multilayer", which state no count)."""
    text = name.strip().lower()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if any(word in text for word in _NOT_COUNTS):
        return None
    hit = re.search(r"(?<![a-z0-9])(\d+)\s*[-_ ]?\s*(?:l|layers?|lyr)(?![a-z])", text)
    if hit:
        return int(hit.group(1))
    for word, n in _WORDS.items():
        if re.search(rf"(?<![a-z]){word}(?:[-_ ]?layers?)?(?![a-z])", text):
            return n
    return None


def parse_class_layers(text: str | None) -> dict[str, int | None]:
    """``--class-layers 0=1,1=2,bulk=none``: class id or name -> layer count (``none``: no count)."""
    out: dict[str, int | None] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        value = value.strip().lower()
        if not sep or not key.strip() or not (value.isdigit() or value in ("none", "-")):
            raise InputError(f"--class-layers: expected CLASS=LAYERS pairs like 0=1,1=2 (or bulk=none), got {part!r}")
        out[key.strip().lower()] = int(value) if value.isdigit() else None
    return out


def class_layers(class_id: str, name: str, explicit: Mapping[str, int | None]) -> int | None:
    """A class's layer count: ``--class-layers`` by id, then by name, then what the name says."""
    for key in (class_id.lower(), name.lower()):
        if key in explicit:
            return explicit[key]
    return layers_from_name(name) if name else None


# --- format detection ------------------------------------------------------------------------------------------


def detect_format(paths: Sequence[Path]) -> str:
    """What the ``--truth`` paths hold: "truth", "yolo", "coco", "instance-mask" or "label-image".

    Raises `InputError` naming the path and what was expected when it is none of them.
    """
    kinds = {_format_of(p) for p in paths}
    if len(kinds) > 1:
        raise InputError(f"{paths[0]}: --truth paths mix formats ({', '.join(sorted(kinds))}); give one kind")
    return kinds.pop()


def _format_of(path: Path) -> str:
    if not path.exists():
        raise InputError(f"{path}: annotation file or folder not found")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            data = _read_json(path)
            if isinstance(data, dict) and "flakes" in data:
                return "truth"
            if isinstance(data, dict) and "images" in data and "annotations" in data:
                return "coco"
            raise InputError(f"{path}: {EXPECTED}; this JSON has neither \"flakes\" nor \"images\"+\"annotations\"")
        if suffix == ".txt":
            return "yolo"
        if suffix in LABEL_SUFFIXES:
            return "instance-mask" if _instance_map_path(path) else "label-image"
        raise InputError(f"{path}: {EXPECTED}")
    if (path / TRUTH).is_file():
        return "truth"
    if _yolo_label_dirs(path):
        return "yolo"
    if _coco_files(path):
        return "coco"
    masks = [q for q in sorted(path.iterdir()) if q.suffix.lower() in LABEL_SUFFIXES]
    if any(_instance_map_path(q) for q in masks):
        return "instance-mask"
    if masks:
        return "label-image"
    raise InputError(f"{path}: no annotations found; {EXPECTED}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from None


# --- YOLO ------------------------------------------------------------------------------------------------------


def _label_txts(folder: Path) -> list[Path]:
    return sorted(q for q in folder.glob("*.txt") if q.name.lower() not in CLASS_FILES and q.is_file())


def _yolo_label_dirs(path: Path) -> list[Path]:
    """Folders of YOLO txt files under ``path``: a split folder (labels/ beside images/), the labels folder
    itself, the images folder of a split, or a dataset root with train/valid/test splits."""
    if path.name.lower() == "images" and _label_txts(path.parent / "labels"):
        return [path.parent / "labels"]
    if _label_txts(path / "labels"):
        return [path / "labels"]
    if _label_txts(path):
        return [path]
    return [q / "labels" for q in sorted(path.iterdir()) if q.is_dir() and _label_txts(q / "labels")]


def _yolo_names(label_dir: Path) -> dict[str, str]:
    """Class id -> name from a data.yaml (``names:`` list or mapping) or classes.txt near the labels."""
    import yaml

    for folder in (label_dir, label_dir.parent, label_dir.parent.parent):
        for name in DATA_YAML:
            path = folder / name
            if path.is_file():
                try:
                    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
                except (OSError, yaml.YAMLError) as exc:
                    raise InputError(f"{path}: not readable YAML ({exc})") from None
                names = data.get("names", []) if isinstance(data, dict) else []
                if isinstance(names, dict):
                    return {str(k): str(v) for k, v in names.items()}
                if isinstance(names, list):
                    return {str(i): str(v) for i, v in enumerate(names)}
                raise InputError(f"{path}: names: expected a list or a mapping of class names")
        for name in CLASS_FILES:
            path = folder / name
            if path.is_file():
                lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                return {str(i): v for i, v in enumerate(lines)}
    return {}


def _image_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {image_key(str(q)): q for q in sorted(folder.iterdir()) if q.suffix.lower() in IMAGE_SUFFIXES}


def image_size(path: Path) -> tuple[int, int]:
    """(rows, cols) of an image, from its header where possible."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            cols, rows = im.size
            return int(rows), int(cols)
    except Exception:  # PIL cannot parse every TIFF; read it fully then
        from flakehunter.tiles import read_image

        array, _ = read_image(path)
        return int(array.shape[0]), int(array.shape[1])


def load_yolo(
    paths: Sequence[Path], explicit: Mapping[str, int | None], analysed: Mapping[str, Path | None]
) -> AnnotationSet:
    """YOLO txt files: ``class cx cy w h`` boxes (or ``class x1 y1 x2 y2 ...`` polygons) normalised to the
    image size. The images annotated are those in images/ beside labels/ (a missing or empty txt: no flake);
    without an images/ folder, those with a txt. Image sizes come from images/ or the analysed image files."""
    groups: list[tuple[Path, list[Path], bool]] = []  # labels folder, its txt files, whether all of it
    for p in paths:
        if p.is_file():
            groups.append((p.parent, [p], False))
        else:
            groups += [(d, _label_txts(d), True) for d in _yolo_label_dirs(p)]
    flakes: list[TruthFlake] = []
    images: dict[str, Path | None] = {}
    for label_dir, txts, whole in groups:
        names = _yolo_names(label_dir)
        files = _image_files(label_dir.parent / "images")
        if whole:  # every image of the split is annotated; one without a txt has no flake
            images.update(files)
        for txt in txts:
            key = image_key(str(txt))
            image = files.get(key) or analysed.get(key)
            images[key] = image
            flakes += _yolo_file(txt, key, image, names, explicit, len(flakes))
    return AnnotationSet("yolo", flakes, images)


def _yolo_file(
    txt: Path, key: str, image: Path | None, names: Mapping[str, str], explicit: Mapping[str, int | None], start: int
) -> list[TruthFlake]:
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{txt}: not a readable YOLO label file ({exc})") from None
    rows = [(n, line.split()) for n, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        return []
    if image is None:
        raise InputError(f"{txt}: image size unknown; expected its image in ../images/ or among the analysed images")
    height, width = image_size(image)
    flakes: list[TruthFlake] = []
    for n, parts in rows:
        try:
            values = [float(v) for v in parts[1:]]
            class_id = str(int(float(parts[0])))
        except ValueError:
            values, class_id = [], ""
        if len(values) == 5:  # a prediction file: cx cy w h confidence
            values = values[:4]
        if not class_id or not (len(values) == 4 or (len(values) >= 6 and len(values) % 2 == 0)):
            raise InputError(
                f"{txt}:{n}: expected 'class cx cy w h' (or 'class x1 y1 x2 y2 ...'), got {' '.join(parts)!r}"
            )
        if any(v < -0.05 or v > 1.05 for v in values):
            raise InputError(f"{txt}:{n}: expected coordinates normalised to 0-1, got {' '.join(parts[1:])!r}")
        if len(values) == 4:
            cx, cy, w, h = values
            geom = shapely.box((cx - w / 2) * width - 0.5, (cy - h / 2) * height - 0.5,
                               (cx + w / 2) * width - 0.5, (cy + h / 2) * height - 0.5)
            kind = "box"
        else:
            xy = np.asarray(values).reshape(-1, 2) * (width, height) - 0.5
            geom, kind = Polygon(xy).buffer(0), "polygon"
        name = names.get(class_id, "")
        flakes.append(TruthFlake(
            id=start + len(flakes) + 1, layers=class_layers(class_id, name, explicit), theta_deg=None,
            area_um2=float(geom.area), polygon=geom, straight_edges=False, image=key, kind=kind, label=name or class_id,
        ))
    return flakes


# --- COCO ------------------------------------------------------------------------------------------------------


def _coco_files(path: Path) -> list[Path]:
    """COCO JSON files in a folder or its split subfolders (Roboflow: ``train/_annotations.coco.json``)."""
    found = []
    for folder in (path, *sorted(q for q in path.iterdir() if q.is_dir())):
        for q in sorted(folder.glob("*.json")):
            try:
                with open(q, encoding="utf-8") as fh:
                    head = fh.read(1 << 20)
            except (OSError, UnicodeDecodeError):
                continue
            if '"annotations"' in head and '"images"' in head:
                found.append(q)
        if found:
            break
    return found


def load_coco(paths: Sequence[Path], explicit: Mapping[str, int | None]) -> AnnotationSet:
    """COCO JSON: per annotation a polygon list, an RLE (``counts`` as a list or compressed string) or, with no
    segmentation, its ``bbox`` (a box). Every entry of ``images`` is annotated (none of its flakes: no flake)."""
    files = [q for p in paths for q in ([p] if p.is_file() else _coco_files(p))]
    flakes: list[TruthFlake] = []
    images: dict[str, Path | None] = {}
    for path in files:
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise InputError(f"{path}: expected a COCO file with \"images\" and \"annotations\" lists")
        try:
            by_id = {im["id"]: im for im in data["images"]}
            names = {c["id"]: str(c.get("name", c["id"])) for c in data.get("categories", [])}
        except (KeyError, TypeError) as exc:
            raise InputError(f"{path}: images/categories: expected entries with an id ({exc})") from None
        for im in by_id.values():
            file = path.parent / str(im.get("file_name", ""))
            images[image_key(str(im.get("file_name", im["id"])))] = file if file.is_file() else None
        for n, ann in enumerate(data.get("annotations", [])):
            try:
                im = by_id[ann["image_id"]]
                geom, kind = coco_geometry(ann, int(im.get("height", 0)), int(im.get("width", 0)))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(
                    f"{path}: annotations[{n}]: expected image_id and segmentation or bbox ({exc})"
                ) from None
            category = ann.get("category_id")
            name = names.get(category, "" if category is None else str(category))
            flakes.append(TruthFlake(
                id=int(ann.get("id", n + 1)), layers=class_layers(str(category), name, explicit), theta_deg=None,
                area_um2=float(geom.area), polygon=geom, straight_edges=False,
                image=image_key(str(im.get("file_name", im["id"]))), kind=kind, label=name,
            ))
    return AnnotationSet("coco", flakes, images)


def coco_geometry(ann: Mapping[str, Any], height: int, width: int) -> tuple[Any, str]:
    """An annotation's outline in pixel-centre coordinates and its kind ("polygon", "mask" or "box")."""
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        size = seg.get("size") or [height, width]
        mask = rle_decode(seg["counts"], (int(size[0]), int(size[1])))
        if not mask.any():
            raise ValueError("empty RLE mask")
        return region_polygon(mask), "mask"
    if isinstance(seg, list) and seg:
        rings = [np.asarray(r, float).reshape(-1, 2) - 0.5 for r in seg if len(r) >= 6]
        if not rings:
            raise ValueError("polygons need at least 3 points")
        return shapely.union_all([Polygon(r).buffer(0) for r in rings]), "polygon"
    x, y, w, h = (float(v) for v in ann["bbox"])
    return shapely.box(x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5), "box"


def rle_counts_from_string(text: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools ``rleFrString``): 5-bit groups in characters from
    '0', a continuation bit, a sign bit, and from the fourth run on a difference to the run two before."""
    counts: list[int] = []
    data = text.encode("ascii")
    p = 0
    while p < len(data):
        x = k = 0
        more = True
        while more:
            if p >= len(data):
                raise ValueError("truncated RLE string")
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(counts: list[int] | str, size: tuple[int, int]) -> np.ndarray:
    """A (rows, cols) boolean mask from COCO RLE: run lengths alternating background / flake, starting with
    background, over the pixels in column-major order."""
    rows, cols = size
    runs = rle_counts_from_string(counts) if isinstance(counts, str) else [int(v) for v in counts]
    if any(n < 0 for n in runs) or sum(runs) != rows * cols:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, expected {rows}x{cols}")
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(cols, rows).T


# --- instance masks --------------------------------------------------------------------------------------------


def _instance_map_path(mask: Path) -> Path | None:
    """The id -> layers map of an instance mask: ``STEM.json`` / ``STEM.csv`` beside it, or a folder-wide
    ``instances.json`` / ``instances.csv`` (keyed by image)."""
    for suffix in (".json", ".csv"):
        sidecar = mask.with_name(image_key(str(mask)) + suffix)
        if sidecar.is_file():
            return sidecar
    for name in INSTANCE_MAPS:
        if (mask.parent / name).is_file():
            return mask.parent / name
    return None


def instance_key(mask: Path) -> str:
    """The image an instance mask belongs to: its stem without an ``_instances`` / ``_mask`` / ``_label`` tag."""
    key = image_key(str(mask))
    for tag in INSTANCE_TAGS:
        if key.lower().endswith(tag):
            return key[: -len(tag)]
    return label_key(key)


def _instance_map(path: Path, mask: Path) -> dict[int, Any]:
    """Instance id -> layers (an int, a class name, or None) for ``mask`` from its map file."""
    folder_wide = path.name in INSTANCE_MAPS
    keys = {instance_key(mask), image_key(str(mask))}
    items: Iterable[tuple[Any, Any]]
    if path.suffix == ".json":
        data = _read_json(path)
        if folder_wide and isinstance(data, dict):
            data = next((data[k] for k in keys if k in data), {})
        if isinstance(data, list):
            data = {rec.get("id", rec.get("instance")): rec.get("layers", rec.get("class")) for rec in data}
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected an object mapping instance id to layers, like {{\"1\": 1}}")
        items = data.items()
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
        cols = {c.lower(): c for c in (records[0].keys() if records else [])}
        id_col = cols.get("instance") or cols.get("id")
        value_col = cols.get("layers") or cols.get("class") or cols.get("label")
        if not id_col or not value_col:
            raise InputError(f"{path}: expected CSV columns instance (or id) and layers (or class)")
        image_col = cols.get("image")
        items = [(r[id_col], r[value_col]) for r in records if not folder_wide or not image_col
                 or image_key(r[image_col]) in keys]
    out: dict[int, Any] = {}
    for k, v in items:
        try:
            out[int(k)] = v
        except (TypeError, ValueError):
            raise InputError(f"{path}: instance id {k!r}: expected an integer") from None
    return out


def load_instance_masks(paths: Sequence[Path], explicit: Mapping[str, int | None]) -> AnnotationSet:
    """Instance masks (pixel value = instance id, 0 = background) with an id -> layers map each."""
    from flakehunter.tiles import read_image

    masks = [q for p in paths for q in ([p] if p.is_file() else sorted(p.iterdir()))
             if q.suffix.lower() in LABEL_SUFFIXES and _instance_map_path(q)]
    flakes: list[TruthFlake] = []
    images: dict[str, Path | None] = {}
    for mask_path in masks:
        map_path = _instance_map_path(mask_path)
        assert map_path is not None
        classes = _instance_map(map_path, mask_path)
        mask, _ = read_image(mask_path)
        if mask.ndim == 3:
            if not (np.all(mask[..., 0] == mask[..., 1]) and np.all(mask[..., 0] == mask[..., 2])):
                raise InputError(f"{mask_path}: expected a one-channel instance mask (pixel value = instance id)")
            mask = mask[..., 0]
        key = instance_key(mask_path)
        images[key] = None
        for value in (int(v) for v in np.unique(mask) if v != 0):
            if value not in classes:
                raise InputError(f"{map_path}: no entry for instance {value} of {mask_path.name} (id -> layers)")
            given = classes[value]
            if isinstance(given, int) or given is None:
                layers = given
            else:
                layers = class_layers(str(given), str(given), explicit) if str(given).strip() else None
            region = mask == value
            flakes.append(TruthFlake(
                id=len(flakes) + 1, layers=layers, theta_deg=None, area_um2=float(region.sum()),
                polygon=region_polygon(region), straight_edges=False, image=key, kind="mask",
                label=str(given) if given is not None else "",
            ))
    return AnnotationSet("instance-mask", flakes, images)


def load_annotations(
    paths: Sequence[Path], fmt: str, *, explicit: Mapping[str, int | None] | None = None,
    analysed: Mapping[str, Path | None] | None = None, pixel_size_um: Mapping[str, float] | None = None,
) -> AnnotationSet:
    """Read annotations of format ``fmt`` (from `detect_format`). Areas are converted from px² to µm² with the
    pixel size of each image where ``pixel_size_um`` knows it, else left as NaN."""
    explicit = explicit or {}
    if fmt == "yolo":
        result = load_yolo(paths, explicit, analysed or {})
    elif fmt == "coco":
        result = load_coco(paths, explicit)
    elif fmt == "instance-mask":
        result = load_instance_masks(paths, explicit)
    else:
        raise InputError(f"{paths[0]}: {fmt} is not an annotation format")
    sizes = pixel_size_um or {}
    result.flakes = [_in_um2(f, sizes.get(f.image or "")) for f in result.flakes]
    return result


def _in_um2(flake: TruthFlake, pixel_size_um: float | None) -> TruthFlake:
    from dataclasses import replace

    area = flake.area_um2 * pixel_size_um**2 if pixel_size_um else float("nan")
    return replace(flake, area_um2=area)
