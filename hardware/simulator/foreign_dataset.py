"""Training data for the CNN detectors, rendered through random foreign setups (`setup.draw_setup`).

Every setup is a different microscope, camera, lamp, oxide, tone curve and file format (docs/foreign-setups.md);
its chip is cluttered at random (tape residue, dust, scratches, terraces attached to thick flakes) and a
share of its tiles is taken out of focus. Two tasks:

* ``segment``: each tile on the analysis grid of the CNN detectors (`training.segment_input`: block means of
  ``grid_factor`` x ``grid_factor`` pixels, stored as 16-bit PNG, which is exactly what the detector
  averages an image to), with a class map beside it (``labels/NAME.png``: 0 substrate, 1-3 for 1-3L, 4
  few, 5 bulk, 6 junk = residue, dust, scratches; 255 = mixed boundary pixels, not scored);
* ``axis``: one 64 x 64 window per straight-edged flake that lies wholly in a tile, in the cnn-axis
  network's input (`training.axis_input`: the flake's contrast scaled to 1, the substrate 0), labelled
  with its crystal axis θ modulo the material's edge symmetry.

Setups are drawn from seeds ``seed``, ``seed + 1``, ...; the foreign-setup benchmark draws seeds
1000·s + i (i < 1000) for its own, so a training seed of 100000 or more never meets a benchmark setup.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely

from flakehunter import __version__
from flakehunter.atomic import atomic_write, write_json_atomic
from flakehunter.errors import InputError
from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.chip import ChipView, SimFlake
from flakehunter.hardware.simulator.foreign import chip_spec_for
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.hardware.simulator.imaging import ImagingOptions
from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
from flakehunter.hardware.simulator.setup import DEFAULT_MATERIALS, ForeignSetup, draw_setup
from flakehunter.training.datasets import DATASET_FORMAT
from flakehunter.training.logs import write_csv
from flakehunter.training.segment_input import (
    CLASSES,
    GRID_UM,
    IGNORE,
    JUNK,
    block_average,
    class_fractions_to_grid,
    class_of_layers,
    grid_factor,
)

#: Smallest training seed that no benchmark setup uses.
FIRST_TRAINING_SEED = 100_000
TILE_GRID = (224, 288)  # rows, cols of a training tile on the analysis grid


@dataclass
class TrainingTile:
    """One rendered tile: the recorded image, its truth as a class map (full resolution) and its flakes."""

    setup: ForeignSetup
    name: str
    image: np.ndarray
    classes: np.ndarray
    flakes: list[tuple[SimFlake, shapely.Polygon | shapely.MultiPolygon]]  # flake, its polygon in (col, row) px
    defocus_um: float


def _to_px(geom: Any, transform: PixelTransform, centre: tuple[float, float], shape: tuple[int, int]) -> Any:
    def rows_cols(coords: np.ndarray) -> np.ndarray:
        row, col = transform.stage_to_pixel(coords[:, 0], coords[:, 1], centre, shape)
        return np.column_stack([col, row])

    return shapely.transform(geom, rows_cols)


def _fill(canvas: np.ndarray, geom: Any, value: int) -> None:
    """Paint the pixels whose centres ``geom`` ((col, row) pixel coordinates) covers."""
    polys = getattr(geom, "geoms", [geom])
    for poly in polys:
        if poly.is_empty or poly.geom_type != "Polygon":
            continue
        ext = np.rint(np.asarray(poly.exterior.coords) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [ext], value, lineType=cv2.LINE_8, shift=4)
        holes = [np.rint(np.asarray(h.coords) * 16).astype(np.int32) for h in poly.interiors]
        if holes:
            cv2.fillPoly(canvas, holes, 0, lineType=cv2.LINE_8, shift=4)


def class_map(view: ChipView, transform: PixelTransform, centre: tuple[float, float],
              shape: tuple[int, int]) -> tuple[np.ndarray, list[tuple[SimFlake, Any]]]:
    """The truth of one frame as a class map, painted in the renderer's order (scratches, residue, flakes,
    dust on top), and every flake's polygon in the frame's (col, row) pixels."""
    canvas = np.zeros(shape, np.uint8)
    for scratch in view.scratches:
        _fill(canvas, _to_px(scratch.polygon, transform, centre, shape), JUNK)
    for residue in view.residue:
        _fill(canvas, _to_px(residue.polygon, transform, centre, shape), JUNK)
    flakes = []
    for flake in view.flakes:
        poly = _to_px(flake.polygon, transform, centre, shape)
        flakes.append((flake, poly))
        # A flake under a hole of another is drawn before it: painting in id order reproduces the render.
        layer_canvas = np.zeros(shape, np.uint8)
        _fill(layer_canvas, poly, 1)
        canvas[layer_canvas > 0] = class_of_layers(flake.layers)
    for dust in view.dust:
        ring = 2.5 if dust.halo else 1.0  # the diffraction halo belongs to the speck
        disc = shapely.Point(dust.x_um, dust.y_um).buffer(ring * dust.radius_um, quad_segs=8)
        _fill(canvas, _to_px(disc, transform, centre, shape), JUNK)
    return canvas, flakes


def training_tiles(seed: int, tiles: int, *, materials: tuple[str, ...] = DEFAULT_MATERIALS,
                   tiles_per_setup: int = 3, tile_grid: tuple[int, int] = TILE_GRID, grid_um: float = GRID_UM,
                   defocus_fraction: float = 0.15) -> Iterator[TrainingTile]:
    """``tiles`` tiles from setups ``seed``, ``seed + 1``, ... (``tiles_per_setup`` each), cluttered at random."""
    from flakehunter.registry import get_registry

    made = 0
    setup_seed = seed
    while made < tiles:
        setup = draw_setup(setup_seed, materials=materials)
        rng = np.random.default_rng([setup_seed, 77])
        setup_seed += 1
        f = grid_factor(setup.pixel_size_um, grid_um)
        shape = (tile_grid[0] * f, tile_grid[1] * f)
        n = min(tiles_per_setup, tiles - made)
        spec, centres = chip_spec_for(setup, n, shape)
        spec = spec.model_copy(update={
            # Thin flakes cover well under 1 % of a benchmark tile; two to four times as many teach more per tile.
            "thin_flakes": int(spec.thin_flakes * rng.uniform(2.0, 4.0)),
            "multilayer_flakes": int(spec.multilayer_flakes * rng.uniform(1.0, 3.0)),
            "residue_blobs": int(spec.residue_blobs * rng.uniform(1.0, 4.0)),
            "dust": int(spec.dust * rng.uniform(0.5, 3.0)),
            "scratches": int(rng.integers(0, 4)),
            "attached_fraction": float(rng.uniform(0.3, 0.7)),
        })
        material = get_registry().material(setup.material)
        layout = generate_chip(spec, material, setup.oxide_nm, setup.seed)
        transform = PixelTransform(setup.pixel_size_um)
        scope = SimulatedMicroscope(layout, material=setup.material, oxide_nm=setup.oxide_nm, seed=setup.seed,
                                    transform=transform, shape=shape, imaging=ImagingOptions(setup=setup))
        for i, (x, y) in enumerate(centres[:n]):
            # Out of focus by up to ~3 depths of field: the blur grows to a few pixels.
            defocus = float(rng.uniform(2.0, 12.0)) if rng.random() < defocus_fraction else 0.0
            image = scope.snap_at(x, y, defocus_um=defocus)
            view = layout.query(*transform.footprint((x, y), shape).bounds)
            classes, flakes = class_map(view, transform, (x, y), shape)
            yield TrainingTile(setup, f"s{setup.seed}_t{i}", image, classes, flakes, defocus)
            made += 1


def write_segment_dataset(out: Path, tiles: int, *, seed: int = FIRST_TRAINING_SEED,
                          materials: tuple[str, ...] = DEFAULT_MATERIALS, tiles_per_setup: int = 3,
                          tile_grid: tuple[int, int] = TILE_GRID, grid_um: float = GRID_UM,
                          echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``tiles`` grid images with class maps into ``out`` (new or empty); returns dataset.json."""
    _check_out(out, tiles)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    totals: Counter[int] = Counter()
    for tile in training_tiles(seed, tiles, materials=materials, tiles_per_setup=tiles_per_setup,
                               tile_grid=tile_grid, grid_um=grid_um):
        f = grid_factor(tile.setup.pixel_size_um, grid_um)
        image = tile.image.astype(np.float32) / (255.0 if tile.image.dtype == np.uint8 else 65535.0)
        grid = block_average(image, f)
        grid16 = np.clip(np.rint(grid * 65535.0), 0, 65535).astype(np.uint16)
        labels = class_fractions_to_grid(tile.classes, f)
        name = f"{len(rows):05d}"
        _write_png(out / "images" / f"{name}.png", cv2.cvtColor(grid16, cv2.COLOR_RGB2BGR))
        _write_png(out / "labels" / f"{name}.png", labels)
        counts = np.bincount(labels[labels != IGNORE], minlength=len(CLASSES))
        totals.update({k: int(v) for k, v in enumerate(counts)})
        s = tile.setup
        rows.append({"path": f"images/{name}.png", "labels": f"labels/{name}.png", "setup_seed": s.seed,
                     "material": s.material, "pixel_size_um": round(s.pixel_size_um * f, 4),
                     "camera_pixel_size_um": s.pixel_size_um, "factor": f, "defocus_um": round(tile.defocus_um, 1),
                     "setup": s.summary(),
                     **{f"px_{c}": int(counts[k]) for k, c in enumerate(CLASSES)}})
        if echo is not None and len(rows) % 25 == 0:
            echo(f"{len(rows)}/{tiles} tiles")
    write_csv(out / "labels.csv", rows)
    meta: dict[str, Any] = {
        "format": DATASET_FORMAT, "version": 1, "task": "segment", "labels": "labels.csv",
        "classes": list(CLASSES), "ignore": IGNORE, "count": len(rows),
        "class_pixels": {c: totals.get(k, 0) for k, c in enumerate(CLASSES)},
        "grid_um": grid_um, "tile_grid": list(tile_grid), "seed": seed, "tiles_per_setup": tiles_per_setup,
        "materials": list(materials),
        "note": "images are block means on the analysis grid (flakehunter.training.segment_input), 16-bit RGB",
        "generator": f"flakehunter {__version__} simulate dataset --task segment",
    }
    write_json_atomic(out / "dataset.json", meta)
    return meta


