"""A small U-Net for per-pixel flake classes: fast enough for whole tiles on a CPU.

It is a `Network` like every flakehunter model: the U-Net is the backbone (images -> per-pixel features of
the first level's width) and `PixelClassifierHead` a 1x1 convolution to class logits.

Five resolution levels (1, 1/2, 1/4, 1/8, 1/16 of the input), widths w, 2w, 3w, 4w, 6w; strided 3x3
convolutions go down, nearest-neighbour upsampling and skip connections come back up (Ronneberger et al.,
2015, made narrow: at w = 8 it has about 0.1 M parameters). The deepest level sees about 150 input pixels
across, so a thin terrace is judged together with the thick body it grows from. Any input size works
(the decoder resizes to each skip's size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flakehunter.models.heads import Network


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """(N, in_channels, H, W) -> (N, width, H, W) per-pixel features.

    ``width`` is the first level's channel count; ``levels`` the widths' multipliers per level.
    """

    def __init__(self, in_channels: int = 3, width: int = 8, levels: tuple[int, ...] = (1, 2, 3, 4, 6)) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        widths = [width * m for m in levels]
        self.out_features = widths[0]
        self.stem = _conv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(_conv(widths[i], widths[i + 1], stride=2), _conv(widths[i + 1], widths[i + 1]))
            for i in range(len(widths) - 1)
        )
        self.up = nn.ModuleList(_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = block(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        features: Tensor = y
        return features

    @property
    def cam_layer(self) -> nn.Module:
        """The decoder stage at a quarter of the input resolution (what Grad-CAM looks at)."""
        return self.up[-3] if len(self.up) >= 3 else self.up[-1]


class PixelClassifierHead(nn.Module):
    """A 1x1 convolution: (N, D, H, W) features -> (N, classes, H, W) logits."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a segmentation needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.conv = nn.Conv2d(in_features, num_classes, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        logits: Tensor = self.conv(features)
        return logits


def segment_network(num_classes: int, width: int = 8, in_channels: int = 3) -> Network:
    """A randomly initialised U-Net with a per-pixel classifier head."""
    backbone = UNet(in_channels, width)
    return Network(backbone, PixelClassifierHead(backbone.out_features, num_classes))
