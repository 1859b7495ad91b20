"""The ``segment`` task of the trainer: crops of the contrast grid, per-pixel classes, class-weighted loss, IoU.

Training draws random ``crop`` x ``crop`` windows (half of them centred on a pixel of a class other than the
substrate, chosen uniformly among the classes the image holds, because thin flakes cover well under 1 % of a
tile), turns them by a random symmetry of the square, and jitters the contrast within physical limits
(`augment_contrast`). Validation tiles every image into windows of the crop size, so every pixel is scored
once. The loss is cross-entropy with class weights sqrt(substrate pixels / class pixels) (at most
`MAX_CLASS_WEIGHT`), ignoring 255.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from flakehunter.models import ModelSpec, Network, build_network
from flakehunter.training.angles import Dihedral
from flakehunter.training.segment_data import (
    SegmentData,
    SegmentSample,
    load_sample,
    open_segment_dataset,
    split_groups,
)
from flakehunter.training.segment_input import CLASSES, GRID_UM, IGNORE, INPUT_GAIN, INPUT_LIMIT, network_input

if TYPE_CHECKING:
    from flakehunter.training.recipe import TrainRecipe

#: Training window (grid pixels) when the recipe gives no ``crop``.
DEFAULT_CROP = 128

MAX_CLASS_WEIGHT = 10.0


class SegmentCache:
    """Loaded samples (contrast as float16, classes), read once per process."""

    def __init__(self, samples: Sequence[SegmentSample]) -> None:
        self.samples = list(samples)
        self._items: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._items:
            contrast, classes = load_sample(self.samples[index])
            self._items[index] = (contrast.astype(np.float16), classes)
        return self._items[index]


def class_pixels(cache: SegmentCache, num_classes: int = len(CLASSES)) -> np.ndarray:
    counts = np.zeros(num_classes, np.int64)
    for i in range(len(cache)):
        labels = cache.get(i)[1]
        counts += np.bincount(labels[labels != IGNORE], minlength=num_classes)[:num_classes]
    return counts


def class_weights(counts: np.ndarray) -> list[float]:
    """sqrt(substrate / class) pixel ratio, between 1 and `MAX_CLASS_WEIGHT` (a class never seen gets 1)."""
    base = max(float(counts[0]), 1.0)
    return [float(np.clip(math.sqrt(base / c), 1.0, MAX_CLASS_WEIGHT)) if c > 0 else 1.0 for c in counts]


def augment_contrast(contrast: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A level gain of ±10 % (tone curves and ladders differ), sometimes a slight blur (focus), and noise."""
    out: np.ndarray = contrast.astype(np.float32) * np.float32(rng.uniform(0.9, 1.1))
    if rng.random() < 0.25:
        sigma = float(rng.uniform(0.3, 1.0))
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 0.01))
    return out


def _pad_to(array: np.ndarray, size: int, value: float) -> np.ndarray:
    rows, cols = array.shape[:2]
    if rows >= size and cols >= size:
        return array
    pr, pc = max(0, size - rows), max(0, size - cols)
    if array.ndim == 2:
        return np.pad(array, ((0, pr), (0, pc)), constant_values=value)
    return np.pad(array, ((0, pr), (0, pc), (0, 0)), mode="reflect" if min(rows, cols) > max(pr, pc) else "edge")


