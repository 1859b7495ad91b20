"""Model names and how to build them: ``small-cnn``, ``resnet18``, ``resnet50`` (backbone + head), ``axis-cnn``
(a small CNN on edge directions folded modulo the angle period; angle task only), ``unet`` (per-pixel classes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from flakehunter.errors import InputError
from flakehunter.models.edges import AxisBackbone
from flakehunter.models.heads import AngleHead, ClassifierHead, Network
from flakehunter.models.segment import segment_network
from flakehunter.models.small_cnn import SmallCNN


def _small_cnn(width: int) -> tuple[nn.Module, int]:
    net = SmallCNN(width=width)
    return net, net.out_features


def _resnet(depth: int) -> Callable[[int], tuple[nn.Module, int]]:
    def build(width: int) -> tuple[nn.Module, int]:
        import torchvision

        # weights=None: never download; weights come from a local file (models.weights).
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        features = net.fc.in_features
        net.fc = nn.Identity()  # the backbone ends at the pooled features; heads are ours
        return net, features

    return build


_BACKBONES: dict[str, Callable[[int], tuple[nn.Module, int]]] = {
    "small-cnn": _small_cnn,
    "resnet18": _resnet(18),
    "resnet50": _resnet(50),
}

#: Every model name `build_network` knows (axis-cnn: angle task only).
MODEL_NAMES: tuple[str, ...] = (*_BACKBONES, "axis-cnn")
#: Segmentation models (`build_model` with task "segment").
SEGMENT_MODELS: tuple[str, ...] = ("unet",)


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a network from a checkpoint: its name, task and head size.

    ``task`` is "classify" (``num_classes`` logits), "angle" (θ modulo ``period_deg``) or "segment"
    (``num_classes`` logits per pixel); ``width`` is the small CNN's or the U-Net's base width (ignored by the
    ResNets).
    """

    name: str
    task: str
    num_classes: int = 0
    period_deg: float = 0.0
    width: int = 16
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**data)


def build_backbone(name: str, width: int = 16) -> tuple[nn.Module, int]:
    """The backbone called ``name`` (randomly initialised) and its feature size."""
    if name not in _BACKBONES:
        raise InputError(f"--model: unknown model {name!r} (available: {', '.join(MODEL_NAMES)})")
    return _BACKBONES[name](width)


def build_network(spec: ModelSpec) -> Network:
    """A randomly initialised network for ``spec`` (a U-Net for task "segment")."""
    if spec.task == "segment":
        if spec.name not in SEGMENT_MODELS:
            raise InputError(f"--model: segmentation models are {', '.join(SEGMENT_MODELS)}, not {spec.name!r}")
        return segment_network(spec.num_classes, spec.width)
    if spec.name == "axis-cnn":
        if spec.task != "angle" or spec.period_deg <= 0:
            raise InputError("--model axis-cnn: regresses angles (--task angle, with a period)")
        axis = AxisBackbone(spec.period_deg, spec.width)
        angle = AngleHead(axis.out_features, spec.period_deg, spec.dropout)
        with torch.no_grad():  # start as the plain trusted mean
            angle.linear.weight.copy_(torch.eye(2))
            angle.linear.bias.zero_()
        return Network(axis, angle)
    backbone, features = build_backbone(spec.name, spec.width)
    if spec.task == "classify":
        head: nn.Module = ClassifierHead(features, spec.num_classes, spec.dropout)
    elif spec.task == "angle":
        head = AngleHead(features, spec.period_deg, spec.dropout)
    else:
        raise InputError(f"--task: expected classify, angle or segment, got {spec.task!r}")
    return Network(backbone, head)
