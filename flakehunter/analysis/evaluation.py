"""Scoring candidates against ground truth: the simulator's truth.json, or label images.

A candidate *lies on* a truth flake when its centre is inside the flake's polygon grown by a
tolerance (3 µm by default). A truth flake is *found* when at least one candidate lies on it; a
second candidate on the same flake is a *duplicate*. Recall counts found flakes among the truth
flakes of interest (layer range, minimum area); precision counts reported candidates of that layer
range that lie on a flake of that range; layer accuracy is the share of matched candidates whose
layer count is right; orientation error is wrapped modulo the material's edge symmetry.

Truth from a simulator is in stage µm. Truth from label images (DESIGN.md §4: pixel value = layer
count, 0 substrate, 255 ignore) is in the pixels of the image of the same name, and candidates are
then matched by their (row, col) in that image.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from flakehunter.candidates import Candidate
from flakehunter.errors import InputError
from flakehunter.run.layout import TRUTH

IGNORE_LABEL = 255
LABEL_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass(frozen=True)
class TruthFlake:
    """One true (or annotated) flake. ``image`` is None for stage-µm truth, else the image stem its pixel
    polygon belongs to (shapely x = col, y = row, pixel centres at integer coordinates).

    ``layers`` is None where an annotation gives no layer count. ``kind`` says what the outline is:
    "outline" (simulator truth, label images), "polygon", "mask" or "box" (a weak label: only a box
    around the flake). ``label`` is the annotation's class name, where it has one.
    """

    id: int
    layers: int | None
    theta_deg: float | None
    area_um2: float
    polygon: Polygon | MultiPolygon
    straight_edges: bool = True
    image: str | None = None
    kind: str = "outline"
    label: str = ""


def image_key(path: str) -> str:
    """What ties a candidate's image to a label image: the file name without (OME-)TIFF/PNG/JPEG suffixes."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


LABEL_TAGS = ("_labels", "_label", "-labels", "-label", ".labels", ".label")


def is_label_name(path: str | Path) -> bool:
    """Whether a file is named like a label image (``IMAGE_label.png`` and similar)."""
    return image_key(str(path)).lower().endswith(LABEL_TAGS)


def label_key(path: str | Path) -> str:
    """The image key a label image belongs to: its name without suffix and without a ``_label`` tag."""
    key = image_key(str(path))
    for tag in LABEL_TAGS:
        if key.lower().endswith(tag):
            return key[: -len(tag)]
    return key


