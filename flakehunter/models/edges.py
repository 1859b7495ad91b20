"""Edge directions folded modulo the lattice period, as a fixed first layer of the crystal-axis network.

A straight crystal edge runs along θ0 + k·P (P = 30° for graphene and hBN, 60° for TMDs). A small CNN learns
angles modulo P poorly from raw pixels: the answer cycles 180/P times while an edge turns half a circle, finer
than 3 x 3 filters tell apart. `EdgeFold` hands it the answer's building block instead: at every pixel the
edge direction ψ (perpendicular to the intensity gradient, image angle from +col towards +row), folded to
the point (cos 2πψ/P, sin 2πψ/P) and weighted by the gradient strength. The network then learns which edges
to trust (long straight ones, not torn or rounded ones; `AxisBackbone`) and averages them. The layer has no weights;
it is computed inside the network, so rotations and flips of the input (training augmentation) turn the
encoded directions with the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EdgeFold(nn.Module):
    """(N, C, H, W) -> (N, 3, H, W): the first channel, and its gradient as (w·cos 2πψ/P, w·sin 2πψ/P).

    ``scale`` sets the weight w = |∇|² / (|∇|² + scale²) (saturating: a strong edge counts like a clear one).
    """

    def __init__(self, period_deg: float, scale: float = 0.3) -> None:
        super().__init__()
        if period_deg <= 0:
            raise ValueError(f"period_deg must be > 0, got {period_deg}")
        self.period_deg = float(period_deg)
        self.scale = float(scale)
        smooth = torch.tensor([1.0, 2.0, 1.0]) / 4.0
        diff = torch.tensor([-1.0, 0.0, 1.0]) / 2.0
        self.register_buffer("d_row", (diff[:, None] * smooth[None, :])[None, None], persistent=False)
        self.register_buffer("d_col", (smooth[:, None] * diff[None, :])[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        t = x[:, :1]
        padded = F.pad(t, (1, 1, 1, 1), mode="replicate")
        d_row: Tensor = self.get_buffer("d_row")
        d_col: Tensor = self.get_buffer("d_col")
        g_row = F.conv2d(padded, d_row)
        g_col = F.conv2d(padded, d_col)
        power = g_row**2 + g_col**2
        weight = power / (power + self.scale**2)
        # Edge direction = gradient direction + 90°; fold modulo the period.
        phase = (torch.atan2(g_row, g_col) + math.pi / 2) * (360.0 / self.period_deg)
        return torch.cat([t, weight * torch.cos(phase), weight * torch.sin(phase)], dim=1)


class AxisBackbone(nn.Module):
    """`EdgeFold`, then a small fully convolutional net that decides how much to trust each pixel's edge, then the
    trusted mean of the folded edge directions: (N, C, H, W) -> (N, 2).

    The output is the trust-weighted mean of unit vectors (cos 2πψ/P, sin 2πψ/P): its direction is the axis, its
    length (at most 1) how well the trusted edges agree. The trust map sees about 30 pixels around each edge
    pixel (dilated convolutions), enough to tell a long straight edge from a torn or rounded one.
    """

    out_features = 2

    def __init__(self, period_deg: float, width: int = 16) -> None:
        super().__init__()
        self.edges = EdgeFold(period_deg)
        layers: list[nn.Module] = []
        c_in = 3
        for dilation in (1, 2, 4, 8):
            layers += [nn.Conv2d(c_in, width, 3, padding=dilation, dilation=dilation, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c_in = width
        layers.append(nn.Conv2d(width, 1, 1))
        self.trust = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        e = self.edges(x)
        trust = F.softplus(self.trust(e))
        strength = torch.sqrt(e[:, 1:2] ** 2 + e[:, 2:3] ** 2)
        mean: Tensor = (trust * e[:, 1:]).sum(dim=(2, 3)) / ((trust * strength).sum(dim=(2, 3)) + 1e-6)
        return mean
