"""SimCLR pretraining: the NT-Xent loss is right, pretraining learns, and its backbone fine-tunes."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flakehunter.errors import InputError
from flakehunter.models.weights import load_backbone_file
from flakehunter.training.checkpoint import load_checkpoint
from flakehunter.training.recipe import PretrainRecipe
from flakehunter.training.simclr import nt_xent, pretrain, random_resized_crop
from flakehunter.training.trainer import Trainer
from tests.test_training_fixtures import make_imagefolder, tiny_recipe, write_png


def _nt_xent_by_hand(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """The loss of Chen et al. (2020), eq. 1, written as loops over the 2N views."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).tolist()
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        sims = [sum(a * b for a, b in zip(z[i], z[k], strict=True)) / tau for k in range(n2)]
        denominator = sum(math.exp(sims[k]) for k in range(n2) if k != i)
        total += -math.log(math.exp(sims[j]) / denominator)
    return total / n2


def test_nt_xent_matches_the_paper_formula() -> None:
    """Vectorised NT-Xent equals the per-view formula; identical pairs far from the others give a low loss."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert float(nt_xent(z1, z2, 0.5)) == pytest.approx(_nt_xent_by_hand(z1, z2, 0.5), rel=1e-5)
    aligned = torch.eye(4) * 3
    assert float(nt_xent(aligned, aligned, 0.1)) < 0.01


def test_random_resized_crop_keeps_the_size_and_a_fair_share_of_the_image() -> None:
    """Views have the requested size, and a window of area >= min_scale (aspect <= 4/3) spans at least
    sqrt(0.5 · 1600 · 3/4) = 24.5 of 40 rows and of 40 columns (read from a ramp image)."""
    rows, cols = np.mgrid[0:40, 0:40].astype(np.float32)
    image = np.stack([rows, cols, np.zeros_like(rows)], axis=2)
    for k in range(20):
        view = random_resized_crop(image, 24, 0.5, np.random.default_rng(k))
        assert view.shape == (24, 24, 3)
        assert np.ptp(view[..., 0]) >= 23 and np.ptp(view[..., 1]) >= 23


def _unlabelled(root: Path, n: int) -> Path:
    """Patches with a random bright disc on a dark background: what SimCLR must tell apart."""
    rng = np.random.default_rng(0)
    for i in range(n):
        image = np.full((20, 20, 3), 60, np.uint8)
        r, c, rad = rng.integers(5, 15), rng.integers(5, 15), rng.integers(2, 5)
        yy, xx = np.mgrid[0:20, 0:20]
        image[(yy - r) ** 2 + (xx - c) ** 2 <= rad**2] = rng.integers(120, 250, 3)
        write_png(root / f"u{i:03d}.png", image)
    return root


def test_pretraining_learns_saves_full_and_backbone_weights_and_fine_tunes(tmp_path: Path) -> None:
    """A few SimCLR epochs lower the NT-Xent loss; simclr.pt (backbone + projection head) and backbone.pt
    are written; train --backbone-weights starts from exactly those backbone weights (frozen here, so
    they are still equal after training) and uses the pretraining's standardisation."""
    data = _unlabelled(tmp_path / "unlabelled", 24)
    recipe = PretrainRecipe(data=data, out=tmp_path / "pre", width=4, epochs=6, batch_size=12, lr=0.01,
                            device="cpu", tensorboard=False, crop=16)
    summary = pretrain(recipe)
    with open(recipe.out / "log.csv", newline="", encoding="utf-8") as fh:
        losses = [float(r["train_loss"]) for r in csv.DictReader(fh)]
    assert len(losses) == 6 and min(losses[-3:]) < losses[0]
    assert summary["view_px"] == 16
    full = load_checkpoint(recipe.out / "simclr.pt")
    assert full["kind"] == "simclr" and any(k.startswith("projector.") for k in full["state_dict"])
    backbone = load_backbone_file(recipe.out / "backbone.pt")
    assert backbone["model"] == "small-cnn" and backbone["width"] == 4
    assert not any(k.startswith("projector.") for k in backbone["state_dict"])

    labelled = make_imagefolder(tmp_path / "labelled", {"bright": 6, "dark": 6}, size=20)
    run = tiny_recipe(tmp_path, labelled, epochs=2, val_fraction=0, backbone_weights=recipe.out / "backbone.pt",
                      freeze_backbone=True, crop=16)
    Trainer(run).run()
    trained = load_checkpoint(run.out / "last.pt")
    for key, value in backbone["state_dict"].items():
        assert torch.equal(trained["state_dict"][f"backbone.{key}"], value), key
    assert trained["preprocess"]["mean"] == backbone["preprocess"]["mean"]


def test_backbone_of_another_model_is_refused(tmp_path: Path) -> None:
    """A small-cnn width-4 backbone cannot seed a width-8 network: one-line error naming both."""
    data = _unlabelled(tmp_path / "u", 8)
    pretrain(PretrainRecipe(data=data, out=tmp_path / "pre", width=4, epochs=1, batch_size=4, device="cpu",
                            tensorboard=False))
    labelled = make_imagefolder(tmp_path / "labelled", size=20)
    run = tiny_recipe(tmp_path, labelled, width=8, epochs=1, backbone_weights=tmp_path / "pre" / "backbone.pt")
    expected = r"holds a small-cnn \(width 4\) backbone; this run builds small-cnn \(width 8\)"
    with pytest.raises(InputError, match=expected):
        Trainer(run).run()


def test_pretraining_resumes_after_the_last_epoch(tmp_path: Path) -> None:
    """An interrupted pretraining continues at the next epoch and ends equal to an uninterrupted one."""
    data = _unlabelled(tmp_path / "u", 12)
    common = {"data": data, "width": 4, "epochs": 3, "batch_size": 6, "device": "cpu", "tensorboard": False}
    pretrain(PretrainRecipe(out=tmp_path / "a", **common))

    def stop_after_two(message: str) -> None:
        if message.startswith("epoch 2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(PretrainRecipe(out=tmp_path / "b", **common), echo=stop_after_two)
    pretrain(PretrainRecipe(out=tmp_path / "b", **common), resume=True)
    a = load_backbone_file(tmp_path / "a" / "backbone.pt")["state_dict"]
    b = load_backbone_file(tmp_path / "b" / "backbone.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