def load_truth(path: str | Path) -> list[TruthFlake]:
    """Flakes of a truth.json (a run directory holding one is accepted too)."""
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable truth file ({exc})") from None
    flakes = []
    for i, rec in enumerate(data.get("flakes", [])):
        try:
            parts = [Polygon(ring) for ring in rec["polygon_um"]]
            geom = parts[0] if len(parts) == 1 else MultiPolygon(parts)
            flakes.append(
                TruthFlake(
                    id=int(rec["id"]), layers=int(rec["layers"]), theta_deg=rec.get("theta_deg"),
                    area_um2=float(geom.area), polygon=geom, straight_edges=bool(rec.get("straight_edges", True)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: flakes[{i}]: expected id, layers and polygon_um ({exc})") from None
    return flakes


def load_label_truth(labels: Sequence[Path], pixel_size_um: dict[str, float]) -> list[TruthFlake]:
    """Flakes of label images: each connected region of one layer value is a flake.

    ``pixel_size_um`` maps image keys to their pixel size, to express areas in µm².
    """
    import cv2

    from flakehunter.tiles import read_image

    flakes: list[TruthFlake] = []
    for path in labels:
        key = label_key(path)
        if key not in pixel_size_um:
            continue
        p = pixel_size_um[key]
        label, _ = read_image(path)
        if label.ndim == 3:
            label = label[..., 0]
        for value in sorted(int(v) for v in np.unique(label) if 0 < v < IGNORE_LABEL):
            mask = (label == value).astype(np.uint8)
            count, comp = cv2.connectedComponents(mask, connectivity=8)
            for i in range(1, count):
                region = comp == i
                flakes.append(
                    TruthFlake(
                        id=len(flakes) + 1, layers=value, theta_deg=None, area_um2=float(region.sum() * p * p),
                        polygon=region_polygon(region), straight_edges=False, image=key,
                    )
                )
    return flakes


def region_polygon(region: np.ndarray) -> Polygon | MultiPolygon:
    """The exact outline of a boolean pixel mask (x = col, y = row): the union of its pixels' squares,
    holes and one-pixel-wide parts included."""
    padded = np.pad(region.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    start_rows, start_cols = np.nonzero(edges == 1)
    end_rows, end_cols = np.nonzero(edges == -1)  # row-major order pairs each run's start with its end
    boxes = shapely.box(start_cols - 0.5, start_rows - 0.5, end_cols - 0.5, end_rows + 0.5)
    return shapely.union_all(boxes)


@dataclass
class Matching:
    """Which candidates lie on which truth flakes."""

    truth: list[TruthFlake]
    candidates: list[Candidate]
    candidate_flake: list[int | None]  # index into truth, per candidate (the best-fitting flake)
    flake_candidates: dict[int, list[int]] = field(default_factory=dict)  # truth index -> candidate indices


def match(
    candidates: Sequence[Candidate], truth: Sequence[TruthFlake], tolerance_um: float = 3.0,
    pixel_size_um: dict[str, float] | None = None,
) -> Matching:
    """Assign each candidate to the truth flake it lies on (same layer count first, then nearest)."""
    stage = [i for i, f in enumerate(truth) if f.image is None]
    by_image: dict[str, list[int]] = {}
    for i, f in enumerate(truth):
        if f.image is not None:
            by_image.setdefault(f.image, []).append(i)
    stage_tree = shapely.STRtree([truth[i].polygon for i in stage]) if stage else None
    candidate_flake: list[int | None] = []
    flake_candidates: dict[int, list[int]] = {}
    for ci, c in enumerate(candidates):
        key = image_key(c.image)
        if key in by_image:
            p = (pixel_size_um or {}).get(key, 1.0)
            point, pool, tol = shapely.Point(c.col, c.row), by_image[key], tolerance_um / p
            hits = [i for i in pool if truth[i].polygon.distance(point) <= tol]
        elif stage_tree is not None:
            point, tol = shapely.Point(c.x_um, c.y_um), tolerance_um
            hits = [stage[int(h)] for h in stage_tree.query(point, predicate="dwithin", distance=tol)]
        else:
            hits = []
        if not hits:
            candidate_flake.append(None)
            continue
        best = min(hits, key=lambda h: (truth[h].layers != c.layers, truth[h].polygon.distance(point)))
        candidate_flake.append(best)
        flake_candidates.setdefault(best, []).append(ci)
    return Matching(list(truth), list(candidates), candidate_flake, flake_candidates)


def wrap_angle(delta_deg: float, period_deg: float) -> float:
    """``delta_deg`` wrapped into [-period/2, period/2)."""
    return (delta_deg + period_deg / 2) % period_deg - period_deg / 2


def summarize(
    m: Matching, *, layers: Sequence[int] = (1, 2, 3), min_area_um2: float = 50.0, symmetry_deg: float = 30.0,
    pixel_size_um: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Recall over truth flakes of ``layers`` and at least ``min_area_um2``; precision over the
    candidates reported with ``layers``; layer accuracy over matched pairs; duplicates; position
    and orientation errors; per-layer figures and the layer confusion matrix."""
    wanted = set(layers)
    of_interest = [i for i, f in enumerate(m.truth) if f.layers in wanted]
    targets = [i for i in of_interest if m.truth[i].area_um2 >= min_area_um2]
    found = [i for i in targets if m.flake_candidates.get(i)]
    reported = [ci for ci, c in enumerate(m.candidates) if c.layers in wanted]
    on_target = [ci for ci in reported if (fi := m.candidate_flake[ci]) is not None and m.truth[fi].layers in wanted]
    pairs = [(ci, fi) for ci in reported if (fi := m.candidate_flake[ci]) is not None]
    correct = [ci for ci, fi in pairs if m.truth[fi].layers == m.candidates[ci].layers]
    duplicates = sum(max(len(v) - 1, 0) for v in m.flake_candidates.values())
    per_layer = {}
    for n in sorted(wanted):
        t = [i for i in targets if m.truth[i].layers == n]
        r = [ci for ci in reported if m.candidates[ci].layers == n]
        found_n = sum(1 for i in t if m.flake_candidates.get(i))
        right_n = sum(1 for ci in r if (fi := m.candidate_flake[ci]) is not None and m.truth[fi].layers == n)
        recall_n = found_n / len(t) if t else math.nan
        precision_n = right_n / len(r) if r else math.nan
        f1 = 2 * recall_n * precision_n / (recall_n + precision_n) if recall_n + precision_n > 0 else math.nan
        per_layer[f"{n}L"] = {
            "truth": len(t), "found": found_n, "reported": len(r), "correct": right_n,
            "recall": recall_n, "precision": precision_n, "f1": f1,
        }
    position = _position_errors(m, reported, pixel_size_um)
    orientation = _orientation_errors(m, reported, symmetry_deg, min_area_um2)
    recall = len(found) / len(targets) if targets else math.nan
    precision = len(on_target) / len(reported) if reported else math.nan
    return {
        "truth_flakes": len(targets),
        "found": len(found),
        "recall": recall,
        "reported": len(reported),
        "on_target": len(on_target),
        "precision": precision,
        "f1": 2 * recall * precision / (recall + precision) if recall + precision > 0 else math.nan,
        "layer_accuracy": len(correct) / len(pairs) if pairs else math.nan,
        "duplicates": duplicates,
        "position_error_um": float(np.median(position)) if position else math.nan,
        "position_error_p95_um": float(np.percentile(position, 95)) if position else math.nan,
        "orientation_rms_deg": float(np.sqrt(np.mean(np.square(orientation["errors"]))))
        if orientation["errors"] else math.nan,
        "orientation_flakes": orientation["eligible"],
        "orientation_reported": len(orientation["errors"]),
        "symmetry_deg": symmetry_deg,
        "per_layer": per_layer,
        "confusion": confusion_matrix(m, layers),
        "missed_ids": [m.truth[i].id for i in targets if not m.flake_candidates.get(i)],
        "false_ids": [m.candidates[ci].id for ci in reported if ci not in set(on_target)],
        "orientation_errors_deg": orientation["errors"],
        "position_errors_um": position,
        "recall_by_area": _recall_by_area(m, of_interest),
    }


def confusion_matrix(m: Matching, layers: Sequence[int]) -> dict[str, Any]:
    """Counts of (truth class, reported class) over candidates; truth "none" = lies on no flake,
    "other" = a flake outside ``layers``."""
    classes = [f"{n}L" for n in layers]
    rows = [*classes, "other", "none"]
    cols = [*classes, "other"]
    counts = {r: dict.fromkeys(cols, 0) for r in rows}
    for ci, c in enumerate(m.candidates):
        fi = m.candidate_flake[ci]
        truth_class = "none" if fi is None else f"{m.truth[fi].layers}L"
        truth_class = truth_class if truth_class in rows else "other"
        reported = f"{c.layers}L" if c.layers is not None else c.layer_class
        counts[truth_class][reported if reported in cols else "other"] += 1
    return {"rows": rows, "cols": cols, "counts": counts}


def _position_errors(m: Matching, reported: list[int], pixel_size_um: dict[str, float] | None) -> list[float]:
    errors = []
    for ci in reported:
        fi = m.candidate_flake[ci]
        if fi is None:
            continue
        f, c = m.truth[fi], m.candidates[ci]
        centroid = f.polygon.centroid
        if f.image is None:
            errors.append(float(math.hypot(centroid.x - c.x_um, centroid.y - c.y_um)))
        else:
            p = (pixel_size_um or {}).get(f.image, 1.0)
            errors.append(float(math.hypot(centroid.x - c.col, centroid.y - c.row) * p))
    return errors


def _orientation_errors(
    m: Matching, reported: list[int], symmetry_deg: float, min_area_um2: float
) -> dict[str, Any]:
    """Wrapped errors of reported orientations on matched flakes that have straight edges."""
    errors = []
    eligible = 0
    for ci in reported:
        fi = m.candidate_flake[ci]
        if fi is None:
            continue
        f = m.truth[fi]
        if not f.straight_edges or f.theta_deg is None or f.area_um2 < min_area_um2:
            continue
        eligible += 1
        theta = m.candidates[ci].orientation_deg
        if theta is not None:
            errors.append(wrap_angle(theta - f.theta_deg, symmetry_deg))
    return {"errors": errors, "eligible": eligible}


def _recall_by_area(m: Matching, targets: list[int]) -> list[dict[str, float]]:
    edges = [0, 25, 50, 100, 200, 500, 1000, math.inf]
    out = []
    for lo, hi in itertools.pairwise(edges):
        pool = [i for i in targets if lo <= m.truth[i].area_um2 < hi]
        if pool:
            found = sum(1 for i in pool if m.flake_candidates.get(i))
            out.append({"area_min_um2": lo, "area_max_um2": hi, "flakes": len(pool), "recall": found / len(pool)})
    return out


# --- Annotations in pixels: matching, and found / missed / strays per image ---------------------------------------


def match_pixels(candidates: Sequence[Candidate], truth: Sequence[TruthFlake], tolerance_px: float = 3.0) -> Matching:
    """Assign each candidate to the annotated flake its (row, col) lies on, within ``tolerance_px``.

    Annotations are in the pixels of the image whose key (file stem) they carry; stage positions are not
    used. Where a point lies on several annotations (boxes overlap), it goes to one of the same layer count
    first, then to one it lies inside rather than near, then to one no candidate has claimed yet (so two
    candidates in two overlapping boxes find both), then to the smallest. Candidates are taken by score,
    highest first.
    """
    by_image: dict[str, list[int]] = {}
    for i, f in enumerate(truth):
        by_image.setdefault(f.image or "", []).append(i)
    trees = {key: shapely.STRtree([truth[i].polygon for i in pool]) for key, pool in by_image.items()}
    candidate_flake: list[int | None] = [None] * len(candidates)
    flake_candidates: dict[int, list[int]] = {}
    order = sorted(range(len(candidates)), key=lambda ci: (-(candidates[ci].score or 0.0), candidates[ci].id))
    for ci in order:
        c = candidates[ci]
        key = image_key(c.image)
        if key not in trees:
            continue
        point = shapely.Point(c.col, c.row)
        pool = by_image[key]
        hits = [pool[int(h)] for h in trees[key].query(point, predicate="dwithin", distance=tolerance_px)]
        if not hits:
            continue
        best = min(hits, key=lambda h: (
            truth[h].layers is not None and truth[h].layers != c.layers,
            truth[h].polygon.distance(point) > 0,
            h in flake_candidates,
            truth[h].polygon.area,
        ))
        candidate_flake[ci] = best
        flake_candidates.setdefault(best, []).append(ci)
    for members in flake_candidates.values():
        members.sort()
    return Matching(list(truth), list(candidates), candidate_flake, flake_candidates)


def class_name(candidate: Candidate) -> str:
    """A candidate's reported class: "1L", "2L", ... where it has a layer count, else its layer class."""
    return f"{candidate.layers}L" if candidate.layers is not None else (candidate.layer_class or "unclassified")


def found_as(m: Matching, flake: int) -> Candidate | None:
    """The candidate that stands for a found flake: one reporting the flake's layer count, else the best scored."""
    members = [m.candidates[ci] for ci in m.flake_candidates.get(flake, [])]
    if not members:
        return None
    layers = m.truth[flake].layers
    return max(members, key=lambda c: (layers is not None and c.layers == layers, c.score or 0.0, -c.id))


def annotation_targets(truth: Sequence[TruthFlake], layers: Sequence[int], min_area_um2: float) -> list[int]:
    """Indices of the annotated flakes counted for recall: those of ``layers``, of at least ``min_area_um2``
    (when > 0). Annotations without a layer count are targets only when no annotation has one (a class like
    "bulk" beside "monolayer" is context, not a target; a set of unnamed boxes is all targets)."""
    any_known = any(f.layers is not None for f in truth)
    wanted = set(layers)
    return [
        i for i, f in enumerate(truth)
        if (f.layers in wanted or (f.layers is None and not any_known))
        and (min_area_um2 <= 0 or f.area_um2 >= min_area_um2)
    ]


def default_stray_layers(truth: Sequence[TruthFlake], layers: Sequence[int], complete: bool) -> tuple[int, ...]:
    """Which reported layer counts are strays when outside every annotation. ``complete`` annotations
    (label images: every flake labelled) judge all of ``layers``; partial ones (boxes of monolayers only)
    judge only the layer counts they annotate."""
    known = {f.layers for f in truth if f.layers is not None}
    if complete or not known:
        return tuple(layers)
    return tuple(n for n in layers if n in known)


def per_image(
    m: Matching, images: Sequence[str], targets: Sequence[int], stray_layers: Sequence[int]
) -> list[dict[str, Any]]:
    """Per image: annotated (target) flakes, found, missed, found as each reported class, strays (candidates
    of ``stray_layers`` on no annotation), duplicates (extra candidates on one outlined flake; several in one
    box are not), candidates, and the layer check over found flakes whose annotation gives a layer count."""
    rows: dict[str, dict[str, Any]] = {key: {
        "image": key, "annotated": 0, "found": 0, "missed": 0, "found_as": {}, "strays": 0, "duplicates": 0,
        "candidates": 0, "layer_checked": 0, "layer_correct": 0,
    } for key in images}
    for i in targets:
        f = m.truth[i]
        row = rows.get(f.image or "")
        if row is None:
            continue
        row["annotated"] += 1
        rep = found_as(m, i)
        if rep is None:
            row["missed"] += 1
            continue
        row["found"] += 1
        name = class_name(rep)
        row["found_as"][name] = row["found_as"].get(name, 0) + 1
        if f.layers is not None:
            row["layer_checked"] += 1
            row["layer_correct"] += rep.layers == f.layers
    for fi, members in m.flake_candidates.items():
        row = rows.get(m.truth[fi].image or "")
        if row is not None and m.truth[fi].kind != "box":
            row["duplicates"] += len(members) - 1
    strays = set(stray_layers)
    for ci, c in enumerate(m.candidates):
        row = rows.get(image_key(c.image))
        if row is None:
            continue
        row["candidates"] += 1
        row["strays"] += m.candidate_flake[ci] is None and c.layers in strays
    return [rows[key] for key in images]


def summarize_annotations(
    m: Matching, images: Sequence[str], *, layers: Sequence[int] = (1, 2, 3), min_area_um2: float = 0.0,
    stray_layers: Sequence[int] | None = None, pixel_size_um: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Found / annotated and strays, in total and per image, for annotations in pixels (boxes, polygons,
    masks). ``images`` are the image keys evaluated (annotated and analysed), those without any flake
    included. Carries the keys the plots use (confusion, recall by area, position errors) too."""
    targets = annotation_targets(m.truth, layers, min_area_um2)
    strays_of = tuple(stray_layers) if stray_layers is not None else default_stray_layers(m.truth, layers, False)
    rows = per_image(m, images, targets, strays_of)
    annotated = sum(r["annotated"] for r in rows)
    found = sum(r["found"] for r in rows)
    classes: dict[str, int] = {}
    for r in rows:
        for name, n in r["found_as"].items():
            classes[name] = classes.get(name, 0) + n
    strays = [r["strays"] for r in rows]
    evaluated = set(images)
    in_images = [ci for ci, c in enumerate(m.candidates) if image_key(c.image) in evaluated]
    judged = [ci for ci in in_images if m.candidates[ci].layers in set(strays_of)]
    stray_ids = [m.candidates[ci].id for ci in judged if m.candidate_flake[ci] is None]
    checked = sum(r["layer_checked"] for r in rows)
    outlined = [ci for ci in in_images if (fi := m.candidate_flake[ci]) is not None and m.truth[fi].kind != "box"]
    position = _position_errors(m, outlined, pixel_size_um)
    recall = found / annotated if annotated else math.nan
    precision = (len(judged) - len(stray_ids)) / len(judged) if judged else math.nan
    per_layer = {}
    for n in sorted(set(layers)):
        t = [i for i in targets if m.truth[i].layers == n]
        hit = [i for i in t if m.flake_candidates.get(i)]
        right = [i for i in hit if (rep := found_as(m, i)) is not None and rep.layers == n]
        per_layer[f"{n}L"] = {
            "annotated": len(t), "found": len(hit), f"found_as_{n}L": len(right),
            "recall": len(hit) / len(t) if t else math.nan, f"recall_as_{n}L": len(right) / len(t) if t else math.nan,
        }
    return {
        "images": len(images),
        "annotated": annotated,
        "truth_flakes": annotated,
        "found": found,
        "missed": annotated - found,
        "recall": recall,
        "found_as": dict(sorted(classes.items())),
        "stray_layers": list(strays_of),
        "strays": sum(strays),
        "strays_per_image_median": float(np.median(strays)) if strays else math.nan,
        "strays_per_image_max": max(strays, default=0),
        "candidates": len(in_images),
        "reported": len(judged),
        "precision": precision,
        "f1": 2 * recall * precision / (recall + precision) if recall + precision > 0 else math.nan,
        "layer_checked": checked,
        "layer_accuracy": sum(r["layer_correct"] for r in rows) / checked if checked else math.nan,
        "duplicates": sum(r["duplicates"] for r in rows),
        "per_layer": per_layer,
        "confusion": confusion_matrix(m, layers),
        "symmetry_deg": 30.0,
        "orientation_errors_deg": [],
        "position_errors_um": position,
        "position_error_um": float(np.median(position)) if position else math.nan,
        "recall_by_area": _recall_by_area(m, targets),
        "per_image": rows,
        "missed_ids": [m.truth[i].id for i in targets if not m.flake_candidates.get(i)],
        "stray_ids": stray_ids,
    }
