"""What the core knows about a 2D material: the contract material plugins fill in.

Material plugins (``register_materials``) supply `Material` objects; the simulator, the thin-film
optics and the detectors read them. Refractive indices follow the physics convention n + iκ
(κ > 0 absorbs), the one `tmm` and refractiveindex.info use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: (wavelength_nm array, layer count) -> complex refractive index array, n + iκ.
IndexFunction = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Material:
    """A layered crystal that can be exfoliated onto SiO2/Si.

    Attributes:
        name: registry name used in configs and on the command line ("graphene").
        display_name: how people write it ("hBN", "MoS2").
        layer_thickness_nm: thickness of one layer (graphene 0.335 nm).
        edge_symmetry_deg: period of the crystal-axis angle read from straight edges:
            30 where zigzag and armchair edges both occur (graphene, hBN), 60 where one edge family
            dominates (2H transition-metal dichalcogenides).
        index: complex refractive index for a film of ``layers`` layers at each wavelength.
            Thick films (bulk) reuse the thickest tabulated few-layer index.
        target_layers: layer counts users hunt for; detectors report these with an integer ``layers``.
    """

    name: str
    display_name: str
    layer_thickness_nm: float
    edge_symmetry_deg: float
    index: IndexFunction
    target_layers: tuple[int, ...] = (1, 2, 3)

    def thickness_nm(self, layers: int) -> float:
        """Physical thickness of a film of ``layers`` layers."""
        return layers * self.layer_thickness_nm
