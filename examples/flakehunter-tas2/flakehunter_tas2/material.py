"""The material TaS2 (2H polytype): what flakehunter needs to simulate its flakes and find them.

Index: the in-plane (ordinary) index of exfoliated multilayer TaS2 measured by spectroscopic ellipsometry,
B. Munkhbat et al., ACS Photonics 9, 2398 (2022), doi:10.1021/acsphotonics.2c00433, as tabulated in the
refractiveindex.info database (``main/TaS2/nk/Munkhbat-o``), vendored in ``data/`` every 5 nm over 380-760 nm.
It is the only TaS2 index in that database. The paper measures "metallic TaS2" with its plasma edge in the
near infrared (~1000-1300 nm) and, in the visible, a positive in-plane permittivity (n ≈ 3.1, κ ≈ 0.43 at
550 nm, ε₁ ≈ 9.5): the behaviour of metallic 2H-TaS2. Bulk 1T-TaS2 at room temperature (its
nearly-commensurate charge-density-wave phase) shows a *negative* in-plane permittivity across the visible in
ellipsometry (type-II hyperbolic), which these data do not, so they are taken as 2H. The paper's text that
we could read does not name the polytype; README.md says so.

The same index serves every layer count (the data are of multilayer flakes; no layer-resolved TaS2 data
exist there). Layer thickness: c/2 of 2H-TaS2 (c = 1.210 nm). Straight edges: every 60°, as for the other
2H dichalcogenides, whose flakes cleave along one edge family.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import numpy.typing as npt

from flakehunter.materials import Material
from flakehunter.optics import interpolate_index, read_nk_csv

#: The vendored index table (see its header for the source).
INDEX_TABLE = "tas2_munkhbat2022_o.csv"


@functools.cache
def _table() -> tuple[np.ndarray, np.ndarray]:
    """(wavelength_nm, n + iκ) of the vendored table, read on first use."""
    return read_nk_csv(resources.files(__package__) / "data" / INDEX_TABLE)


def index(wavelength_nm: npt.ArrayLike, layers: int) -> np.ndarray:
    """Complex index n + iκ (κ >= 0 absorbs) of a ``layers``-layer film; the multilayer index for every count."""
    if layers < 1:
        raise ValueError(f"a flake has at least one layer, got {layers}")
    return interpolate_index(*_table(), wavelength_nm)


MATERIAL = Material(
    name="tas2",
    display_name="TaS2",
    layer_thickness_nm=0.605,  # c/2 of 2H-TaS2 (c = 12.10 Å)
    edge_symmetry_deg=60.0,
    index=index,
    target_layers=(1, 2, 3),
)
