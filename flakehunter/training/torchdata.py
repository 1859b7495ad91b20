"""Samples -> normalised (3, H, W) tensors, with augmentation keyed by (seed, epoch, draw)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from flakehunter.tiles import read_image
from flakehunter.training.augment import Augmenter, centre_crop
from flakehunter.training.datasets import Sample
from flakehunter.training.images import crop_box, to_float_rgb


class ImageLoader:
    """Reads samples as float (H, W, 3) arrays in [0, 1]: the file (cached as stored), its crop box,
    then a resize to ``image_size`` x ``image_size`` when set.
    """

    def __init__(self, image_size: int | None = None, cache: bool = True) -> None:
        self.image_size = image_size
        self.cache = cache
        self._files: dict[str, np.ndarray] = {}

    def __call__(self, sample: Sample) -> np.ndarray:
        key = str(sample.path)
        raw = self._files.get(key)
        if raw is None:
            raw, _ = read_image(sample.path)
            if self.cache:
                self._files[key] = raw
        if sample.box is not None:
            raw = crop_box(raw, sample.box)
        image = to_float_rgb(raw, sample.path)
        size = self.image_size
        if size is not None and image.shape[:2] != (size, size):
            shrink = image.shape[0] > size and image.shape[1] > size
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return image


class ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A torch Dataset over samples; items are ``(image tensor, target)`` for a draw key.

    ``key % len(samples)`` is the sample; the augmentation generator is seeded by (seed, epoch, key),
    so results do not depend on workers, batch order or resumes. ``mean``/``std`` standardise channels.
    """

    def __init__(self, samples: Sequence[Sample], loader: ImageLoader, augmenter: Augmenter, *,
                 mean: Sequence[float], std: Sequence[float], seed: int = 0, train: bool = False) -> None:
        self.samples = list(samples)
        self.loader = loader
        self.augmenter = augmenter
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.seed = seed
        self.train = train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[key % len(self.samples)]
        rng = np.random.default_rng([self.seed, 4, self.epoch, key]) if self.train else None
        image, target = self.augmenter(self.loader(sample), sample.target, rng)
        return to_tensor(image, self.mean, self.std), torch.tensor(target, dtype=torch.float32)


def to_tensor(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> standardised (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(((image - mean) / std).transpose(2, 0, 1)))


def channel_stats(samples: Sequence[Sample], loader: ImageLoader, crop_px: int | None,
                  max_images: int = 256, seed: int = 0) -> dict[str, Any]:
    """Per-channel mean and std over (up to ``max_images``) centre-cropped training images."""
    rng = np.random.default_rng([seed, 5])
    chosen = list(samples)
    if len(chosen) > max_images:
        chosen = [chosen[i] for i in rng.choice(len(chosen), max_images, replace=False)]
    total = np.zeros(3)
    squares = np.zeros(3)
    pixels = 0
    for s in chosen:
        img = centre_crop(loader(s), crop_px).reshape(-1, 3).astype(np.float64)
        total += img.sum(0)
        squares += (img**2).sum(0)
        pixels += len(img)
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    std = np.maximum(std, 1e-3)  # a flat channel must not blow up
    return {"mean": [float(x) for x in mean], "std": [float(x) for x in std]}
