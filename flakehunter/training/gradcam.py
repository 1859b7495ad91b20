"""Grad-CAM: where in an image a classifier looked for the class it chose (Selvaraju et al., 2017).

The gradients of the class score with respect to the last convolutional feature maps, averaged over
space, weight those maps; their positive sum, upsampled to the image, is the heat map. Computed with
captum's `LayerGradCam`, PyTorch's interpretability library. For a segmentation network the class score
is the sum of the class's logits over a region (`segment_grad_cam`, as in Vinogradova et al., 2020), taken
at a quarter-resolution decoder stage, so the map shows which surroundings the network used for the region.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flakehunter.errors import InputError
from flakehunter.models.heads import AngleHead, Network
from flakehunter.models.segment import PixelClassifierHead, UNet
from flakehunter.models.small_cnn import SmallCNN
from flakehunter.training.plots import gradcam_png


def last_conv_layer(model: Network) -> nn.Module:
    """The backbone's last convolutional stage: the finest maps that still know where things are."""
    backbone = model.backbone
    if isinstance(backbone, SmallCNN):
        return backbone.features[-1]
    if isinstance(backbone, UNet):
        return backbone.cam_layer
    layer4 = getattr(backbone, "layer4", None)  # torchvision ResNets
    if isinstance(layer4, nn.Module):
        return layer4
    raise InputError(f"Grad-CAM: no known last convolutional layer in a {type(backbone).__name__} backbone")


def grad_cam(model: Network, images: Tensor, classes: Tensor) -> np.ndarray:
    """Heat maps (N, H, W) in [0, 1] of ``classes`` (one index per image) over ``images`` (N, C, H, W)."""
    from captum.attr import LayerAttribution, LayerGradCam

    if isinstance(model.head, AngleHead):
        raise InputError("Grad-CAM explains classifiers; this checkpoint is an angle regressor")
    model.eval()
    cam = LayerGradCam(model, last_conv_layer(model))
    with torch.enable_grad():
        maps = cam.attribute(images, target=classes.long(), relu_attributions=True)
    maps = LayerAttribution.interpolate(maps, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    maps = maps.detach().squeeze(1).cpu().numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1)
    heat: np.ndarray = maps / np.where(peak > 0, peak, 1.0)[:, None, None]
    return heat


class _RegionScore(nn.Module):
    """(N, C, H, W) -> (N, classes): each class's logits summed over ``mask`` (H, W)."""

    def __init__(self, model: Network, mask: Tensor) -> None:
        super().__init__()
        self.model = model
        self.mask = mask.float()

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.model(x)
        return (logits * self.mask[None, None]).sum(dim=(2, 3))


def segment_grad_cam(model: Network, image: Tensor, class_index: int, mask: Tensor) -> np.ndarray:
    """Heat map (H, W) in [0, 1] of class ``class_index`` over the pixels of ``mask`` (H, W, bool) for one
    (1, C, H, W) input of a segmentation network."""
    from captum.attr import LayerAttribution, LayerGradCam

    if not isinstance(model.head, PixelClassifierHead):
        raise InputError("segment Grad-CAM explains segmentation networks")
    model.eval()
    wrapper = _RegionScore(model, mask.to(image.device))
    cam = LayerGradCam(wrapper, last_conv_layer(model))
    with torch.enable_grad():
        maps = cam.attribute(image, target=int(class_index), relu_attributions=True)
    maps = LayerAttribution.interpolate(maps, tuple(image.shape[-2:]), interpolate_mode="bilinear")
    heat = maps.detach()[0, 0].cpu().numpy()
    peak = float(heat.max())
    out: np.ndarray = heat / peak if peak > 0 else heat
    return out


def explain(model: Network, dataset: Any, names: list[str], truth: np.ndarray, predicted: np.ndarray,
            confidence: np.ndarray, classes: list[str], out: Path, count: int, device: str) -> list[dict[str, Any]]:
    """Grad-CAM PNGs of ``count`` images into ``out``: the misclassified ones first, then the least confident
    correct ones. Returns one index row per image written."""
    wrong = np.flatnonzero(truth != predicted)
    right = np.flatnonzero(truth == predicted)
    order = list(wrong[np.argsort(confidence[wrong])]) + list(right[np.argsort(confidence[right])])
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    mean, std = np.asarray(dataset.mean), np.asarray(dataset.std)
    for i in order[:count]:
        x, _ = dataset[int(i)]
        heat = grad_cam(model, x[None].to(device), torch.tensor([int(predicted[i])], device=device))[0]
        image = x.numpy().transpose(1, 2, 0) * std + mean
        name = f"{len(rows):03d}-{Path(names[i]).stem}.png"
        title = (f"{Path(names[i]).name}: true {classes[truth[i]]}, predicted {classes[predicted[i]]} "
                 f"({confidence[i]:.2f})")
        gradcam_png(out / name, image, heat, title)
        rows.append({"file": name, "image": names[i], "true": classes[truth[i]],
                     "predicted": classes[predicted[i]], "confidence": float(confidence[i])})
    return rows
