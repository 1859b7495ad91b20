"""Loading weights from local files only: torchvision ImageNet weights and flakehunter backbones.

Nothing is ever downloaded at run time. A torchvision weights file is the ``.pth`` that torchvision
itself would fetch (e.g. ``resnet18-f37072fd.pth``); a user downloads it once and passes its path.
Files are read with ``torch.load(..., weights_only=True)``, so a weights file cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from flakehunter.atomic import atomic_write
from flakehunter.errors import InputError, RuntimeFailure

#: Where torchvision publishes the ImageNet weights (for the error message; never fetched here).
TORCHVISION_FILES = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
}

BACKBONE_FORMAT = "flakehunter.backbone"


def read_weights_file(path: Path, option: str) -> Any:
    """``torch.load`` a local file safely; a missing or unreadable file is a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option}: {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and unsafe-global errors all mean "not a weights file"
        raise InputError(f"{option}: {path} is not a readable torch weights file ({_short(exc)})") from None


def load_torchvision_weights(backbone: nn.Module, path: Path, model_name: str) -> None:
    """Load a torchvision ImageNet state dict into a ResNet backbone (its ``fc`` layer is dropped).

    Raises InputError with instructions when the file is missing, and naming the mismatching keys
    when it belongs to another architecture.
    """
    path = Path(path)
    if model_name not in TORCHVISION_FILES:
        raise InputError(
            f"--pretrained-weights: torchvision weights exist for {', '.join(TORCHVISION_FILES)}, not {model_name!r}"
        )
    if not path.is_file():
        url = TORCHVISION_FILES[model_name]
        raise InputError(
            f"--pretrained-weights: {path} does not exist; flakehunter never downloads weights: fetch "
            f"{url} once on a machine with internet access and pass the path of that file"
        )
    data = read_weights_file(path, "--pretrained-weights")
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(f"--pretrained-weights: {path} is not a state dict of tensors")
    state = {k: v for k, v in data.items() if not k.startswith("fc.")}
    _load_strict(backbone, state, f"--pretrained-weights: {path} is not a torchvision {model_name} file")


def save_backbone_file(
    path: Path, model_name: str, width: int, backbone: nn.Module, preprocess: dict[str, Any], info: dict[str, Any]
) -> None:
    """Write backbone-only weights with what fine-tuning needs to use them (atomically)."""
    data = {
        "format": BACKBONE_FORMAT,
        "version": 1,
        "model": model_name,
        "width": int(width),
        "preprocess": preprocess,
        "info": info,
        "state_dict": backbone.state_dict(),
    }
    try:
        with atomic_write(path, "wb") as fh:
            torch.save(data, fh)
    except OSError as exc:
        raise RuntimeFailure(f"{path}: could not write the backbone weights ({exc.strerror or exc})") from exc


def load_backbone_file(path: Path) -> dict[str, Any]:
    """Read a ``backbone.pt`` written by ``flakehunter pretrain``; checks its format."""
    data = read_weights_file(path, "--backbone-weights")
    if not isinstance(data, dict) or data.get("format") != BACKBONE_FORMAT:
        raise InputError(
            f"--backbone-weights: {path} is not a flakehunter backbone file (write one with flakehunter pretrain)"
        )
    return data


def load_backbone_state(backbone: nn.Module, data: dict[str, Any], path: Path, model_name: str, width: int) -> None:
    """Load a backbone file's weights into ``backbone`` after checking it was made for the same model."""
    if data["model"] != model_name or (model_name == "small-cnn" and int(data["width"]) != width):
        made_for = data["model"] + (f" (width {data['width']})" if data["model"] == "small-cnn" else "")
        wanted = model_name + (f" (width {width})" if model_name == "small-cnn" else "")
        raise InputError(f"--backbone-weights: {path} holds a {made_for} backbone; this run builds {wanted}")
    _load_strict(backbone, data["state_dict"], f"--backbone-weights: {path} does not fit {model_name}")


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], message: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise InputError(f"{message} ({detail})")
    module.load_state_dict(state)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
