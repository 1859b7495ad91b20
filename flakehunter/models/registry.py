"""Model names and how to build them: ``small-cnn``, ``resnet18``, ``resnet50``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from flakehunter.errors import InputError
from flakehunter.models.heads import AngleHead, ClassifierHead, Network
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

#: Every model name `build_network` knows.
MODEL_NAMES: tuple[str, ...] = tuple(_BACKBONES)


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a network from a checkpoint: its name, task and head size.

    ``task`` is "classify" (``num_classes`` logits) or "angle" (θ modulo ``period_deg``); ``width`` is the
    small CNN's base width (ignored by the ResNets).
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
    """A randomly initialised network for ``spec``."""
    backbone, features = build_backbone(spec.name, spec.width)
    if spec.task == "classify":
        head: nn.Module = ClassifierHead(features, spec.num_classes, spec.dropout)
    elif spec.task == "angle":
        head = AngleHead(features, spec.period_deg, spec.dropout)
    else:
        raise InputError(f"--task: expected classify or angle, got {spec.task!r}")
    return Network(backbone, head)
