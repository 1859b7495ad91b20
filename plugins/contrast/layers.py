"""Per-layer contrasts from a measured profile (the rungs of a ladder pinned by ``profile:``).

The predicted contrasts of 1, 2, ... K layers at an oxide thickness (`flakehunter.optics.layer_contrast`)
form a curve in RGB contrast space; a measured profile replaces them where it has data and scales the
model to agree with them elsewhere. The contrast detector uses these instead of the ladder it learns from
the images (`ladder`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from flakehunter.materials import Material

if TYPE_CHECKING:
    from flakehunter.plugins.contrast.profile import MaterialProfile

# Relative weights of R, G, B in a mono camera's signal (luma), used when images have one channel.
MONO_WEIGHTS = np.array([0.299, 0.587, 0.114])


def profile_rungs(
    profile: MaterialProfile, material: Material, nominal_oxide_nm: float, max_layers: int = 12, *, channels: int = 3,
) -> tuple[np.ndarray, float]:
    """Rungs 1..K (K at least ``max_layers`` and every measured layer count) as (K, channels) contrasts, and the
    oxide they are for: the profile's measured means where it has them, the thin-film curve scaled per channel
    to agree with them elsewhere."""
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
    rungs = model * gain[None, :]
    for n in measured:
        rungs[n - 1] = profile.classes[n].mean
    return rungs, oxide
