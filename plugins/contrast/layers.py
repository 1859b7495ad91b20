"""Per-layer contrasts from the thin-film model or from a measured profile (a pinned ladder's rungs).

The predicted contrasts of 1, 2, ... K layers at an oxide thickness (`flakehunter.optics.layer_contrast`)
form a curve in RGB contrast space; a measured profile replaces them where it has data and scales the
model to agree with them elsewhere. The contrast detector uses these as a ladder pinned from outside
(``profile:`` or ``calibration: nominal``) instead of the ladder it learns from the images (`ladder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flakehunter.materials import Material

if TYPE_CHECKING:
    from flakehunter.plugins.contrast.profile import MaterialProfile

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
