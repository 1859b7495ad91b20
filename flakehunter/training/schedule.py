"""AdamW with a learning-rate schedule stepped once per batch: 1cycle, step decay or constant, with warm-up."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from flakehunter.training.recipe import OptimisationSpec

#: onecycle's default warm-up: the first quarter of training (Smith's 1cycle policy uses 25-30 %).
ONECYCLE_WARMUP_FRACTION = 0.25


def build_optimizer(params: Iterable[torch.nn.Parameter], spec: OptimisationSpec) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) over the trainable parameters."""
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=spec.lr, weight_decay=spec.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, spec: OptimisationSpec, steps_per_epoch: int) -> LRScheduler:
    """The schedule of ``spec``, to be stepped after every optimiser step.

    ``onecycle``: torch's OneCycleLR (cosine rise from lr/25 to lr over the warm-up, cosine fall to
    lr/1e4, momentum cycled inversely). ``step``: linear warm-up, then lr · step_gamma^(epoch // step_epochs).
    ``constant``: linear warm-up, then lr. (A onecycle run of fewer than 4 steps runs at a constant lr.)
    """
    total = spec.epochs * steps_per_epoch
    # A 1cycle needs a rise and a fall of at least a step or two each; shorter runs keep the lr constant.
    if spec.schedule == "onecycle" and total >= 4:
        fraction = ONECYCLE_WARMUP_FRACTION if spec.warmup_epochs is None else spec.warmup_epochs / spec.epochs
        fraction = min(max(fraction, 1.5 / total), 1.0 - 1.5 / total)
        return OneCycleLR(optimizer, max_lr=spec.lr, total_steps=total, pct_start=fraction)
    warmup_steps = round((spec.warmup_epochs or 0.0) * steps_per_epoch)
    decay_every = spec.step_epochs * steps_per_epoch
    gamma = spec.step_gamma if spec.schedule == "step" else 1.0

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        return warm * gamma ** (step // decay_every)

    return LambdaLR(optimizer, factor)