def write_axis_dataset(out: Path, count: int, *, seed: int = FIRST_TRAINING_SEED,
                       materials: tuple[str, ...] = DEFAULT_MATERIALS, tiles_per_setup: int = 3,
                       crop_px: int = 64, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``count`` flake windows (cnn-axis input, 8-bit) labelled with θ into ``out``; returns dataset.json."""
    from flakehunter.registry import get_registry
    from flakehunter.training.axis_input import (
        flake_coordinate,
        flake_vector,
        to_uint8,
        window_box,
        window_contrast,
    )
    from flakehunter.training.segment_input import contrast_grid

    _check_out(out, count)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng([seed, 5])
    periods = {m: float(get_registry().material(m).edge_symmetry_deg) for m in materials}
    if len(set(periods.values())) > 1:
        raise InputError(f"--materials: {', '.join(materials)} have different edge symmetries ({periods}); "
                         "an axis dataset holds one period")
    period = next(iter(periods.values()))
    for tile in training_tiles(seed, 10**9, materials=materials, tiles_per_setup=tiles_per_setup):
        if len(rows) >= count:
            break
        grid = contrast_grid(tile.image, tile.setup.pixel_size_um)
        rows_px, cols_px = tile.image.shape[:2]
        for flake, poly in tile.flakes:
            if len(rows) >= count or not flake.straight_edges or flake.layers > 20:
                continue
            c0, r0, c1, r1 = poly.bounds
            if c0 < 2 or r0 < 2 or c1 > cols_px - 3 or r1 > rows_px - 3 or min(r1 - r0, c1 - c0) < 6:
                continue  # not wholly in the frame, or too small to show an edge
            box = window_box((int(r0), int(c0), math.ceil(r1) + 1, math.ceil(c1) + 1))
            contrast = window_contrast(tile.image, grid, box)
            mask = np.zeros(contrast.shape[:2], np.uint8)
            _fill(mask, shapely.affinity.translate(poly, -box[1], -box[0]).buffer(-1.5), 1)
            if mask.sum() < 4:
                continue
            vector = flake_vector(contrast, mask > 0) * rng.uniform(0.9, 1.1)  # as a detector would measure it
            name = f"images/{len(rows):05d}.png"
            _write_png(out / name, to_uint8(flake_coordinate(contrast, vector), crop_px))
            rows.append({"path": name, "angle_deg": f"{flake.theta_deg % period:.3f}", "setup_seed": tile.setup.seed,
                         "material": tile.setup.material, "layers": flake.layers,
                         "area_um2": round(flake.area_um2, 1), "window_px": box[2] - box[0],
                         "pixel_size_um": tile.setup.pixel_size_um})
        if echo is not None:
            echo(f"{len(rows)}/{count} windows")
    write_csv(out / "labels.csv", rows)
    meta: dict[str, Any] = {
        "format": DATASET_FORMAT, "version": 1, "task": "axis", "labels": "labels.csv", "label_column": "angle_deg",
        "count": len(rows), "classes": None, "class_counts": None, "period_deg": period,
        "angle_convention": "image angle from +col towards +row (clockwise as displayed), modulo period_deg",
        "input": "flake-contrast", "crop_px": crop_px, "seed": seed, "materials": list(materials),
        "generator": f"flakehunter {__version__} simulate dataset --task axis --foreign",
    }
    write_json_atomic(out / "dataset.json", meta)
    return meta


def _check_out(out: Path, count: int) -> None:
    if count < 1:
        raise InputError(f"--count: expected at least 1, got {count}")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out: {out} is not empty; choose a new folder")


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    with atomic_write(path, "wb") as fh:
        fh.write(data.tobytes())
