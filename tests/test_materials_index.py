"""Built-in materials MoSe2 and WS2 (issue 12) and the hBN index, against their sources and optics.md."""

from __future__ import annotations

import numpy as np
import pytest

from flakehunter.hardware.simulator.spectra import tabulated_index
from flakehunter.optics import WAVELENGTHS_NM, layer_contrast
from flakehunter.plugins.materials import register_materials
from flakehunter.plugins.materials.catalog import HBN, MOSE2, WS2
from flakehunter.registry import get_registry


def test_mose2_and_ws2_are_registered_with_2h_symmetry_and_thin_targets():
    registered = []
    register_materials(register=lambda name, material: registered.append((name, material)))
    by_name = dict(registered)
    assert {"graphene", "hbn", "mos2", "wse2", "mose2", "ws2"} <= set(by_name)
    for name, display, thickness in (("mose2", "MoSe2", 0.646), ("ws2", "WS2", 0.616)):
        material = by_name[name]
        assert material.display_name == display
        assert material.edge_symmetry_deg == 60.0  # 2H TMD: one edge family, axis modulo 60°
        assert material.layer_thickness_nm == thickness  # c/2 of the bulk crystal
        assert material.target_layers == (1, 2, 3)
        assert get_registry().material(name) is material


@pytest.mark.parametrize(
    ("material", "layers", "expected"),
    [
        # Hsu et al. 2019 (refractiveindex.info MoSe2/WS2 Hsu-1L/-3L) at 450 / 550 / 633 nm, from the full
        # ~0.23 nm tables; the vendored files keep every ~2 nm row.
        (MOSE2, 1, [4.273 + 2.951j, 5.603 + 1.554j, 5.206 + 0.924j]),
        (MOSE2, 3, [4.533 + 3.357j, 5.041 + 2.083j, 4.482 + 0.968j]),
        (WS2, 1, [5.441 + 1.400j, 4.606 + 0.820j, 5.059 + 0.234j]),
        (WS2, 3, [4.901 + 1.969j, 4.218 + 0.736j, 4.750 + 0.936j]),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_tmd_indices_match_hsu_2019(material, layers, expected):
    assert material.index(np.array([450.0, 550.0, 633.0]), layers) == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("material", [MOSE2, WS2], ids=lambda m: m.name)
def test_tmd_tables_cover_the_grid_and_thick_flakes_reuse_3l(material):
    index_3l = material.index(WAVELENGTHS_NM, 3)
    assert np.all(index_3l.real > 2) and np.all(index_3l.imag >= 0)
    assert material.index(WAVELENGTHS_NM, 40) == pytest.approx(index_3l)
    assert material.index(WAVELENGTHS_NM, 1) != pytest.approx(index_3l)
    with pytest.raises(ValueError):
        material.index(WAVELENGTHS_NM, 0)


@pytest.mark.parametrize("material", [MOSE2, WS2], ids=lambda m: m.name)
@pytest.mark.parametrize("oxide_nm", [90.0, 285.0])
def test_tmd_monolayers_are_clearly_visible_and_darken_with_layers(material, oxide_nm):
    # optics.md §4.3: 1L TMDs have |C| of about 25-60 % in the best channel; in red, where the A/B excitons
    # absorb, each added layer darkens the flake further.
    contrasts = np.array([layer_contrast(material, n, oxide_nm) for n in (1, 2, 3)])
    best = int(np.argmax(np.abs(contrasts[0])))
    assert 0.2 <= abs(contrasts[0, best]) <= 0.65
    assert contrasts[0, 0] > contrasts[1, 0] > contrasts[2, 0]


# Computed for this test with the default camera and the catalog constants (regression vectors; optics.md
# gives none for MoSe2 and WS2): 1L R, G, B contrast on 90 and 285 nm SiO2.
TMD_VECTORS = {
    (MOSE2, 90.0): (-0.482, -0.494, -0.455),
    (MOSE2, 285.0): (-0.390, -0.188, -0.003),
    (WS2, 90.0): (-0.309, -0.226, -0.082),
    (WS2, 285.0): (-0.266, -0.045, 0.097),
}


@pytest.mark.parametrize(("material", "oxide_nm", "expected"), [(m, ox, rgb) for (m, ox), rgb in TMD_VECTORS.items()],
                         ids=lambda v: getattr(v, "name", None))
def test_tmd_monolayer_contrast_vectors(material, oxide_nm, expected):
    assert layer_contrast(material, 1, oxide_nm) == pytest.approx(expected, abs=0.002)


def test_hbn_index_is_lee_2018_within_the_spread_of_later_measurements():
    wavelength_nm = np.arange(400.0, 721.0, 10.0)
    lee = HBN.index(wavelength_nm, 1)
    # optics.md §1.8 (Lee 2018 at 450 / 550 / 633 nm) and the single-oscillator formula itself.
    assert HBN.index(np.array([450.0, 550.0, 633.0]), 1).real == pytest.approx([2.183, 2.141, 2.121], abs=2e-3)
    assert np.all(lee.imag == 0)  # transparent in the visible
    assert np.all(np.diff(lee.real) < 0)  # normal dispersion
    zotev = tabulated_index("hbn_zotev2023_o.csv", wavelength_nm).real
    grudinin = tabulated_index("hbn_grudinin2023_o.csv", wavelength_nm).real
    # Within 0.016 of the span of the later ellipsometry data (Zotev 2023 low, Grudinin 2023 high), 400-720 nm,
    # with a steeper dispersion than either (catalog docstring).
    assert np.all(lee.real >= np.minimum(zotev, grudinin) - 0.016)
    assert np.all(lee.real <= np.maximum(zotev, grudinin) + 0.016)
    assert lee.real[0] - lee.real[-1] > max(zotev[0] - zotev[-1], grudinin[0] - grudinin[-1])
    assert HBN.index(wavelength_nm, 1) == pytest.approx(HBN.index(wavelength_nm, 60))  # bulk index for all N


def test_hbn_monolayer_stays_faint_as_optics_md_says():
    for oxide_nm in (90.0, 285.0):
        contrast = layer_contrast(HBN, 1, oxide_nm)
        assert np.all(np.abs(contrast) <= 0.03)
        assert contrast[0] < 0 < contrast[2]
