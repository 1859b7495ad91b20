"""CNN model builders for flakehunter's detectors and the training toolkit.

Every model is a `Network`: a ``backbone`` that turns a (N, 3, H, W) image batch into features and a ``head``
on top: class logits or an angle as a point on the unit circle from (N, D) pooled features, or class logits
per pixel from a `UNet`'s (N, D, H, W) features (`PixelClassifierHead`). Builders are looked up by name in
`MODEL_NAMES` (and `SEGMENT_MODELS`) through `build_network`; weights files from torchvision or from
``flakehunter pretrain`` load into the backbone only, so a head of any size can sit on top.
"""

from flakehunter.models.heads import AngleHead, ClassifierHead, Network
from flakehunter.models.registry import (
    MODEL_NAMES,
    SEGMENT_MODELS,
    ModelSpec,
    build_backbone,
    build_network,
)
from flakehunter.models.segment import PixelClassifierHead, UNet, segment_network
from flakehunter.models.weights import load_backbone_file, load_torchvision_weights

__all__ = [
    "MODEL_NAMES",
    "SEGMENT_MODELS",
    "AngleHead",
    "ClassifierHead",
    "ModelSpec",
    "Network",
    "PixelClassifierHead",
    "UNet",
    "build_backbone",
    "build_network",
    "load_backbone_file",
    "load_torchvision_weights",
    "segment_network",
]
