"""Setups: images taken the same way (microscope, objective, camera settings, chip), which share a ladder.

A scan is one setup. A folder may hold photos from several: another chip (a different oxide, so another
substrate colour), another exposure or white balance, another objective (another pixel size). Averaging
their plateaus into one ladder would blur every rung, so each image is assigned to the setup whose
substrate colour, brightness, image size and pixel size it shares, and a new setup is opened when none
fits. Each setup keeps its own flat field, ladder and focus history.

The substrate colour is the level of a robust surface through the image's block means (the bare substrate
is the commonest thing in a flake photo); its chromaticity (log ratios between channels) must
agree within ``CHROMA_TOLERANCE`` and its brightness within ``LEVEL_TOLERANCE``. A 5 nm change of a
90 nm oxide moves the substrate's red/green ratio by ~9 %; a scan's lamp flicker and colour shading move
it by ~1 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flakehunter.materials import Material
from flakehunter.plugins.contrast.background import BackgroundModel, block_means, evaluate_surface, robust_surface
from flakehunter.plugins.contrast.focus import FocusTracker
from flakehunter.plugins.contrast.ladder import LadderLearner

CHROMA_TOLERANCE = 0.06
#: An image whose blocks show a setup's substrate colour over this share belongs to it without more ado.
TYPICAL_SHARE = 0.75
LEVEL_TOLERANCE = 0.25
PIXEL_TOLERANCE = 0.05


def substrate_colour(image: np.ndarray, blocks: np.ndarray | None = None) -> np.ndarray:
    """The bare substrate's level per channel: the median of a robust quadratic surface through coarse block
    means (flakes, even one covering a third of the image, are left out of the fit), float. ``blocks``: the
    image's `block_means`, when the caller has them already."""
    if blocks is None:
        blocks = block_means(image if image.ndim == 3 else image[..., None])
    rows, cols = blocks.shape[0] // 2 * 2, blocks.shape[1] // 2 * 2
    if rows >= 8 and cols >= 8:  # pool 2 x 2: a coarser grid is plenty for one level per channel
        blocks = blocks[:rows, :cols].reshape(rows // 2, 2, cols // 2, 2, -1).mean(axis=(1, 3))
    blocks = np.log(np.maximum(blocks, 1e-3))
    out = []
    for c in range(blocks.shape[2]):
        a, _ = robust_surface(blocks[..., c], 2, iterations=3, start_window=0.3)
        out.append(float(np.exp(np.median(evaluate_surface(a, *blocks.shape[:2])))))
    return np.array(out)


@dataclass(frozen=True)
class SetupKey:
    """What identifies a setup: image size and channels, pixel size (µm, None if unknown), substrate level."""

    rows: int
    cols: int
    channels: int
    pixel_size_um: float | None
    substrate: tuple[float, ...]

    def compatible(self, other: SetupKey) -> bool:
        """Same image size, channels and pixel size (within 5 %)."""
        if (self.rows, self.cols, self.channels) != (other.rows, other.cols, other.channels):
            return False
        if (self.pixel_size_um is None) != (other.pixel_size_um is None):
            return False
        return not (self.pixel_size_um and other.pixel_size_um and abs(
            math.log(self.pixel_size_um / other.pixel_size_um)) > PIXEL_TOLERANCE)

    def covered_share(self, blocks: np.ndarray) -> float:
        """The share of an image's blocks whose colour is this setup's substrate (within the tolerances,
        allowing for vignetting in the level)."""
        values = np.log(np.maximum(blocks.reshape(-1, blocks.shape[-1]), 1e-3))
        ref = np.log(np.maximum(np.asarray(self.substrate), 1e-6))
        chroma = (values - values.mean(axis=1, keepdims=True)) - (ref - ref.mean())
        level = values.mean(axis=1) - ref.mean()
        near = np.all(np.abs(chroma) <= CHROMA_TOLERANCE, axis=1) & (np.abs(level) <= 2 * LEVEL_TOLERANCE)
        return float(near.mean())

    def matches(self, other: SetupKey) -> bool:
        if not self.compatible(other):
            return False
        a = np.log(np.maximum(np.asarray(self.substrate), 1e-6))
        b = np.log(np.maximum(np.asarray(other.substrate), 1e-6))
        if abs(a.mean() - b.mean()) > LEVEL_TOLERANCE:
            return False
        return bool(np.all(np.abs((a - a.mean()) - (b - b.mean())) <= CHROMA_TOLERANCE))

    def describe(self) -> dict[str, Any]:
        return {
            "image": [self.rows, self.cols, self.channels],
            "pixel_size_um": self.pixel_size_um,
            "substrate": [round(v, 2) for v in self.substrate],
        }


class Setup:
    """One setup's learnt state: flat field, ladder, focus history."""

    def __init__(self, key: SetupKey, material: Material, nominal_oxide_nm: float, max_rungs: int,
                 flat_field: np.ndarray | None = None) -> None:
        self.key = key
        self.background = BackgroundModel()
        if flat_field is not None:
            self.background.use_flat_field(flat_field)
        self.ladder = LadderLearner(material, nominal_oxide_nm, key.channels, max_rungs)
        self.focus = FocusTracker()
        self.seen: list[str] = []  # fingerprints of the images learnt from (none is counted twice)

    def first_look(self, fingerprint: str) -> bool:
        """True (and remembered) the first time an image is shown; False when it was seen before."""
        if fingerprint in self.seen:
            return False
        self.seen.append(fingerprint)
        return True

    def state(self, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {f"{prefix}key": {**self.key.__dict__, "substrate": list(self.key.substrate)}}
        out.update({f"{prefix}bg.{k}": v for k, v in self.background.state().items()})
        out.update(self.ladder.state(prefix))
        out[f"{prefix}focus"] = self.focus.state()
        out[f"{prefix}seen"] = list(self.seen)
        return out

    @classmethod
    def from_state(
        cls, state: dict[str, Any], prefix: str, material: Material, nominal_oxide_nm: float, max_rungs: int,
        flat_field: np.ndarray | None = None,
    ) -> Setup:
        k = state[f"{prefix}key"]
        key = SetupKey(int(k["rows"]), int(k["cols"]), int(k["channels"]), k["pixel_size_um"],
                       tuple(float(v) for v in k["substrate"]))
        setup = cls(key, material, nominal_oxide_nm, max_rungs, flat_field)
        bg = f"{prefix}bg."
        setup.background.load_state({name[len(bg):]: v for name, v in state.items() if name.startswith(bg)})
        setup.ladder.load_state(state, prefix)
        setup.focus = FocusTracker.from_state(state[f"{prefix}focus"])
        setup.seen = list(state.get(f"{prefix}seen", []))
        return setup


class SetupBook:
    """The setups seen so far; `assign` finds (or opens) the one an image belongs to."""

    def __init__(self, material: Material, nominal_oxide_nm: float, max_rungs: int,
                 flat_field: np.ndarray | None = None) -> None:
        self.material = material
        self.nominal_oxide_nm = nominal_oxide_nm
        self.max_rungs = max_rungs
        self.flat_field = flat_field  # a measured flat field (bare substrate), used by every setup
        self.setups: list[Setup] = []

    def key_of(self, image: np.ndarray, pixel_size_um: float | None, blocks: np.ndarray | None = None) -> SetupKey:
        rows, cols = image.shape[:2]
        channels = 1 if image.ndim == 2 else image.shape[2]
        level = substrate_colour(image, blocks)
        return SetupKey(rows, cols, channels, pixel_size_um, tuple(float(v) for v in level))

    def place(self, image: np.ndarray, pixel_size_um: float | None, blocks: np.ndarray) -> tuple[int, Setup, bool]:
        """`assign` for an image: a setup whose substrate colour covers most of the image's blocks
        (``TYPICAL_SHARE``) takes it at once (the usual case in a scan); otherwise the image's substrate level
        is estimated first."""
        rows, cols = image.shape[:2]
        channels = 1 if image.ndim == 2 else image.shape[2]
        probe = SetupKey(rows, cols, channels, pixel_size_um, ())
        for i, setup in enumerate(self.setups):
            if setup.key.compatible(probe) and setup.key.covered_share(blocks) >= TYPICAL_SHARE:
                return i, setup, True
        return self.assign(self.key_of(image, pixel_size_um, blocks), blocks)

    def assign(self, key: SetupKey, blocks: np.ndarray | None = None) -> tuple[int, Setup, bool]:
        """The first setup whose key matches (so the assignment does not depend on later images), its index,
        and whether the image is typical of it.

        An image mostly covered by one big flake may mislead the substrate estimate; with its ``blocks``
        (`block_means`), it still joins a setup whose substrate colour covers a fifth of it, as atypical
        (its background must not teach the setup's flat field).
        """
        for i, setup in enumerate(self.setups):
            if setup.key.matches(key):
                return i, setup, True
        if blocks is not None:
            for i, setup in enumerate(self.setups):
                if setup.key.compatible(key) and setup.key.covered_share(blocks) >= 0.2:
                    return i, setup, False
        self.setups.append(Setup(key, self.material, self.nominal_oxide_nm, self.max_rungs, self.flat_field))
        return len(self.setups) - 1, self.setups[-1], True

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"setups": len(self.setups)}
        for i, setup in enumerate(self.setups):
            out.update(setup.state(f"s{i}."))
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        count = int(state.get("setups", 0))
        self.setups = [
            Setup.from_state(state, f"s{i}.", self.material, self.nominal_oxide_nm, self.max_rungs, self.flat_field)
            for i in range(count)
        ]
