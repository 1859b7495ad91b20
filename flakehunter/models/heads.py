"""Task heads and the backbone + head `Network` every flakehunter model is."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class ClassifierHead(nn.Module):
    """Dropout then a linear layer: (N, D) features -> (N, classes) logits."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        logits: Tensor = self.linear(self.dropout(features))
        return logits


class AngleHead(nn.Module):
    """Regress an angle that is only defined modulo ``period_deg`` (30° for graphene/hBN edges).

    The head predicts the point (cos φ, sin φ) with φ = 2π·θ/period, so that θ = 0 and θ = period are
    the same target and the loss has no seam; `to_degrees` turns a prediction back into θ in
    [0, period).
    """

    def __init__(self, in_features: int, period_deg: float, dropout: float = 0.0) -> None:
        super().__init__()
        if period_deg <= 0:
            raise ValueError(f"period_deg must be > 0, got {period_deg}")
        self.period_deg = float(period_deg)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, 2)

    def forward(self, features: Tensor) -> Tensor:
        point: Tensor = self.linear(self.dropout(features))
        return point

    def to_degrees(self, output: Tensor) -> Tensor:
        """(N, 2) head output -> (N,) angles in degrees, in [0, period)."""
        phase = torch.atan2(output[:, 1], output[:, 0])
        return torch.remainder(phase * self.period_deg / (2 * math.pi), self.period_deg)

    def target(self, theta_deg: Tensor) -> Tensor:
        """(N,) angles in degrees -> (N, 2) unit-circle targets."""
        phase = theta_deg * (2 * math.pi / self.period_deg)
        return torch.stack([torch.cos(phase), torch.sin(phase)], dim=1)


class Network(nn.Module):
    """A backbone (images -> features) and a head (features -> task output)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        output: Tensor = self.head(self.backbone(x))
        return output

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of the backbone; its BatchNorm statistics stay fixed too."""
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self._backbone_frozen = frozen

    def train(self, mode: bool = True) -> Network:
        super().train(mode)
        if mode and getattr(self, "_backbone_frozen", False):
            self.backbone.eval()  # a frozen backbone keeps its running statistics
        return self
