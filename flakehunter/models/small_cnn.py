"""The seed projects' small 4-conv CNN: fast on a CPU, enough for low-magnification flake crops."""

from __future__ import annotations

from torch import Tensor, nn


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Four 3x3 conv blocks (width w, 2w, 4w, 8w; BatchNorm, ReLU, 2x2 max-pool after the first three),
    then global average pooling: (N, in_channels, H, W) -> (N, 8w) features, for any H, W >= 8.
    """

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.features = nn.Sequential(
            _block(in_channels, width, pool=True),
            _block(width, 2 * width, pool=True),
            _block(2 * width, 4 * width, pool=True),
            _block(4 * width, 8 * width, pool=False),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = 8 * width

    def forward(self, x: Tensor) -> Tensor:
        pooled: Tensor = self.pool(self.features(x))
        return pooled.flatten(1)
