"""Localisation: a detector's pixel detections of one image become candidates in stage µm."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from shapely.geometry import Polygon

from flakehunter.analysis.detector import Detection
from flakehunter.candidates import Candidate

if TYPE_CHECKING:
    from flakehunter.geometry import PixelTransform


def bbox_polygon(
    bbox: tuple[int, int, int, int], transform: PixelTransform, centre_um: tuple[float, float], shape: tuple[int, int]
) -> Polygon:
    """A detection's pixel bounding box (row0, col0, row1, col1; exclusive) as a stage-µm polygon."""
    r0, c0, r1, c1 = bbox
    x, y = transform.pixel_to_stage(
        np.array([r0, r0, r1, r1], float) - 0.5, np.array([c0, c1, c1, c0], float) - 0.5, centre_um, shape
    )
    return Polygon(np.column_stack([x, y]))


def to_candidates(
    detections: Sequence[Detection],
    *,
    image: str,
    shape: tuple[int, int],
    centre_um: tuple[float, float],
    transform: PixelTransform,
    material: str,
    z_um: float | None = None,
    tile: int | None = None,
    positioned: bool = True,
    orientation_period_deg: float = 180.0,
) -> list[Candidate]:
    """Map pixel detections of one image to stage-µm candidates (ids are assigned by the sink).

    Orientations turn from image to stage directions and are reduced modulo ``orientation_period_deg``
    (the material's edge symmetry).
    """
    out = []
    area_px_um2 = transform.pixel_size_um**2
    for d in detections:
        x, y = transform.pixel_to_stage(d.row, d.col, centre_um, shape)
        c = d.contrast_rgb
        out.append(
            Candidate(
                id=0,
                x_um=float(x),
                y_um=float(y),
                material=material,
                layers=d.layers,
                layer_class=d.layer_class,
                score=float(min(max(d.score, 0.0), 1.0)),
                area_um2=float(d.area_px * area_px_um2),
                orientation_deg=None
                if d.orientation_deg is None or math.isnan(d.orientation_deg)
                else transform.angle_to_stage(d.orientation_deg) % orientation_period_deg,
                image=image,
                row=float(d.row),
                col=float(d.col),
                z_um=z_um,
                tile=tile,
                positioned=positioned,
                detector=d.detector,
                contrast_r=None if c is None else float(c[0]),
                contrast_g=None if c is None else float(c[1]),
                contrast_b=None if c is None else float(c[2]),
            )
        )
    return out
