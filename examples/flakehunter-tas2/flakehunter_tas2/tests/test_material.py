"""TaS2 passes flakehunter's material contract, with the literature values it claims."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flakehunter.testing.contracts import MaterialContract


class TestMaterial(MaterialContract):
    """Every test of the contract, on the material as the plugin registers it."""

    @pytest.fixture
    def material(self, flakehunter_registry: Any) -> Any:
        return flakehunter_registry.material("tas2")


def test_registered_by_this_package(flakehunter_registry: Any) -> None:
    """The material comes from this package's entry point, not from another plugin."""
    assert flakehunter_registry.source("material", "tas2")["plugin"] == "tas2"


def test_index_is_munkhbat_2022_in_plane(flakehunter_registry: Any) -> None:
    """n + iκ at 450, 550 and 650 nm are the rows of refractiveindex.info's TaS2/Munkhbat-o at those wavelengths,
    for every layer count; thickness is c/2 of 2H-TaS2."""
    material = flakehunter_registry.material("tas2")
    expected = np.array([3.529161 + 0.8859004j, 3.118603 + 0.4340194j, 2.763078 + 0.3449552j])
    for layers in (1, 2, 5):
        assert material.index(np.array([450.0, 550.0, 650.0]), layers) == pytest.approx(expected, abs=1e-6)
    assert material.layer_thickness_nm == 0.605
    assert material.edge_symmetry_deg == 60.0
