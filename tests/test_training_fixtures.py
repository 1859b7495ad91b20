"""Tiny synthetic datasets for the training tests (helpers only; this module holds no tests).

Everything is written as real image files under a test's tmp_path, in the formats the toolkit reads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flakehunter.training.recipe import TrainRecipe

SIZE = 16


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write a uint8 grey or RGB array as PNG (RGB order in, as the toolkit reads it back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)
    return path


def brightness_image(bright: bool, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A noisy RGB patch, bright (mean ~170) or dark (mean ~90): a class no symmetry changes."""
    level = 170 if bright else 90
    return np.clip(rng.normal(level, 20, (size, size, 3)), 0, 255).astype(np.uint8)


def make_imagefolder(root: Path, counts: dict[str, int] | None = None, seed: int = 0, size: int = SIZE) -> Path:
    """``root/bright/*.png`` and ``root/dark/*.png``."""
    counts = counts or {"bright": 12, "dark": 12}
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        for i in range(n):
            write_png(root / name / f"{name}-{i:03d}.png", brightness_image(name == "bright", rng, size))
    return root


def edge_image(theta_deg: float, size: int = 33, blur: float = 2.0) -> np.ndarray:
    """A grey image split by a straight edge through its centre whose direction is θ.

    θ follows the toolkit's convention: the edge runs along (d_row, d_col) = (sin θ, cos θ), i.e. from
    the +col axis towards the +row axis. Pixels on the side of the normal (−sin θ, cos θ) in (col, row)
    are bright.
    """
    t = math.radians(theta_deg)
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    c0 = (size - 1) / 2
    signed = -(cols - c0) * math.sin(t) + (rows - c0) * math.cos(t)
    image = 60 + 140 / (1 + np.exp(-signed / blur))
    return np.clip(image, 0, 255).astype(np.uint8)


def edge_direction_deg(image: np.ndarray) -> float:
    """The dominant straight-edge direction of a grey image, mod 180°, from its gradient structure tensor.

    Independent of the code under test: the gradient's dominant orientation φ (from +col towards +row)
    is normal to the edge, so the edge runs at φ + 90°.
    """
    img = image.astype(float)
    g_row, g_col = np.gradient(img)
    jcc, jrr, jcr = (g_col**2).sum(), (g_row**2).sum(), (g_col * g_row).sum()
    phi = 0.5 * math.degrees(math.atan2(2 * jcr, jcc - jrr))
    return (phi + 90.0) % 180.0


def wrapped_diff(a: float, b: float, period: float) -> float:
    return abs((a - b + period / 2) % period - period / 2)


def tiny_recipe(tmp_path: Path, data: Path, **changes: Any) -> TrainRecipe:
    """A recipe that trains a width-4 small CNN on 16 px images in well under a second per epoch."""
    base: dict[str, Any] = {
        "task": "classify", "data": data, "out": tmp_path / "run", "model": "small-cnn", "width": 4, "epochs": 3,
        "batch_size": 8, "lr": 0.01, "device": "cpu", "tensorboard": False, "seed": 0,
    }
    base.update(changes)
    return TrainRecipe.model_validate(base)
