"""Which contrast means 1, 2, 3 ... layers: the material's thin-film curve in contrast space.

The predicted contrasts of 0 (substrate), 1, 2, ... K layers at the chip's oxide thickness
(`flakehunter.optics.layer_contrast`) form a polyline in RGB contrast space. Every pixel is
projected onto it, which gives two numbers:

* a continuous *layer coordinate* s (0 on substrate, 1 at the monolayer's contrast, 1.5 halfway
  between 1L and 2L ...), whose rounding is the pixel's layer count; a blurred or partly covered
  pixel lands between classes instead of off the curve;
* the *distance* from the curve; pixels far from it are "other" (thick flakes, residue, dust).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flakehunter.materials import Material

if TYPE_CHECKING:
    from flakehunter.plugins.contrast.profile import MaterialProfile

SUBSTRATE, OTHER = 0, -1
# Relative weights of R, G, B in a mono camera's signal (luma), used when images have one channel.
MONO_WEIGHTS = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class LayerModel:
    """The contrast of each layer count, and how far from that curve a pixel may lie.

    Attributes:
        layers: layer counts 1..K, ascending.
        centroids: (K, channels) contrast C = I/background − 1 per channel.
        tube_radius: largest distance from the curve of a thin-flake pixel, in contrast units.
    """

    material: str
    oxide_nm: float
    layers: np.ndarray
    centroids: np.ndarray
    tube_radius: float = 0.06

    @classmethod
    def from_thin_film(
        cls, material: Material, oxide_nm: float, max_layers: int = 12, *, channels: int = 3,
        tube_radius: float = 0.06, channel_gain: tuple[float, ...] | None = None,
    ) -> LayerModel:
        """The model at ``oxide_nm``; ``channel_gain`` scales each channel (a calibrated lamp/camera)."""
        from flakehunter.plugins.contrast.calibration import curve_nodes

        centroids = curve_nodes(material, oxide_nm, max_layers, channels)[1:]
        if channel_gain is not None:
            centroids = centroids * np.asarray(channel_gain, float)[None, : centroids.shape[1]]
        return cls(material.name, oxide_nm, np.arange(1, max_layers + 1), centroids, tube_radius)

    @classmethod
    def from_profile(
        cls, profile: MaterialProfile, material: Material, nominal_oxide_nm: float, max_layers: int = 12,
        *, channels: int = 3,
    ) -> LayerModel:
        """Measured means for the profile's layer counts; the thin-film curve (scaled per channel to
        agree with them) for the others. The curve's tube follows the measured spread."""
        from flakehunter.plugins.contrast.calibration import curve_nodes

        if profile.channels != channels:
            raise ValueError(f"profile {profile.name!r} has {profile.channels} channels, the image {channels}")
        oxide = profile.oxide_nm or nominal_oxide_nm
        top = max(max_layers, *profile.classes)
        model = curve_nodes(material, oxide, top, channels)[1:]
        measured = sorted(profile.classes)
        means = np.array([profile.classes[n].mean for n in measured])
        predicted = model[np.array(measured) - 1]
        gain = np.sum(means * predicted, axis=0) / np.maximum(np.sum(predicted**2, axis=0), 1e-12)
        centroids = model * gain[None, :]
        for n in measured:
            centroids[n - 1] = profile.classes[n].mean
        spread = max(float(np.sqrt(np.linalg.eigvalsh(profile.classes[n].cov).max())) for n in measured)
        return cls(material.name, oxide, np.arange(1, top + 1), centroids, float(np.clip(3 * spread, 0.03, 0.12)))

    @property
    def channels(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def substrate_gate(self) -> float:
        """Pixels closer than this to zero contrast are substrate without further work."""
        return 0.35 * float(np.linalg.norm(self.centroids[0]))

    def centroid(self, layers: int) -> np.ndarray:
        return self.centroids[int(np.flatnonzero(self.layers == layers)[0])]

    def project(self, contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Layer coordinate s and distance d from the curve for (N, channels) contrasts."""
        pts = np.asarray(contrast, np.float32).reshape(-1, self.channels)
        nodes = np.vstack([np.zeros((1, self.channels)), self.centroids]).astype(np.float32)
        best_d = np.full(len(pts), np.inf, np.float32)
        best_s = np.zeros(len(pts), np.float32)
        for k in range(len(nodes) - 1):
            a, b = nodes[k], nodes[k + 1]
            ab = b - a
            t = np.clip((pts - a) @ ab / float(ab @ ab), 0.0, 1.0)
            d = np.linalg.norm(pts - (a + t[:, None] * ab), axis=1)
            closer = d < best_d
            best_d[closer] = d[closer]
            best_s[closer] = k + t[closer]
        # Beyond the thickest modelled class, keep counting along the last segment's direction.
        last_a, last_b = nodes[-2], nodes[-1]
        seg = last_b - last_a
        beyond = ((pts - last_b) @ seg) > 0
        if beyond.any():
            extra = ((pts[beyond] - last_b) @ seg) / float(seg @ seg)
            best_s[beyond] = len(nodes) - 1 + extra
        return best_s, best_d

    def classify(self, contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel of ``contrast`` (..., channels): layer label (0 substrate, -1 other, or the
        rounded layer count) and the continuous layer coordinate (NaN where not on the curve)."""
        flat = contrast.reshape(-1, self.channels)
        labels = np.zeros(flat.shape[0], np.int16)
        coord = np.zeros(flat.shape[0], np.float32)
        flat32 = np.asarray(flat, np.float32)
        magnitude2 = np.einsum("ij,ij->i", flat32, flat32)
        todo = np.flatnonzero(magnitude2 >= self.substrate_gate**2)  # most pixels are substrate
        if todo.size:
            s, d = self.project(flat[todo])
            on_curve = d <= self.tube_radius
            labels[todo] = np.where(on_curve, np.rint(s).astype(np.int16), OTHER)
            coord[todo] = np.where(on_curve, s, np.nan)
        return labels.reshape(contrast.shape[:-1]), coord.reshape(contrast.shape[:-1])
