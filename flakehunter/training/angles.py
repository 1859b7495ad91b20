"""Crystal-axis angles modulo the material's period, and how image symmetries act on them.

Convention (image axes, DESIGN.md §4): an in-plane direction in an image is (d_row, d_col) and its angle
is θ = atan2(d_row, d_col) in degrees: measured from the +col axis (pointing right) towards the +row
axis (pointing down), i.e. clockwise as the image is displayed. With the default pixel -> stage transform
(x along col, y along row) this is the simulator's θ = atan2(dy, dx) in stage coordinates.

An edge direction is defined modulo the lattice period P (``Material.edge_symmetry_deg``: 30° for
graphene and hBN, 60° for 2H TMDs), so angles are compared by their wrapped difference in [-P/2, P/2).
A guess drawn uniformly at random is off by a uniform error in that range: RMS P/√12 (8.66° for P = 30°).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


def wrap_deg(theta_deg: ArrayLike, period_deg: float) -> np.ndarray:
    """Reduce angles into [0, period)."""
    wrapped: np.ndarray = np.mod(np.asarray(theta_deg, dtype=float), period_deg)
    return wrapped


def angle_error_deg(predicted_deg: ArrayLike, true_deg: ArrayLike, period_deg: float) -> np.ndarray:
    """Signed wrapped difference predicted − true in [-period/2, period/2)."""
    diff = np.asarray(predicted_deg, dtype=float) - np.asarray(true_deg, dtype=float)
    error: np.ndarray = np.mod(diff + period_deg / 2.0, period_deg) - period_deg / 2.0
    return error


def random_guess_rms_deg(period_deg: float) -> float:
    """RMS error of a uniformly random guess: period/√12 (8.66° for a 30° period)."""
    return period_deg / math.sqrt(12.0)


class Dihedral:
    """One of the eight symmetries of a square image (the dihedral group D4).

    Applied as: first transpose the (row, col) axes if ``transpose``, then rotate by ``quarter_turns``
    with `numpy.rot90` (counter-clockwise as displayed). Index 0..7 enumerates the group; 0 is identity.
    """

    __slots__ = ("quarter_turns", "transpose")

    def __init__(self, index: int) -> None:
        if not 0 <= index < 8:
            raise ValueError(f"dihedral index must be in 0..7, got {index}")
        self.quarter_turns = index % 4
        self.transpose = index >= 4

    def image(self, array: np.ndarray) -> np.ndarray:
        """Transform an (H, W) or (H, W, C) array; returns a contiguous copy."""
        out = np.swapaxes(array, 0, 1) if self.transpose else array
        return np.ascontiguousarray(np.rot90(out, self.quarter_turns, axes=(0, 1)))

    def angle(self, theta_deg: float, period_deg: float) -> float:
        """The angle θ of a direction in the image becomes, in the transformed image (mod period).

        A transpose swaps d_row and d_col: θ -> 90° − θ. `numpy.rot90` once maps (row, col) to
        (W−1−col, row), so (d_row, d_col) -> (−d_col, d_row): θ -> θ − 90°. Modulo 30° a quarter turn
        keeps θ; modulo 60° it shifts θ by 30°, which is why the period is always applied here.
        """
        theta = 90.0 - theta_deg if self.transpose else theta_deg
        return float(np.mod(theta - 90.0 * self.quarter_turns, period_deg))
