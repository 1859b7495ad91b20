"""Running a trained checkpoint on images in memory: what detector plugins call.

    predictor = Predictor.load("runs/thickness/best.pt", device="auto")
    predictions = predictor.predict([crop1, crop2])     # (H, W) or (H, W, 3) arrays, uint8/uint16/float
    predictions[0].label, predictions[0].confidence    # classify: class name and its probability
    predictions[0].angle_deg                           # angle: θ in [0, period), `angles` convention

Images get exactly the preprocessing of evaluation: scaled to [0, 1] by dtype, grey to RGB, resized to the
checkpoint's ``image_size`` when it has one, centre-cropped to its ``crop``, standardised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from flakehunter.compute import resolve_device
from flakehunter.models.heads import AngleHead
from flakehunter.training.augment import centre_crop
from flakehunter.training.images import to_float_rgb
from flakehunter.training.torchdata import to_tensor


@dataclass(frozen=True)
class Prediction:
    """One image's answer. Classify: ``label``, ``confidence`` and ``probabilities`` (per class);
    angle: ``angle_deg`` in [0, period) and ``confidence`` = the length of the predicted unit vector
    (near 1 when the network is sure, near 0 when it cannot tell)."""

    label: str | None = None
    confidence: float = 0.0
    probabilities: dict[str, float] | None = None
    angle_deg: float | None = None


class Predictor:
    """A trained network with its preprocessing; thread-compatible for inference (no state changes)."""

    def __init__(self, model: Any, checkpoint: dict[str, Any], device: str) -> None:
        self.model = model
        self.device = device
        self.task: str = checkpoint["task"]
        self.classes: list[str] = list(checkpoint["classes"])
        self.period_deg: float | None = checkpoint["period_deg"]
        pre = checkpoint["preprocess"]
        self.image_size: int | None = pre["image_size"]
        self.crop: int | None = pre["crop"]
        self.mean = np.asarray(pre["mean"], np.float32)
        self.std = np.asarray(pre["std"], np.float32)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Predictor:
        """Load best.pt / last.pt written by ``flakehunter train``; InputError if it is not one."""
        from flakehunter.training.evaluate import load_trained_model

        resolved = resolve_device(device)
        model, checkpoint = load_trained_model(Path(path), resolved)
        return cls(model, checkpoint, resolved)

    @property
    def input_px(self) -> int | None:
        """The square size the network sees (None: any size the images have)."""
        return self.crop or self.image_size

    def tensor(self, image: np.ndarray) -> torch.Tensor:
        """One image -> the standardised (3, H, W) tensor the network expects."""
        rgb = to_float_rgb(image)
        if self.image_size is not None and rgb.shape[:2] != (self.image_size, self.image_size):
            rgb = cv2.resize(rgb, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        return to_tensor(centre_crop(rgb, self.crop), self.mean, self.std)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], batch_size: int = 256) -> list[Prediction]:
        """Predictions for a list of images (all of one size after preprocessing)."""
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.tensor(im) for im in images[start : start + batch_size]]).to(self.device)
            raw = self.model(batch).float().cpu()
            head = self.model.head
            if isinstance(head, AngleHead):
                degrees = head.to_degrees(raw).tolist()
                lengths = raw.norm(dim=1).clamp(max=1.0).tolist()
                out.extend(Prediction(angle_deg=d, confidence=c) for d, c in zip(degrees, lengths, strict=True))
            else:
                probs = torch.softmax(raw, dim=1).numpy()
                for p in probs:
                    k = int(p.argmax())
                    out.append(Prediction(label=self.classes[k], confidence=float(p[k]),
                                          probabilities={c: float(v) for c, v in zip(self.classes, p, strict=True)}))
        return out
