"""The built-in materials: graphene, hBN, MoS2, WSe2, MoSe2 and WS2, with their optical constants.

Indices are n + iκ (κ > 0 absorbs) at normal incidence, i.e. the in-plane (ordinary) index.
Sources (all via the refractiveindex.info database where tabulated):

* graphene: 2.6 + 1.3i at every wavelength, the bulk-graphite value of Blake et al., Appl. Phys.
  Lett. 91, 063124 (2007) (written 2.6 - 1.3i there, engineering convention).
* hBN: the single-oscillator Sellmeier fit of S. Y. Lee et al., Phys. Status Solidi B 256, 1800417
  (2018), doi:10.1002/pssb.201800417 (database ``BN/nk/Lee``, optics.md §1.8), in-plane index
  n² - 1 = 3.263 λ² / (λ² - 0.1644²), λ in µm, κ = 0 (hBN is transparent in the visible); fitted on
  450-1200 nm, extrapolated below. It is the index optics.md's hBN test vectors use. Checked against two
  later ellipsometry data sets (P. G. Zotev et al., Laser Photonics Rev. 17, 2200957 (2023); D. V. Grudinin
  et al., Mater. Horiz. 10, 2427 (2023)): over 400-720 nm it stays within 0.016 of the span between them
  (2.151-2.286 at 400 nm, 2.123-2.211 at 720 nm), but its dispersion is steeper (n falls by 0.11 from 400 to
  700 nm; Zotev 0.027, Grudinin 0.075). Fitting the measured RWTH hBN contrast classes on 90 nm SiO2
  (optics.md §1.8, thickness per class free) with each of the three gives the same rms (0.153-0.158), so
  the data do not favour another source; tests/test_materials_index.py pins this.
* MoS2, WSe2, MoSe2, WS2: layer-resolved 1L/2L/3L tables of C. Hsu et al., Adv. Optical Mater. 7,
  1900239 (2019), doi:10.1002/adom.201900239, vendored in ``data/`` (every ~2 nm row, each file names its
  database entry); thicker flakes reuse the 3L index.

Layer thickness is c/2 of the bulk 2H crystal (graphite 0.335, hBN 0.333, MoS2 0.615, WSe2 0.648, MoSe2
0.646, WS2 0.616 nm). Straight edges repeat every 30° where zigzag and armchair edges both appear
(graphene, hBN) and every 60° for the 2H dichalcogenides, whose flakes cleave along one edge family.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import numpy.typing as npt

from flakehunter.materials import IndexFunction, Material
from flakehunter.optics import interpolate_index, read_nk_csv

_DATA = resources.files(__package__) / "data"

#: Hsu 2019 tabulates 1L, 2L and 3L; thicker flakes reuse the thickest table.
_HSU_LAYERS = (1, 2, 3)


def _check_layers(layers: int) -> None:
    if layers < 1:
        raise ValueError(f"a flake has at least one layer, got {layers}")


def _graphene_index(wavelength_nm: npt.ArrayLike, layers: int) -> np.ndarray:
    _check_layers(layers)
    return np.full(np.shape(wavelength_nm), 2.6 + 1.3j)


def _hbn_index(wavelength_nm: npt.ArrayLike, layers: int) -> np.ndarray:
    _check_layers(layers)
    lam2 = (np.asarray(wavelength_nm, dtype=float) / 1000.0) ** 2  # the fit takes µm
    return np.sqrt(1.0 + 3.263 * lam2 / (lam2 - 0.1644**2)).astype(complex)


def _hsu_index(stem: str) -> IndexFunction:
    """Index function over the vendored ``{stem}_hsu2019_{N}L.csv`` tables, read on first use."""

    @functools.cache
    def tables() -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return {n: read_nk_csv(_DATA / f"{stem}_hsu2019_{n}L.csv") for n in _HSU_LAYERS}

    def index(wavelength_nm: npt.ArrayLike, layers: int) -> np.ndarray:
        _check_layers(layers)
        return interpolate_index(*tables()[min(layers, _HSU_LAYERS[-1])], wavelength_nm)

    return index


GRAPHENE = Material(
    name="graphene",
    display_name="graphene",
    layer_thickness_nm=0.335,
    edge_symmetry_deg=30.0,
    index=_graphene_index,
)

HBN = Material(
    name="hbn",
    display_name="hBN",
    layer_thickness_nm=0.333,
    edge_symmetry_deg=30.0,
    index=_hbn_index,
)

MOS2 = Material(
    name="mos2",
    display_name="MoS2",
    layer_thickness_nm=0.615,
    edge_symmetry_deg=60.0,
    index=_hsu_index("mos2"),
)

WSE2 = Material(
    name="wse2",
    display_name="WSe2",
    layer_thickness_nm=0.648,
    edge_symmetry_deg=60.0,
    index=_hsu_index("wse2"),
)

MOSE2 = Material(
    name="mose2",
    display_name="MoSe2",
    layer_thickness_nm=0.646,
    edge_symmetry_deg=60.0,
    index=_hsu_index("mose2"),
)

WS2 = Material(
    name="ws2",
    display_name="WS2",
    layer_thickness_nm=0.616,
    edge_symmetry_deg=60.0,
    index=_hsu_index("ws2"),
)

#: Every built-in material, in registration order.
BUILTIN_MATERIALS = (GRAPHENE, HBN, MOS2, WSE2, MOSE2, WS2)
