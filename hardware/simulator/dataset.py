"""Labelled crops from the chip simulator: thickness classes or crystal-axis angles.

Random chips (`generate_chip`) are imaged tile by tile by the simulator's stage and camera, with all of
its optics and noise (thin-film contrast at the chip's jittered oxide, vignetting, PSF blur, shot and
read noise); each wanted flake is cut out of a tile as a ``crop_px`` square, as a detector would cut a
candidate:

* ``thickness``: centred on the flake's innermost point (the centre of its largest inscribed circle, which
  lies on the flake even for a terrace on a thicker body), labelled with its layer class ("1L".."5L",
  "few", "bulk"); classes are balanced by drawing each chip's thin flakes from the requested layer counts.
* ``axis``: flakes with straight edges that fit wholly in the crop, centred on their bounding box, labelled
  with θ (`training.angles` convention: from +col towards +row) modulo the material's edge symmetry.

Tiles overlap by one crop, so every flake lies wholly inside some tile; each flake is used once.
The folder gets ``images/NNNNN.png``, ``labels.csv`` (``path``, the label, and the flake's chip seed, id,
layers, area and stage position) and, written last, ``dataset.json``, which ``train`` and
``evaluate-model`` recognise.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from shapely.geometry import MultiPolygon, Polygon
from shapely.ops import polylabel

from flakehunter import __version__
from flakehunter.atomic import atomic_write, write_json_atomic
from flakehunter.errors import InputError, RuntimeFailure
from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.chip import ChipSpec, SimFlake
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
from flakehunter.training.datasets import DATASET_FORMAT
from flakehunter.training.logs import write_csv

THICKNESS_CLASSES = ("1L", "2L", "3L", "4L", "5L", "few", "bulk")
SIM_TASKS = ("thickness", "axis")
_MAX_CHIPS = 2000


def parse_classes(text: str) -> list[str]:
    """``"1L,2L,3L"`` or ``"all"`` -> the thickness classes, checked."""
    if text.strip() == "all":
        return list(THICKNESS_CLASSES)
    classes = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in classes if c not in THICKNESS_CLASSES]
    if unknown or not classes:
        raise InputError(f"--classes: expected a comma-separated subset of {', '.join(THICKNESS_CLASSES)} "
                         f"or 'all', got {text!r}")
    if len(set(classes)) != len(classes):
        raise InputError(f"--classes: {text!r} names a class twice")
    return [c for c in THICKNESS_CLASSES if c in classes]


def image_angle_deg(theta_stage_deg: float, transform: PixelTransform, period_deg: float) -> float:
    """A stage-frame direction (from +x towards +y) as the image angle (from +col towards +row), mod period."""
    t = math.radians(theta_stage_deg)
    row, col = transform.stage_to_pixel(np.array([0.0, math.cos(t)]), np.array([0.0, math.sin(t)]), (0.0, 0.0), (0, 0))
    return float(np.mod(math.degrees(math.atan2(row[1] - row[0], col[1] - col[0])), period_deg))


def _largest(geom: Polygon | MultiPolygon) -> Polygon:
    return max(geom.geoms, key=lambda g: g.area) if isinstance(geom, MultiPolygon) else geom


def _chip_spec(task: str, classes: list[str], tile_um: float) -> ChipSpec:
    thin = [int(c[:-1]) for c in classes if c.endswith("L")]
    if task == "axis":
        size = max(1200.0, 2 * tile_um)
        return ChipSpec(size_um=(size, size), thin_flakes=60, multilayer_flakes=10, thick_flakes=15,
                        thick_max_diameter_um=150, residue_blobs=4, dust=20, min_spacing_um=12)
    return ChipSpec(
        size_um=(2000.0, 2000.0),
        thin_flakes=120 if thin else 30,
        thin_layer_weights={n: 1.0 for n in (thin or [1, 2, 3])},
        multilayer_flakes=30 if "few" in classes else 8,
        thick_flakes=30 if "bulk" in classes else 20,
        residue_blobs=8, dust=40, min_spacing_um=12,
    )


def write_simulator_dataset(
    out: Path,
    task: str,
    count: int,
    *,
    crop_px: int | None = None,
    material: str = "graphene",
    oxide_nm: float = 90.0,
    seed: int = 0,
    classes: str = "1L,2L,3L",
    pixel_size_um: float | None = None,
    tile_px: int = 512,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write ``count`` labelled crops into ``out`` (which must be new or empty); returns dataset.json.

    ``crop_px`` defaults to 32 (thickness) or 64 (axis); ``pixel_size_um`` to 1.15 µm (a 5x objective,
    NA 0.15) for thickness and 0.5 µm (a 20x objective, NA 0.45) for axis, so that edges are resolved.
    """
    from flakehunter.registry import get_registry

    if task not in SIM_TASKS:
        raise InputError(f"--task: expected thickness or axis, got {task!r}")
    if count < 1:
        raise InputError(f"--count: expected at least 1 crop, got {count}")
    crop_px = crop_px or (32 if task == "thickness" else 64)
    pixel_size_um = pixel_size_um or (1.15 if task == "thickness" else 0.5)
    if not 8 <= crop_px <= tile_px // 2:
        raise InputError(f"--crop-px: expected 8..{tile_px // 2}, got {crop_px}")
    if pixel_size_um <= 0 or oxide_nm <= 0:
        raise InputError("--pixel-size-um and --oxide-nm must be positive")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out: {out} is not empty; choose a new folder")
    mat = get_registry().material(material)
    period = float(mat.edge_symmetry_deg)
    wanted = parse_classes(classes) if task == "thickness" else ["axis"]
    quota = {c: count // len(wanted) + (1 if i < count % len(wanted) else 0) for i, c in enumerate(wanted)}
    numerical_aperture = 0.15 if pixel_size_um >= 1.0 else 0.45
    tile_um = tile_px * pixel_size_um
    spec = _chip_spec(task, wanted, tile_um)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    chips: list[int] = []
    half = crop_px // 2
    for chip_seed in range(seed, seed + _MAX_CHIPS):
        if all(v == 0 for v in quota.values()):
            break
        layout = generate_chip(spec, mat, oxide_nm, chip_seed)
        rig = SimulatedMicroscope(layout, material=material, oxide_nm=oxide_nm, seed=chip_seed,
                                  transform=PixelTransform(pixel_size_um), shape=(tile_px, tile_px),
                                  numerical_aperture=numerical_aperture)
        chips.append(chip_seed)
        taken: set[int] = set()
        x0, y0, x1, y1 = layout.bounds_um
        step = (tile_px - crop_px - 2) * pixel_size_um
        for y in np.arange(y0 + tile_um / 2 - crop_px * pixel_size_um, y1 + step, step):
            for x in np.arange(x0 + tile_um / 2 - crop_px * pixel_size_um, x1 + step, step):
                rows.extend(_crops_in_tile(rig, float(x), float(y), task, quota, taken, crop_px, half, period,
                                           out, len(rows), chip_seed))
        if echo is not None:
            echo(f"chip {chip_seed}: {len(rows)}/{count} crops")
    else:
        raise RuntimeFailure(f"simulate dataset: {_MAX_CHIPS} chips gave only {len(rows)} of {count} crops")
    label_column = "label" if task == "thickness" else "angle_deg"
    write_csv(out / "labels.csv", rows)
    counts = None
    if task == "thickness":
        found = Counter(r["label"] for r in rows)
        counts = {c: found[c] for c in wanted}
    meta: dict[str, Any] = {
        "format": DATASET_FORMAT,
        "version": 1,
        "task": task,
        "labels": "labels.csv",
        "label_column": label_column,
        "count": len(rows),
        "classes": wanted if task == "thickness" else None,
        "class_counts": counts,
        "period_deg": period if task == "axis" else None,
        "angle_convention": "image angle from +col towards +row (clockwise as displayed), modulo period_deg",
        "material": material,
        "nominal_oxide_nm": oxide_nm,
        "pixel_size_um": pixel_size_um,
        "numerical_aperture": numerical_aperture,
        "crop_px": crop_px,
        "tile_px": tile_px,
        "seed": seed,
        "chips": chips,
        "chip_spec": spec.model_dump(mode="json"),
        "generator": f"flakehunter {__version__} simulate dataset",
    }
    write_json_atomic(out / "dataset.json", meta)
    return meta


def _crops_in_tile(
    rig: SimulatedMicroscope, x_um: float, y_um: float, task: str, quota: dict[str, int], taken: set[int], crop_px: int,
    half: int, period: float, out: Path, start: int, chip_seed: int,
) -> list[dict[str, Any]]:
    fov = rig.transform.footprint((x_um, y_um), rig.shape)
    inner = fov.buffer(-(half + 1) * rig.transform.pixel_size_um)
    flakes = [f for f in rig.layout.query(*fov.bounds).flakes if f.id not in taken]
    chosen: list[tuple[SimFlake, str, tuple[float, float]]] = []
    for flake in flakes:
        label = _label(flake, task, rig.transform, period, crop_px)
        if label is None or quota.get(label if task == "thickness" else "axis", 0) == 0:
            continue
        centre = _centre(flake, task)
        if not inner.contains(_point(centre)):
            continue
        chosen.append((flake, label, centre))
        quota[label if task == "thickness" else "axis"] -= 1
    if not chosen:
        return []
    tile = rig.snap_at(x_um, y_um)
    rows = []
    for flake, label, (cx, cy) in chosen:
        r, c = rig.transform.stage_to_pixel(cx, cy, (x_um, y_um), rig.shape)
        r0, c0 = round(float(r)) - half, round(float(c)) - half
        crop = tile[r0 : r0 + crop_px, c0 : c0 + crop_px]
        assert crop.shape[:2] == (crop_px, crop_px)
        name = f"images/{start + len(rows):05d}.png"
        ok, data = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        assert ok
        with atomic_write(out / name, "wb") as fh:
            fh.write(data.tobytes())
        taken.add(flake.id)
        key = "label" if task == "thickness" else "angle_deg"
        rows.append({"path": name, key: label, "chip_seed": chip_seed, "flake_id": flake.id, "layers": flake.layers,
                     "area_um2": round(flake.area_um2, 2), "x_um": round(cx, 2), "y_um": round(cy, 2)})
    return rows


def _label(flake: SimFlake, task: str, transform: PixelTransform, period: float, crop_px: int) -> str | None:
    if task == "thickness":
        return flake.layer_class
    if not flake.straight_edges:
        return None
    x0, y0, x1, y1 = flake.polygon.bounds
    extent = max(x1 - x0, y1 - y0) / transform.pixel_size_um
    if not 0.25 * crop_px <= extent <= 0.85 * crop_px:
        return None
    return f"{image_angle_deg(flake.theta_deg, transform, period):.3f}"


def _centre(flake: SimFlake, task: str) -> tuple[float, float]:
    if task == "thickness":
        p = polylabel(_largest(flake.polygon), tolerance=0.2)
        return (float(p.x), float(p.y))
    x0, y0, x1, y1 = flake.polygon.bounds
    return (0.5 * (x0 + x1), 0.5 * (y0 + y1))


def _point(xy: tuple[float, float]) -> Any:
    from shapely.geometry import Point

    return Point(*xy)
