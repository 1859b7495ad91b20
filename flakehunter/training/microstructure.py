"""Synthetic optical micrographs of polycrystalline microstructures: coarse versus fine grains.

A grain structure is a Voronoi tessellation of random seed points relaxed once by Lloyd's algorithm
(closer to real equiaxed grains than a raw Poisson-Voronoi one). Each grain gets its own etch
brightness (grain orientation contrast), boundaries are dark etched grooves one or two pixels wide,
and the image gets what an optical microscope adds: slight blur, uneven illumination, a few dark
inclusions and noise. The class is the mean grain diameter as a fraction of the image width:
``coarse`` in [0.18, 0.32], ``fine`` in [0.06, 0.11].
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.spatial import cKDTree

from flakehunter.atomic import atomic_write, write_json_atomic
from flakehunter.errors import InputError

#: Mean grain diameter as a fraction of the image width, per class.
GRAIN_DIAMETER_FRACTION: dict[str, tuple[float, float]] = {"coarse": (0.18, 0.32), "fine": (0.06, 0.11)}


def voronoi_labels(size_px: int, diameter_px: float, rng: np.random.Generator, lloyd_steps: int = 1) -> np.ndarray:
    """(size, size) int array of grain ids for grains of mean equivalent diameter ``diameter_px``."""
    pad = diameter_px  # seeds outside the frame, so border grains are not artificially large
    lo, hi = -pad, size_px + pad
    grain_area = math.pi / 4 * diameter_px**2
    n = max(2, int(rng.poisson((hi - lo) ** 2 / grain_area)))
    seeds = rng.uniform(lo, hi, size=(n, 2))
    rows, cols = np.mgrid[0:size_px, 0:size_px]
    points = np.column_stack([rows.ravel(), cols.ravel()]).astype(float)
    _, labels = cKDTree(seeds).query(points)
    for _ in range(lloyd_steps):
        counts = np.bincount(labels, minlength=n)
        inside = counts > 0
        centroids = seeds.copy()
        centroids[inside, 0] = np.bincount(labels, points[:, 0], n)[inside] / counts[inside]
        centroids[inside, 1] = np.bincount(labels, points[:, 1], n)[inside] / counts[inside]
        seeds = centroids
        _, labels = cKDTree(seeds).query(points)
    grains: np.ndarray = labels.reshape(size_px, size_px)
    return grains


def microstructure_image(kind: str, size_px: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size) uint8 grey micrograph of class ``kind`` ("coarse" or "fine")."""
    if kind not in GRAIN_DIAMETER_FRACTION:
        raise ValueError(f"kind must be one of {', '.join(GRAIN_DIAMETER_FRACTION)}, got {kind!r}")
    lo, hi = GRAIN_DIAMETER_FRACTION[kind]
    diameter = rng.uniform(lo, hi) * size_px
    labels = voronoi_labels(size_px, diameter, rng)
    brightness = rng.uniform(0.45, 0.8, size=labels.max() + 1)
    image = brightness[labels].astype(np.float32)
    boundary = np.zeros(labels.shape, bool)
    boundary[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    boundary[1:, :] |= labels[1:, :] != labels[:-1, :]
    if rng.random() < 0.5:  # deeper etch: two-pixel grooves
        boundary = cv2.dilate(boundary.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
    image[boundary] = rng.uniform(0.12, 0.25)
    for _ in range(int(rng.integers(0, 6))):  # inclusions / pits, in both classes
        r, c = rng.uniform(0, size_px, 2)
        cv2.circle(image, (int(c), int(r)), int(rng.integers(1, 3)), float(rng.uniform(0.05, 0.2)), -1)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=float(rng.uniform(0.5, 1.0)))
    ramp = np.linspace(-1, 1, size_px, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    illumination = 1 + rng.uniform(0, 0.12) * (math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None])
    image = image * illumination * rng.uniform(0.85, 1.15)
    image += rng.normal(0, rng.uniform(0.01, 0.04), image.shape).astype(np.float32)
    grey: np.ndarray = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return grey


def write_microstructure_dataset(out: Path, count_per_class: int, size_px: int = 128, seed: int = 0) -> dict[str, Any]:
    """Write ``out/coarse/*.png`` and ``out/fine/*.png`` (an ImageFolder dataset) and ``microstructure.json``."""
    out = Path(out)
    if count_per_class < 1:
        raise InputError(f"--count: expected at least 1 image per class, got {count_per_class}")
    if size_px < 32:
        raise InputError(f"--size: expected at least 32 px, got {size_px}")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out: {out} is not empty; choose a new folder")
    for k, kind in enumerate(GRAIN_DIAMETER_FRACTION):
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count_per_class):
            image = microstructure_image(kind, size_px, np.random.default_rng([seed, k, i]))
            ok, data = cv2.imencode(".png", image)
            assert ok
            with atomic_write(folder / f"{kind}-{i:05d}.png", "wb") as fh:
                fh.write(data.tobytes())
    meta = {"generator": "flakehunter.training.microstructure", "classes": list(GRAIN_DIAMETER_FRACTION),
            "count_per_class": count_per_class, "size_px": size_px, "seed": seed,
            "grain_diameter_fraction": GRAIN_DIAMETER_FRACTION}
    write_json_atomic(out / "microstructure.json", meta)
    return meta
