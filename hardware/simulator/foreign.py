"""Render a small chip on a foreign setup: tiles, their truth in each tile's pixels, and the files a user
would have (OME-TIFF with stage positions and pixel size, or PNG/JPEG with neither).

    setup = draw_setup(5)
    chip = render_foreign_chip(setup, tiles=9, shape=(1024, 1360))
    for tile in chip.tiles:
        write_tile_file(tile, folder, setup)         # what `flakehunter detect` reads
        tile.flakes                                   # truth polygons in (col, row) pixels

Tiles lie on a grid with a small gap between them (no overlap), so each flake is scored in the one tile
that shows it whole; a flake cut by a tile border is marked (``visible_fraction`` < 1) and the scorer
ignores it rather than demanding it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.chip import ChipLayout, ChipSpec
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.hardware.simulator.imaging import ImagingOptions
from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
from flakehunter.hardware.simulator.setup import ForeignSetup

#: Gap between neighbouring tiles, as a fraction of the field of view.
TILE_GAP = 0.05
_SUFFIX = {"ome-tiff": ".ome.tif", "png": ".png", "jpeg": ".jpg"}


@dataclass(frozen=True)
class PixelFlake:
    """A true flake in one tile's pixels: ``polygon_px`` in (col, row) coordinates, pixel centres at integers.

    ``area_um2`` is the whole flake's area on the chip; ``visible_fraction`` how much of it the tile shows.
    ``theta_deg`` (crystal axis, stage frame, modulo the material's edge symmetry) equals the pixel-frame
    angle atan2(d row, d col): the simulator's transform has no rotation or flip.
    """

    id: int
    layers: int
    theta_deg: float
    straight_edges: bool
    area_um2: float
    polygon_px: BaseGeometry
    visible_fraction: float


@dataclass
class ForeignTile:
    index: int
    name: str
    centre_um: tuple[float, float]
    image: np.ndarray
    flakes: list[PixelFlake] = field(default_factory=list)


@dataclass
class ForeignChip:
    setup: ForeignSetup
    layout: ChipLayout
    shape: tuple[int, int]
    tiles: list[ForeignTile]


def chip_spec_for(
    setup: ForeignSetup, tiles: int, shape: tuple[int, int]
) -> tuple[ChipSpec, list[tuple[float, float]]]:
    """A chip just big enough for ``tiles`` fields of view, dense in 1-3L flakes, and the tile centres.

    Flake sizes grow with the pixel size so that most thin flakes stay resolvable (a 2.5 µm/px camera
    cannot show a 5 µm flake); the counts give about 8 thin flakes per tile.
    """
    p = setup.pixel_size_um
    rows, cols = shape
    fov = (cols * p, rows * p)  # (x, y) µm
    grid_cols = math.ceil(math.sqrt(tiles))
    grid_rows = math.ceil(tiles / grid_cols)
    pitch = (fov[0] * (1 + TILE_GAP), fov[1] * (1 + TILE_GAP))
    margin = 30.0
    centres = [
        (margin + fov[0] / 2 + (i % grid_cols) * pitch[0], margin + fov[1] / 2 + (i // grid_cols) * pitch[1])
        for i in range(tiles)
    ]
    size = (2 * margin + fov[0] + (grid_cols - 1) * pitch[0], 2 * margin + fov[1] + (grid_rows - 1) * pitch[1])
    per_tile_area_mm2 = fov[0] * fov[1] / 1e6
    scale = max(1.0, p / 1.0)
    spec = ChipSpec(
        origin_um=(0.0, 0.0),
        size_um=size,
        edge_margin_um=20.0,
        thin_flakes=8 * tiles,
        thin_layer_weights={1: 0.4, 2: 0.3, 3: 0.2, 4: 0.1},
        thin_median_diameter_um=14.0 * scale,
        thin_min_diameter_um=4.0 * scale,
        thin_max_diameter_um=120.0 * scale,
        thick_flakes=max(3 * tiles, int(4 * tiles * min(per_tile_area_mm2, 2.0))),
        thick_median_diameter_um=45.0 * scale,
        thick_min_diameter_um=8.0 * scale,
        thick_max_diameter_um=400.0 * scale,
        multilayer_flakes=tiles,
        multilayer_median_diameter_um=25.0 * scale,
        residue_blobs=2 * tiles,
        residue_length_um=(20.0 * scale, 200.0 * scale),
        dust=15 * tiles,
        dust_radius_um=(0.5 * scale, 4.0 * scale),
        scratches=1,
        oxide_jitter_nm=0.0,
        oxide_gradient_nm_per_mm=0.3,
        tilt_um_per_mm=0.0,
        min_spacing_um=12.0 * scale,
    )
    return spec, centres


def render_foreign_chip(
    setup: ForeignSetup, tiles: int = 9, shape: tuple[int, int] = (1024, 1360), spec: ChipSpec | None = None,
) -> ForeignChip:
    """Generate a chip for ``setup`` and render ``tiles`` frames of ``shape`` (rows, cols), with truth.

    Images are as the camera records them; a JPEG setup's compression is applied when the file is
    written (`write_tile_file`), not here. The chip's oxide is the setup's true oxide.
    """
    from flakehunter.registry import get_registry

    default_spec, centres = chip_spec_for(setup, tiles, shape)
    material = get_registry().material(setup.material)
    layout = generate_chip(spec or default_spec, material, setup.oxide_nm, setup.seed)
    transform = PixelTransform(setup.pixel_size_um)
    scope = SimulatedMicroscope(
        layout, material=setup.material, oxide_nm=setup.oxide_nm, seed=setup.seed, transform=transform,
        shape=shape, imaging=ImagingOptions(setup=setup, jpeg_roundtrip=False),
    )
    out = []
    for i, (x, y) in enumerate(centres):
        image = scope.snap_at(x, y)
        out.append(ForeignTile(i, f"tile_{i:03d}", (x, y), image, tile_truth(scope, layout, (x, y))))
    return ForeignChip(setup, layout, shape, out)


def tile_truth(scope: SimulatedMicroscope, layout: ChipLayout, centre_um: tuple[float, float]) -> list[PixelFlake]:
    """Every flake a tile shows, mapped into its pixels and clipped to the frame."""
    rows, cols = scope.shape
    frame = shapely.box(-0.5, -0.5, cols - 0.5, rows - 0.5)
    xmin, ymin, xmax, ymax = scope.camera.transform.footprint(centre_um, scope.shape).bounds
    out = []
    for flake in layout.query(xmin, ymin, xmax, ymax).flakes:
        parts = getattr(flake.polygon, "geoms", [flake.polygon])
        polys = [
            shapely.Polygon(scope.camera._to_pixels(np.asarray(part.exterior.coords), centre_um)) for part in parts
        ]
        full = shapely.union_all(polys)
        visible = full.intersection(frame)
        if visible.is_empty or visible.area <= 0:
            continue
        out.append(PixelFlake(
            flake.id, flake.layers, flake.theta_deg, flake.straight_edges, flake.area_um2, visible,
            min(1.0, float(visible.area / full.area)),
        ))
    return out


def write_tile_file(tile: ForeignTile, folder: str | Path, setup: ForeignSetup) -> Path:
    """Write ``tile`` as the setup's file format: OME-TIFF carries pixel size and stage position,
    PNG and JPEG carry neither (a 12-bit PNG holds 0..4095 in 16-bit words)."""
    from flakehunter.tiles import write_tile

    path = Path(folder) / f"{tile.name}{_SUFFIX[setup.file_format]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if setup.file_format == "ome-tiff":
        write_tile(path, tile.image, pixel_size_um=setup.pixel_size_um, x_um=tile.centre_um[0],
                   y_um=tile.centre_um[1], z_um=None, provenance={"foreign_setup_seed": setup.seed})
        return path
    bgr = cv2.cvtColor(tile.image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, setup.jpeg_quality] if setup.file_format == "jpeg" else []
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"{path}: could not write image")
    return path
