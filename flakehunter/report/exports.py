"""``flakehunter export``: candidates for other software, best score first, through the shared filter.

* ``mm-pos``  a Micro-Manager 2.0 position list (``.pos``): the "Micro-Manager Property Map" JSON that
  MM's ``PositionList.save`` writes (``PropertyMapJSONSerializer``: every value wrapped as
  ``{"type": ..., "scalar"|"array": ...}``, keys in alphabetical order, two-space indentation), one
  ``MultiStagePosition`` per candidate with its XY stage position and, when known, its focus z.
* ``useq``    a useq-schema ``MDASequence`` holding only ``stage_positions`` (JSON; load it with
  ``useq.MDASequence.from_file`` or pymmcore-plus).
* ``geojson`` a FeatureCollection of candidate outlines in stage µm (x, y; not geographic coordinates),
  see `outlines` for where each outline comes from.
* ``csv``     the candidate columns plus the review: verdict, favourite, note.

Positions are stage µm as the scan's stage reported them; Micro-Manager and pymmcore-plus take them as
they are when they drive the same stage (same controller, same origin). Candidates without a stage
position (images that carried none) cannot be revisited and are left out of mm-pos, useq and geojson.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from flakehunter.candidates import COLUMNS, Candidate
from flakehunter.errors import InputError
from flakehunter.report.filters import CandidateFilter
from flakehunter.report.rundata import ImageInfo, RunData, load_run, resolve

FORMATS = {"mm-pos": ".pos", "useq": ".useq.json", "geojson": ".geojson", "csv": ".csv"}


def export(
    run_dir: str | Path, fmt: str, out: str | Path | None = None, flt: CandidateFilter | None = None, *,
    xy_stage: str = "XYStage", z_stage: str = "ZStage",
) -> tuple[Path, int, int]:
    """Write the export; returns (path, candidates written, candidates left out for want of a position).

    ``out`` defaults to ``RUN_DIR/exports/candidates<suffix>`` (``candidates.pos``, ``candidates.useq.json``,
    ``candidates.geojson``, ``candidates.csv``). ``xy_stage`` and
    ``z_stage`` name the Micro-Manager devices (mm-pos); an empty ``z_stage`` leaves focus out.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    data = load_run(run_dir)
    flt = flt or CandidateFilter()
    chosen = flt.apply(data.candidates, data.verdicts)
    path = Path(out) if out is not None else data.run.exports / f"candidates{FORMATS[fmt]}"
    placed = [c for c in chosen if c.positioned] if fmt != "csv" else chosen
    if fmt == "mm-pos":
        text = json.dumps(mm_position_list(placed, xy_stage, z_stage, data), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "useq":
        text = useq_sequence(placed).model_dump_json(indent=2, exclude_unset=True, exclude_none=True) + "\n"
    elif fmt == "geojson":
        text = json.dumps(feature_collection(data, placed), indent=1, ensure_ascii=False) + "\n"
    else:
        text = candidates_csv(data, placed)
    from flakehunter.atomic import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path, len(placed), len(chosen) - len(placed)


def label(c: Candidate) -> str:
    """How a position is named in Micro-Manager and useq: ``cand17_1L``."""
    return f"cand{c.id}_{c.layer_class or 'unknown'}"


# -------------------------------------------------------------------------------------- Micro-Manager


def _v(kind: str, value: Any) -> dict[str, Any]:
    """A Micro-Manager property map value: ``{"type": kind, "scalar": value}`` or with "array" for a list."""
    return {"type": kind, "array" if isinstance(value, list) else "scalar": value}


def mm_position_list(candidates: list[Candidate], xy_stage: str, z_stage: str, data: RunData) -> dict[str, Any]:
    """The Micro-Manager 2.0 position list document (``PositionList.toPropertyMap`` in its file wrapper)."""
    run_id = str((data.manifest or {}).get("run_id", ""))
    positions = []
    for c in candidates:
        devices = [{"Device": _v("STRING", xy_stage), "Position_um": _v("DOUBLE", [float(c.x_um), float(c.y_um)])}]
        with_z = bool(z_stage) and c.z_um is not None
        if with_z:
            devices.append({"Device": _v("STRING", z_stage), "Position_um": _v("DOUBLE", [float(c.z_um)])})  # type: ignore[arg-type]
        props = {"area_um2": f"{c.area_um2:.1f}", "candidate_id": str(c.id), "layer_class": c.layer_class,
                 "run_id": run_id, "score": f"{c.score:.3f}"}
        positions.append({
            "DefaultXYStage": _v("STRING", xy_stage),
            "DefaultZStage": _v("STRING", z_stage if with_z else ""),
            "DevicePositions": _v("PROPERTY_MAP", devices),
            "GridCol": _v("INTEGER", 0),
            "GridRow": _v("INTEGER", 0),
            "Label": _v("STRING", label(c)),
            "Properties": _v("PROPERTY_MAP", {k: _v("STRING", v) for k, v in sorted(props.items())}),
        })
    return {
        "encoding": "UTF-8",
        "format": "Micro-Manager Property Map",
        "major_version": 2,
        "minor_version": 0,
        "map": {"StagePositions": _v("PROPERTY_MAP", positions)},
    }


# -------------------------------------------------------------------------------------------- useq


def useq_sequence(candidates: list[Candidate]) -> Any:
    """A `useq.MDASequence` visiting the candidates (validated by useq-schema as it is built)."""
    import useq

    return useq.MDASequence(stage_positions=[
        useq.Position(x=float(c.x_um), y=float(c.y_um), z=None if c.z_um is None else float(c.z_um), name=label(c))
        for c in candidates])


# ----------------------------------------------------------------------------------------- geojson


def feature_collection(data: RunData, candidates: list[Candidate]) -> dict[str, Any]:
    """GeoJSON FeatureCollection of the candidates' outlines in stage µm, with their fields as properties."""
    shapes = outlines(data, candidates)
    features = []
    for c in candidates:
        ring, source = shapes[c.id]
        v = data.verdicts.get(c.id)
        props = {k: getattr(c, k) for k in ("id", "layer_class", "layers", "score", "area_um2", "orientation_deg",
                                             "x_um", "y_um", "z_um", "material", "image", "detector")}
        props.update(outline_source=source, verdict=v.verdict if v else None, favourite=bool(v and v.favourite),
                     note=v.note if v else "")
        features.append({"type": "Feature", "id": c.id, "properties": props,
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return {"type": "FeatureCollection",
            "flakehunter": {"coordinates": "stage x_um, y_um (not geographic)", "run": str(data.run.path)},
            "features": features}


def outlines(data: RunData, candidates: list[Candidate]) -> dict[int, tuple[list[list[float]], str]]:
    """Each candidate's outline as a closed, counter-clockwise ring of stage (x_um, y_um), and its source.

    In order of preference: the detector's own outline (``outline_um``, or ``outline_px`` through the
    image's transform: "detector"); its bounding box (``bbox``: "bbox"); the region recovered from the
    image around it (`flakehunter.report.segment`: "segmented", or its convex hull "segmented-hull" when
    the candidate's position lies outside a concave region); a circle of the candidate's area ("area-circle")
    where none of these is available. Every outline contains its candidate's position.
    """
    from shapely.geometry import Point, Polygon
    from shapely.geometry.polygon import orient

    by_image: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_image[c.image].append(c)
    out: dict[int, tuple[list[list[float]], str]] = {}
    for key, group in by_image.items():
        info = data.image(key) or ImageInfo(key=key, path=resolve(data.run.path, key))
        found = _outlines_in_image(data, info, group)
        for c in group:
            poly, source = found.get(c.id, (None, "area-circle"))
            point = Point(c.x_um, c.y_um)
            if poly is not None and not poly.buffer(1e-6).contains(point):
                poly, source = poly.convex_hull, source + "-hull"
            if poly is None or poly.is_empty or not poly.buffer(1e-6).contains(point):
                radius = max(math.sqrt(max(c.area_um2, 0.0) / math.pi), 0.5)
                poly, source = point.buffer(radius, quad_segs=8), "area-circle"
            ring = orient(Polygon(poly.exterior.coords), 1.0).exterior.coords
            out[c.id] = ([[round(x, 3), round(y, 3)] for x, y in ring], source)
    return out


def _outlines_in_image(data: RunData, info: ImageInfo, group: list[Candidate]) -> dict[int, tuple[Any, str]]:
    """Outlines (stage µm) of the candidates of one image that the records or the image give."""
    from shapely.geometry import Polygon

    from flakehunter.analysis.localise import bbox_polygon
    from flakehunter.geometry import PixelTransform
    from flakehunter.report.segment import candidate_region
    from flakehunter.tiles import read_image

    try:
        image, meta = read_image(info.path)
    except InputError:
        return {}
    shape = (int(image.shape[0]), int(image.shape[1]))
    x0, y0 = meta.x_um if meta.x_um is not None else info.x_um, meta.y_um if meta.y_um is not None else info.y_um
    pixel = info.pixel_size_um or meta.pixel_size_um
    transform = data.transform or (PixelTransform(pixel) if pixel else None)
    if x0 is None or y0 is None or transform is None:
        return {}
    centre = (float(x0), float(y0))

    def to_stage(rows: Any, cols: Any) -> Any:
        x, y = transform.pixel_to_stage(np.asarray(rows, float), np.asarray(cols, float), centre, shape)
        return Polygon(np.column_stack([x, y]))

    found: dict[int, tuple[Any, str]] = {}
    for c in group:
        extra = data.extras.get(c.id, {})
        try:
            if extra.get("outline_um"):
                found[c.id] = (Polygon([(float(x), float(y)) for x, y in extra["outline_um"]]), "detector")
                continue
            if extra.get("outline_px"):
                pts = np.asarray(extra["outline_px"], float)
                found[c.id] = (to_stage(pts[:, 0], pts[:, 1]), "detector")
                continue
            if extra.get("bbox"):
                r0, c0, r1, c1 = (int(v) for v in extra["bbox"])
                found[c.id] = (bbox_polygon((r0, c0, r1, c1), transform, centre, shape), "bbox")
                continue
        except (TypeError, ValueError, IndexError):
            pass  # a malformed extra field: recover the outline from the image instead
        region = candidate_region(image, c, pixel)
        if region is not None:
            pts = np.asarray(region.outline_px(), float)
            found[c.id] = (to_stage(pts[:, 0], pts[:, 1]), "segmented")
    return found


# --------------------------------------------------------------------------------------------- csv


def candidates_csv(data: RunData, candidates: list[Candidate]) -> str:
    """The candidate columns (candidates.csv's order) plus verdict, favourite and note."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*COLUMNS, "verdict", "favourite", "note"])
    for c in candidates:
        record = c.to_record()
        v = data.verdicts.get(c.id)
        w.writerow([*("" if record[k] is None else record[k] for k in COLUMNS),
                    (v.verdict or "") if v else "", "yes" if v and v.favourite else "", v.note if v else ""])
    return buf.getvalue()