class SegmentDataset(Dataset[tuple[Tensor, Tensor]]):
    """Training windows: ``len`` = images x ``draws_per_image``; draw ``key`` is seeded by (seed, epoch, key)."""

    def __init__(self, cache: SegmentCache, crop: int, *, seed: int = 0, draws_per_image: int = 4,
                 dihedral: bool = True) -> None:
        self.cache = cache
        self.crop = crop
        self.seed = seed
        self.draws = draws_per_image
        self.dihedral = dihedral
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cache) * self.draws

    def __getitem__(self, key: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng([self.seed, 6, self.epoch, key])
        contrast, labels = self.cache.get(key % len(self.cache))
        contrast = _pad_to(contrast, self.crop, 0.0)
        labels = _pad_to(labels, self.crop, IGNORE)
        rows, cols = labels.shape
        half = self.crop // 2
        present = [k for k in np.unique(labels) if k not in (0, IGNORE)]
        if present and rng.random() < 0.5:
            k = present[int(rng.integers(len(present)))]
            rr, cc = np.nonzero(labels == k)
            i = int(rng.integers(len(rr)))
            r0 = int(np.clip(rr[i] - half + rng.integers(-half // 2, half // 2 + 1), 0, rows - self.crop))
            c0 = int(np.clip(cc[i] - half + rng.integers(-half // 2, half // 2 + 1), 0, cols - self.crop))
        else:
            r0, c0 = int(rng.integers(rows - self.crop + 1)), int(rng.integers(cols - self.crop + 1))
        x = contrast[r0 : r0 + self.crop, c0 : c0 + self.crop]
        y = labels[r0 : r0 + self.crop, c0 : c0 + self.crop]
        if self.dihedral:
            element = Dihedral(int(rng.integers(8)))
            x, y = element.image(x), element.image(y)
        x = augment_contrast(x, rng)
        return torch.from_numpy(network_input(x)), torch.from_numpy(np.ascontiguousarray(y).astype(np.int64))


class SegmentWindows(Dataset[tuple[Tensor, Tensor]]):
    """Validation: every image cut into ``crop`` x ``crop`` windows covering it (the last ones flush with the
    far edges), in order, no augmentation."""

    def __init__(self, cache: SegmentCache, crop: int) -> None:
        self.cache = cache
        self.crop = crop
        self.index: list[tuple[int, int, int]] = []
        for i in range(len(cache)):
            rows, cols = cache.get(i)[1].shape
            for r in _starts(rows, crop):
                for c in _starts(cols, crop):
                    self.index.append((i, r, c))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int) -> tuple[Tensor, Tensor]:
        i, r, c = self.index[key]
        contrast, labels = self.cache.get(i)
        contrast = _pad_to(contrast, self.crop, 0.0)
        labels = _pad_to(labels, self.crop, IGNORE)
        x = contrast[r : r + self.crop, c : c + self.crop].astype(np.float32)
        y = labels[r : r + self.crop, c : c + self.crop]
        return torch.from_numpy(network_input(x)), torch.from_numpy(np.ascontiguousarray(y).astype(np.int64))


def _starts(n: int, size: int) -> list[int]:
    if n <= size:
        return [0]
    count = math.ceil(n / size)
    return sorted({min(i * size, n - size) for i in range(count)})


def segment_loss(output: Tensor, target: Tensor, weights: Tensor | None) -> Tensor:
    """Class-weighted pixel cross-entropy, 255 ignored."""
    loss: Tensor = torch.nn.functional.cross_entropy(output.float(), target.long(), weight=weights,
                                                     ignore_index=IGNORE)
    return loss


def confusion(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) pixel counts [truth, predicted] over pixels whose truth is not 255."""
    keep = truth != IGNORE
    flat = truth[keep].astype(np.int64) * num_classes + predicted[keep].astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segment_metrics(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU (None for a class that is neither true nor predicted anywhere), mean IoU over
    the classes present in the truth, and the thin (1-3L) IoU with the three merged."""
    m = matrix.astype(float)
    tp = np.diag(m)
    union = m.sum(0) + m.sum(1) - tp
    iou = {c: (float(tp[k] / union[k]) if union[k] > 0 else None) for k, c in enumerate(classes)}
    present = [k for k in range(len(classes)) if m[k].sum() > 0]
    thin = [k for k, c in enumerate(classes) if c in ("1L", "2L", "3L")]
    merged_tp = m[np.ix_(thin, thin)].sum()
    merged_union = m[thin].sum() + m[:, thin].sum() - merged_tp
    return {
        "pixel_accuracy": float(tp.sum() / max(m.sum(), 1.0)),
        "mean_iou": float(np.mean([tp[k] / union[k] for k in present])) if present else 0.0,
        "thin_iou": float(merged_tp / merged_union) if merged_union > 0 else None,
        "iou": iou,
        "pixels": {c: int(m[k].sum()) for k, c in enumerate(classes)},
        "confusion": matrix.astype(int).tolist(),
    }


@dataclass
class SegmentSetup:
    """What the trainer needs for the segment task."""

    train_data: SegmentData
    val_data: SegmentData | None
    spec: ModelSpec
    model: Network
    preprocess: dict[str, Any]
    train_set: SegmentDataset
    val_set: SegmentWindows | None
    weights: Tensor
    class_pixels: list[int]


def preprocess_info() -> dict[str, Any]:
    """How images become network input (stored with the weights; the detector checks it)."""
    return {"input": "contrast-grid", "grid_um": GRID_UM, "gain": INPUT_GAIN, "limit": INPUT_LIMIT,
            "image_size": None, "crop": None}


def build_segment(recipe: TrainRecipe, device: str) -> SegmentSetup:
    """Datasets (given, split off by setup or image, or none), model, class weights for a segment recipe."""
    fmt = recipe.format
    data = open_segment_dataset(recipe.data, fmt, recipe.pixel_size_um, recipe.class_layers)
    val: SegmentData | None
    if recipe.val is not None:
        train, val = data, open_segment_dataset(recipe.val, fmt, recipe.pixel_size_um, recipe.class_layers)
    elif recipe.val_fraction > 0:
        train, val = split_groups(data, recipe.val_fraction, recipe.seed)
    else:
        train, val = data, None
    if recipe.limit is not None and recipe.limit < len(train.samples):
        rng = np.random.default_rng([recipe.seed, 2])
        keep = sorted(rng.permutation(len(train.samples))[: recipe.limit])
        train = SegmentData([train.samples[i] for i in keep], train.source, train.format)
    crop = recipe.crop or DEFAULT_CROP
    cache = SegmentCache(train.samples)
    pixels = class_pixels(cache)
    width = recipe.width
    if recipe.init_weights is not None and "width" not in recipe.model_fields_set:
        width = _card_width(recipe.init_weights, width)  # fine-tuning: the given weights' own width
    spec = ModelSpec(name=recipe.model, task="segment", num_classes=len(CLASSES), width=width,
                     dropout=recipe.dropout)
    return SegmentSetup(
        train_data=train, val_data=val, spec=spec, model=build_network(spec), preprocess=preprocess_info(),
        train_set=SegmentDataset(cache, crop, seed=recipe.seed, draws_per_image=recipe.draws_per_image,
                                 dihedral=recipe.augment.dihedral),
        val_set=None if val is None else SegmentWindows(SegmentCache(val.samples), crop),
        weights=torch.tensor(class_weights(pixels), dtype=torch.float32),
        class_pixels=[int(v) for v in pixels],
    )


def validate_segment(model: Network, loader: DataLoader[tuple[Tensor, Tensor]], device: str,
                     weights: Tensor | None, classes: Sequence[str], use_amp: bool = False
                     ) -> tuple[float, dict[str, Any]]:
    """Mean loss and `segment_metrics` over a validation loader."""
    model.eval()
    total, count = 0.0, 0
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    with torch.no_grad():
        for x, y in loader:
            with torch.autocast(device_type=device, dtype=torch.float16, enabled=use_amp):
                out = model(x.to(device, non_blocking=True))
            y = y.to(device)
            valid = int((y != IGNORE).sum())
            if valid:
                total += float(segment_loss(out, y, weights)) * valid
                count += valid
            matrix += confusion(out.argmax(1).cpu().numpy(), y.cpu().numpy(), len(classes))
    return total / max(count, 1), segment_metrics(matrix, classes)


def _card_width(weights: Path, default: int) -> int:
    """The width in the model card beside a weights file (model.json next to model.pt), else ``default``."""
    import json

    try:
        card = json.loads(Path(weights).with_suffix(".json").read_text(encoding="utf-8"))
        return int(card["model"]["width"])
    except (OSError, ValueError, KeyError, TypeError):
        return default
