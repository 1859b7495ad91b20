"""``flakehunter train --task segment``: foreign-setup tiles with class maps, a U-Net whose loss falls, a plain
state dict that the cnn-thickness detector loads, and people's labels (label images, YOLO boxes) as data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flakehunter.errors import ConfigError
from flakehunter.hardware.simulator.foreign_dataset import write_segment_dataset
from flakehunter.plugins.cnn.model_store import load_model
from flakehunter.training.recipe import TrainRecipe, build_recipe
from flakehunter.training.segment_data import load_sample, open_segment_dataset
from flakehunter.training.segment_input import CLASSES, IGNORE, classes_from_layer_image, grid_factor
from flakehunter.training.trainer import Trainer


@pytest.fixture(scope="module")
def segment_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("segment") / "data"
    write_segment_dataset(out, 4, seed=100_000, tiles_per_setup=2, tile_grid=(64, 96))
    return out


def test_simulated_tiles_come_with_class_maps_on_the_grid(segment_data: Path) -> None:
    meta = json.loads((segment_data / "dataset.json").read_text())
    assert meta["task"] == "segment" and meta["classes"] == list(CLASSES) and meta["count"] == 4
    data = open_segment_dataset(segment_data)
    contrast, labels = load_sample(data.samples[0])
    assert contrast.shape == (64, 96, 3) and labels.shape == (64, 96)
    assert set(np.unique(labels)) <= {*range(len(CLASSES)), IGNORE}
    # The substrate is where the contrast is about zero; flakes stand out of it.
    substrate = labels == 0
    assert substrate.mean() > 0.5 and abs(float(np.median(contrast[substrate]))) < 0.01


def _recipe(tmp_path: Path, data: Path, **changes: object) -> TrainRecipe:
    base = {"task": "segment", "data": str(data), "out": str(tmp_path / "run"), "width": 4, "epochs": 4,
            "batch_size": 4, "crop": 48, "draws_per_image": 4, "lr": 0.01, "schedule": "constant",
            "val_fraction": 0.0, "threads": 1, "seed": 3}
    return build_recipe(TrainRecipe, None, {**base, **changes})


def test_the_segment_task_trains_and_its_loss_falls(tmp_path: Path, segment_data: Path) -> None:
    summary = Trainer(_recipe(tmp_path, segment_data)).run()
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert len(losses) == 4 and losses[-1] < 0.85 * losses[0]
    assert summary["model"]["name"] == "unet" and summary["model"]["task"] == "segment"
    # model.pt is a plain state dict the detector loads (weights_only), with model.json beside it.
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = load_model(tmp_path / "run" / "model.pt", "cpu", "segment")
    assert loaded.classes == list(CLASSES)
    x = torch.zeros(1, 3, 32, 48)
    assert loaded.network(x).shape == (1, len(CLASSES), 32, 48)


def test_fine_tuning_starts_from_given_weights(tmp_path: Path, segment_data: Path) -> None:
    Trainer(_recipe(tmp_path, segment_data, epochs=1)).run()
    start = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    tuned = _recipe(tmp_path, segment_data, epochs=1, lr=1e-9, out=str(tmp_path / "tuned"),
                    init_weights=str(tmp_path / "run" / "model.pt"))
    trainer = Trainer(tuned)
    trainer.run()
    first_conv = "backbone.stem.0.weight"
    assert torch.allclose(trainer.model.state_dict()[first_conv].cpu(), start[first_conv], atol=1e-6)
    with pytest.raises(ConfigError, match="segment trains the unet model"):
        _recipe(tmp_path, segment_data, model="small-cnn")


def test_label_images_and_yolo_boxes_become_class_maps(tmp_path: Path) -> None:
    rows, cols = 120, 160
    image = np.full((rows, cols, 3), 150, np.uint8)
    image[30:60, 40:90] = (135, 130, 140)  # a flake, a few per cent darker
    image[80:100, 100:140] = (60, 60, 60)  # something thick
    folder = tmp_path / "labelled"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    cv2.imwrite(str(folder / "images" / "a.png"), image[..., ::-1])
    labels = np.zeros((rows, cols), np.uint8)
    labels[30:60, 40:90] = 1
    labels[80:100, 100:140] = 40
    labels[0:4, :] = IGNORE
    cv2.imwrite(str(folder / "labels" / "a.png"), labels)
    assert classes_from_layer_image(np.array([0, 1, 3, 4, 20, 21, 255], np.uint8)).tolist() == [0, 1, 3, 4, 4, 5, 255]
    data = open_segment_dataset(folder, pixel_size_um=1.1)
    assert data.format == "label-images"
    _, classes = load_sample(data.samples[0])
    f = grid_factor(1.1)
    assert classes.shape == (-(-rows // f), -(-cols // f))
    assert classes[45 // f, 65 // f] == 1 and classes[90 // f, 120 // f] == 5 and classes[110 // f, 20 // f] == 0

    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    cv2.imwrite(str(yolo / "images" / "a.png"), image[..., ::-1])
    (yolo / "labels" / "a.txt").write_text(f"0 {65 / cols} {45 / rows} {60 / cols} {40 / rows}\n")
    (yolo / "classes.txt").write_text("monolayer\n")
    weak = open_segment_dataset(yolo, pixel_size_um=1.1)
    assert weak.format == "yolo" and weak.samples[0].weak
    _, boxed = load_sample(weak.samples[0])
    assert boxed[45 // f, 65 // f] == 1  # inside the box and standing out: the box's class
    assert boxed[110 // f, 20 // f] == 0  # bare substrate outside every box
    assert boxed[90 // f, 120 // f] == IGNORE  # stands out, but nobody said what it is
