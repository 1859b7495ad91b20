"""Per-layer contrast windows: which RGB contrast means 1, 2, 3 ... layers.

The default model comes from the material's thin-film optics at the chip's oxide thickness
(`flakehunter.optics.layer_contrast`). Each layer count owns a ball around its predicted contrast,
half as wide as the distance to the nearest other class (substrate included), so windows never
overlap. Pixels outside every ball are "other": thick flakes, residue, dust.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flakehunter.materials import Material

SUBSTRATE, OTHER = 0, -1
# Relative weights of R, G, B in a mono camera's signal (luma), used when images have one channel.
MONO_WEIGHTS = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class LayerModel:
    """Predicted contrast per layer count and each class's acceptance radius.

    Attributes:
        layers: layer counts, ascending (1, 2, ... max).
        centroids: (len(layers), channels) contrast C = I/background − 1 per channel.
        radii: acceptance radius of each layer class in contrast units.
        substrate_radius: pixels closer than this to zero contrast are substrate.
    """

    material: str
    oxide_nm: float
    layers: np.ndarray
    centroids: np.ndarray
    radii: np.ndarray
    substrate_radius: float

    @classmethod
    def from_thin_film(
        cls, material: Material, oxide_nm: float, max_layers: int = 12, *, channels: int = 3,
        max_radius: float = 0.08, min_radius: float = 0.02,
    ) -> LayerModel:
        from flakehunter.optics import layer_contrast

        layers = np.arange(1, max_layers + 1)
        rgb = np.array([layer_contrast(material, int(n), oxide_nm) for n in layers], float)
        centroids = rgb if channels == 3 else (rgb @ MONO_WEIGHTS)[:, None]
        return cls.from_centroids(material.name, oxide_nm, layers, centroids, max_radius, min_radius)

    @classmethod
    def from_centroids(
        cls, material: str, oxide_nm: float, layers: np.ndarray, centroids: np.ndarray,
        max_radius: float = 0.08, min_radius: float = 0.02,
    ) -> LayerModel:
        points = np.vstack([np.zeros((1, centroids.shape[1])), centroids])
        dist = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
        np.fill_diagonal(dist, np.inf)
        radii = np.clip(0.5 * dist.min(axis=1), min_radius, max_radius)
        return cls(material, oxide_nm, np.asarray(layers), np.asarray(centroids, float), radii[1:], float(radii[0]))

    @property
    def channels(self) -> int:
        return int(self.centroids.shape[1])

    def classify(self, contrast: np.ndarray) -> np.ndarray:
        """Layer count per pixel of ``contrast`` (..., channels): 0 substrate, -1 other."""
        flat = contrast.reshape(-1, self.channels).astype(np.float32)
        labels = np.full(flat.shape[0], SUBSTRATE, np.int16)
        magnitude = np.linalg.norm(flat, axis=1)
        todo = np.flatnonzero(magnitude >= self.substrate_radius)  # most pixels are bare substrate
        if todo.size:
            pts = flat[todo]
            d = np.linalg.norm(pts[:, None, :] - self.centroids[None, :, :].astype(np.float32), axis=-1)
            nearest = np.argmin(d, axis=1)
            inside = d[np.arange(len(todo)), nearest] < self.radii[nearest]
            labels[todo] = np.where(inside, self.layers[nearest], OTHER)
        return labels.reshape(contrast.shape[:-1])

    def nearest(self, contrast: np.ndarray) -> tuple[int, float]:
        """The layer count nearest to one contrast vector and its distance in units of its radius."""
        d = np.linalg.norm(self.centroids - np.asarray(contrast, float)[None, :], axis=1)
        k = int(np.argmin(d))
        return int(self.layers[k]), float(d[k] / self.radii[k])
