"""Grad-CAM in evaluate-model: the heat of a classifier trained to tell a bright square from bare noise
lies on the square, wherever the square is."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from flakehunter.cli import app
from flakehunter.training.evaluate import load_trained_model
from flakehunter.training.gradcam import grad_cam
from flakehunter.training.trainer import Trainer
from tests.test_training_fixtures import tiny_recipe, write_png

SIZE, SQUARE = 48, 10


def _square_images(root: Path, count: int, seed: int) -> list[tuple[int, int]]:
    """``root/square/*.png`` (a bright square at a random place in noise) and ``root/empty/*.png``."""
    rng = np.random.default_rng(seed)
    corners = []
    for i in range(count):
        for name in ("square", "empty"):
            image = rng.normal(100, 12, (SIZE, SIZE, 3))
            if name == "square":
                r, c = rng.integers(0, SIZE - SQUARE, 2)
                image[r : r + SQUARE, c : c + SQUARE] += 80
                corners.append((int(r), int(c)))
            write_png(root / name / f"{name}-{i:03d}.png", np.clip(image, 0, 255).astype(np.uint8))
    return corners


def test_gradcam_heat_lies_on_the_evidence(tmp_path: Path) -> None:
    """Trained on squares vs empty noise, the model's Grad-CAM for 'square' peaks on the square in at least
    90 % of held-out images; evaluate-model --gradcam writes the maps, misclassified first, with an index."""
    _square_images(tmp_path / "train", 40, seed=1)
    corners = _square_images(tmp_path / "test", 12, seed=2)
    recipe = tiny_recipe(tmp_path, tmp_path / "train", width=8, epochs=8, batch_size=16, image_size=SIZE,
                         val_fraction=0.0)
    Trainer(recipe).run()
    model, ckpt = load_trained_model(recipe.out / "last.pt")
    classes = ckpt["classes"]
    pre = ckpt["preprocess"]
    from flakehunter.tiles import read_image
    from flakehunter.training.torchdata import to_tensor

    mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
    squares = sorted((tmp_path / "test" / "square").glob("*.png"))
    batch = torch.stack([to_tensor(read_image(p)[0].astype(np.float32) / 255, mean, std) for p in squares])
    heat = grad_cam(model, batch, torch.full((len(squares),), classes.index("square")))
    assert heat.shape == (len(squares), SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1
    on_square = 0
    for h, (r, c) in zip(heat, corners, strict=True):
        peak_r, peak_c = np.unravel_index(np.argmax(h), h.shape)
        on_square += (r - 4 <= peak_r < r + SQUARE + 4) and (c - 4 <= peak_c < c + SQUARE + 4)
    assert on_square >= 0.9 * len(squares), f"{on_square}/{len(squares)} peaks on the square"

    result = CliRunner().invoke(app, ["evaluate-model", str(recipe.out / "last.pt"), "--data",
                                      str(tmp_path / "test"), "--out", str(tmp_path / "eval"), "--gradcam", "5",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "eval" / "gradcam" / "index.csv", newline="", encoding="utf-8") as fh:
        index = list(csv.DictReader(fh))
    assert len(index) == 5 and all((tmp_path / "eval" / "gradcam" / row["file"]).stat().st_size > 0 for row in index)
    wrong = [row["true"] != row["predicted"] for row in index]
    assert wrong == sorted(wrong, reverse=True), "misclassified images come first"
