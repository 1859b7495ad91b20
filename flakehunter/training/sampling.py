"""Which samples an epoch draws, in which order: plain shuffling or class balancing.

Samplers yield *draw keys*, ``key = position · N + index``: the dataset decodes ``index = key % N`` and
seeds that draw's augmentation from (seed, epoch, key). Two copies of one minority image drawn in the
same epoch therefore get different augmentations, and any draw can be reproduced exactly.

Balancing modes (``--balance``):

``none``       every sample once per epoch, shuffled.
``weighted``   N draws with replacement, each class drawn with equal probability (weights 1/count).
``oversample`` every class brought up to the largest class's count: whole copies of the minority
               classes plus a random remainder, each copy augmented differently; K · max_count draws.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

BALANCE_MODES = ("none", "weighted", "oversample")


class EpochSampler(Sampler[int]):
    """Draw keys for one epoch; call `set_epoch` before each epoch (the order depends on it)."""

    def __init__(self, labels: Sequence[int] | None, n: int, mode: str = "none", seed: int = 0,
                 shuffle: bool = True) -> None:
        if mode not in BALANCE_MODES:
            raise ValueError(f"balance mode must be one of {BALANCE_MODES}, got {mode!r}")
        if mode != "none" and labels is None:
            raise ValueError("class balancing needs class labels")
        self.labels = None if labels is None else np.asarray(labels, dtype=int)
        self.n = n
        self.mode = mode
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """The sample indices this epoch draws, in order."""
        rng = np.random.default_rng([self.seed, 3, self.epoch])
        if self.mode == "none":
            return rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        assert self.labels is not None
        classes, counts = np.unique(self.labels, return_counts=True)
        if self.mode == "weighted":
            weights = 1.0 / counts[np.searchsorted(classes, self.labels)]
            return rng.choice(self.n, size=self.n, replace=True, p=weights / weights.sum())
        target = int(counts.max())
        drawn = []
        for c in classes:
            members = np.flatnonzero(self.labels == c)
            whole, rest = divmod(target, len(members))
            drawn.append(np.concatenate([np.tile(members, whole), rng.choice(members, rest, replace=False)]))
        return rng.permutation(np.concatenate(drawn))

    def __iter__(self) -> Iterator[int]:
        idx = self.indices()
        return iter((np.arange(len(idx)) * self.n + idx).tolist())

    def __len__(self) -> int:
        if self.mode == "oversample":
            assert self.labels is not None
            counts = np.bincount(self.labels)
            counts = counts[counts > 0]
            return int(counts.max()) * len(counts)
        return self.n


def balance_report(labels: Sequence[int], classes: Sequence[str], mode: str) -> dict[str, Any]:
    """Class counts in the data and the expected number of draws per class per epoch under ``mode``."""
    counts = Counter(int(x) for x in labels)
    present = [i for i in range(len(classes)) if counts.get(i, 0)]
    n = sum(counts.values())
    if mode == "none":
        draws = {classes[i]: float(counts[i]) for i in present}
    elif mode == "weighted":
        draws = {classes[i]: n / len(present) for i in present}
    else:
        top = max(counts.values())
        draws = {classes[i]: float(top) for i in present}
    return {
        "mode": mode,
        "counts": {classes[i]: counts.get(i, 0) for i in range(len(classes))},
        "expected_draws_per_epoch": draws,
        "imbalance_ratio": max(counts.values()) / min(counts[i] for i in present),
    }
