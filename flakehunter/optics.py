"""Thin-film optics of 2D flakes on SiO2/Si, and the RGB contrast a camera sees.

The stack, top to bottom, at normal incidence::

    air (n0 = 1) | films (top -> bottom) | SiO2 (Malitson, oxide_nm) | Si (Green 2008, semi-infinite)

Conventions:

* Complex indices use the physics convention n + iκ with κ > 0 absorbing (fields ∝ e^{i(kz-ωt)}),
  as `tmm` and the refractiveindex.info database do. Blake et al. 2007 write graphene as 2.6 - 1.3i
  (engineering convention); here it is 2.6 + 1.3i.
* Contrast is Weber contrast, C = S(stack) / S(bare substrate) - 1: negative when the flake is
  darker. It is the 2DMatGMM convention and the opposite sign of Blake's C.
* Wavelengths and thicknesses are always in nm; names carry the unit.
* RGB arrays are always in R, G, B order and are linear camera signals (no gamma).

Method: the characteristic-matrix (Abelès) method of optics.md §1.4, vectorised over wavelength.
A camera channel's signal is the reflectance spectrum weighted by source spectrum × channel
sensitivity (optics.md §2.1); white balance cancels in the per-channel contrast.

Sources:

* Si: M. A. Green, Sol. Energ. Mat. Sol. Cells 92, 1305 (2008), tabulated in
  ``flakehunter/data/si_green2008.csv`` (refractiveindex.info database, CC0), interpolated linearly.
* SiO2: I. H. Malitson, J. Opt. Soc. Am. 55, 1205 (1965), Sellmeier formula.
* Camera: Gaussian channels under a 3100 K blackbody, fitted to contrasts computed with the
  NPL-measured Nikon D5100 sensitivities (``optics-tables.txt`` of the project reference notes);
  see `DEFAULT_CAMERA`.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from flakehunter.materials import Material

#: Default wavelength grid for every spectral calculation: 400..720 nm in 5 nm steps.
WAVELENGTHS_NM: np.ndarray = np.arange(400.0, 720.0 + 2.5, 5.0)
WAVELENGTHS_NM.flags.writeable = False

#: One homogeneous layer: (complex index n + iκ over the wavelength grid, thickness in nm).
Film = tuple[npt.ArrayLike, float]


# Physical constants for Planck's law (SI units).
_PLANCK_H = 6.62607015e-34
_LIGHT_C = 2.99792458e8
_BOLTZMANN_K = 1.380649e-23


def read_nk_csv(path: str | Path | Traversable) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``wavelength_nm,n,k`` table; lines starting with ``#`` are comments.

    Returns:
        (wavelength_nm, index) with index = n + iκ, sorted by wavelength.
    """
    with (Path(path) if isinstance(path, str) else path).open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    wavelength_nm = np.array([float(row["wavelength_nm"]) for row in rows])
    index = np.array([complex(float(row["n"]), float(row["k"])) for row in rows])
    order = np.argsort(wavelength_nm)
    return wavelength_nm[order], index[order]


def interpolate_index(
    table_wavelength_nm: np.ndarray, table_index: np.ndarray, wavelength_nm: npt.ArrayLike
) -> np.ndarray:
    """Linearly interpolate n and κ of a tabulated index; values beyond the table are held constant."""
    wavelength_nm = np.asarray(wavelength_nm, dtype=float)
    n = np.interp(wavelength_nm, table_wavelength_nm, table_index.real)
    k = np.interp(wavelength_nm, table_wavelength_nm, table_index.imag)
    index: np.ndarray = n + 1j * k
    return index


@functools.cache
def _silicon_table() -> tuple[np.ndarray, np.ndarray]:
    return read_nk_csv(resources.files("flakehunter") / "data" / "si_green2008.csv")


def silicon_index(wavelength_nm: npt.ArrayLike) -> np.ndarray:
    """Complex index of crystalline Si at 300 K (Green 2008), n + iκ, linearly interpolated."""
    return interpolate_index(*_silicon_table(), wavelength_nm)


def silica_index(wavelength_nm: npt.ArrayLike) -> np.ndarray:
    """Index of fused/thermal SiO2 from Malitson's Sellmeier formula (real, κ = 0)."""
    lam2 = (np.asarray(wavelength_nm, dtype=float) / 1000.0) ** 2  # the formula takes µm
    n2 = (
        1.0
        + 0.6961663 * lam2 / (lam2 - 0.0684043**2)
        + 0.4079426 * lam2 / (lam2 - 0.1162414**2)
        + 0.8974794 * lam2 / (lam2 - 9.896161**2)
    )
    return np.sqrt(n2).astype(complex)


def reflectance(
    n_layers: Sequence[npt.ArrayLike],
    d_layers_nm: Sequence[npt.ArrayLike],
    n_sub: npt.ArrayLike,
    wavelength_nm: npt.ArrayLike,
    n0: complex = 1.0,
) -> np.ndarray:
    """Normal-incidence reflectance R = |r|² of a layer stack by the characteristic-matrix method.

    Args:
        n_layers: complex index of each finite layer, top to bottom (scalars or arrays that
            broadcast with ``wavelength_nm``), physics convention n + iκ.
        d_layers_nm: thickness of each layer in nm (broadcasts like the indices).
        n_sub: index of the semi-infinite substrate.
        wavelength_nm: vacuum wavelength(s) in nm.
        n0: index of the incidence medium.

    Returns:
        R with the broadcast shape of the inputs. No layers gives the bare-interface Fresnel R.
    """
    if len(n_layers) != len(d_layers_nm):
        raise ValueError(f"{len(n_layers)} layer indices but {len(d_layers_nm)} thicknesses")
    lam = np.asarray(wavelength_nm, dtype=float)
    m11 = np.ones_like(lam, dtype=complex)
    m12 = np.zeros_like(m11)
    m21 = np.zeros_like(m11)
    m22 = np.ones_like(m11)
    for n, d in zip(n_layers, d_layers_nm, strict=True):
        n = np.asarray(n, dtype=complex)
        delta = 2.0 * np.pi * n * np.asarray(d, dtype=float) / lam
        cos, sin = np.cos(delta), np.sin(delta)
        a12, a21 = -1j * sin / n, -1j * n * sin
        m11, m12, m21, m22 = (
            m11 * cos + m12 * a21,
            m11 * a12 + m12 * cos,
            m21 * cos + m22 * a21,
            m21 * a12 + m22 * cos,
        )
    n_sub = np.asarray(n_sub, dtype=complex)
    b = m11 + m12 * n_sub
    c = m21 + m22 * n_sub
    r = (n0 * b - c) / (n0 * b + c)
    reflectance: np.ndarray = np.abs(r) ** 2
    return reflectance


def stack_reflectance(
    films: Sequence[Film], oxide_nm: float | np.ndarray, wavelength_nm: npt.ArrayLike = WAVELENGTHS_NM
) -> np.ndarray:
    """Reflectance spectrum of ``films`` (top to bottom) on SiO2(``oxide_nm``)/Si.

    Each film is (complex index over ``wavelength_nm``, thickness in nm). No films gives the bare
    substrate. An array of oxides of shape (D, 1) gives one spectrum per oxide, (D, wavelengths).
    """
    wavelength_nm = np.asarray(wavelength_nm, dtype=float)
    indices = [index for index, _ in films] + [silica_index(wavelength_nm)]
    thicknesses = [thickness for _, thickness in films] + [oxide_nm]
    return reflectance(indices, thicknesses, silicon_index(wavelength_nm), wavelength_nm)


def blackbody_spectrum(wavelength_nm: npt.ArrayLike, temperature_k: float) -> np.ndarray:
    """Planck spectral radiance at ``temperature_k``, normalised to a maximum of 1 on the grid."""
    lam_m = np.asarray(wavelength_nm, dtype=float) * 1e-9
    radiance = 1.0 / (lam_m**5 * np.expm1(_PLANCK_H * _LIGHT_C / (lam_m * _BOLTZMANN_K * temperature_k)))
    normalised: np.ndarray = radiance / radiance.max()
    return normalised


# DEFAULT_CAMERA constants: fitted with scipy.optimize.least_squares (six free parameters, source fixed
# at 3100 K, default wavelength grid) to all 44 RGB rows of the reference optics-tables.txt, which
# were computed with the NPL-measured Nikon D5100 curves, a 3100 K blackbody and these same optical
# constants: graphene 90/285/300 nm 1-4L, hBN 90/285 nm 1L-20 nm, MoS2 and WSe2 70/90/285 nm 1-3L.
# Residuals were divided by 0.02 for graphene and hBN up to 5 layers and by 0.05 otherwise (the
# tolerances tests/test_optics.py holds them to), then rounded to 0.1 nm.
_DEFAULT_CENTRES_NM = (605.1, 530.1, 464.7)
_DEFAULT_FWHM_NM = (86.5, 100.3, 85.8)


# eq=False keeps identity hashing, so a camera can key the contrast cache (its arrays are not hashable).
@dataclass(frozen=True, eq=False)
class CameraResponse:
    """Spectral response of an RGB camera under a given light source.

    Attributes:
        wavelengths_nm: the wavelength grid, shape (n,).
        weights: shape (3, n), rows in R, G, B order: source spectrum × channel sensitivity,
            each row normalised to sum 1, so a perfect mirror gives RGB (1, 1, 1).
    """

    wavelengths_nm: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        wavelengths_nm = np.array(self.wavelengths_nm, dtype=float)
        weights = np.array(self.weights, dtype=float)
        if wavelengths_nm.ndim != 1 or weights.shape != (3, wavelengths_nm.size):
            raise ValueError(
                f"weights must have shape (3, {wavelengths_nm.size}) to match wavelengths_nm, got {weights.shape}"
            )
        weights = weights / weights.sum(axis=1, keepdims=True)
        wavelengths_nm.flags.writeable = False
        weights.flags.writeable = False
        # Frozen dataclass: store the validated, read-only copies.
        object.__setattr__(self, "wavelengths_nm", wavelengths_nm)
        object.__setattr__(self, "weights", weights)

    def rgb(self, reflectance_spectrum: npt.ArrayLike) -> np.ndarray:
        """Linear R, G, B signal of a reflectance spectrum on ``wavelengths_nm``.

        A spectrum of shape (n,) gives shape (3,); leading axes are kept, (..., n) -> (..., 3).
        """
        signal: np.ndarray = np.asarray(reflectance_spectrum, dtype=float) @ self.weights.T
        return signal

    @classmethod
    def gaussian(
        cls,
        centres_nm: tuple[float, float, float] = _DEFAULT_CENTRES_NM,
        fwhm_nm: tuple[float, float, float] = _DEFAULT_FWHM_NM,
        source_temperature_k: float = 3100.0,
        wavelength_nm: npt.ArrayLike = WAVELENGTHS_NM,
    ) -> CameraResponse:
        """Camera with Gaussian R, G, B sensitivities under a blackbody (halogen) source.

        Args:
            centres_nm: peak wavelength of the R, G and B sensitivities (default: the fit behind
                `DEFAULT_CAMERA`).
            fwhm_nm: full width at half maximum of the R, G and B sensitivities.
            source_temperature_k: colour temperature of the Planck source.
            wavelength_nm: wavelength grid of the response.
        """
        wavelength_nm = np.asarray(wavelength_nm, dtype=float)
        centres = np.asarray(centres_nm, dtype=float)[:, None]
        sigmas = np.asarray(fwhm_nm, dtype=float)[:, None] / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        sensitivity = np.exp(-0.5 * ((wavelength_nm[None, :] - centres) / sigmas) ** 2)
        return cls(wavelength_nm, sensitivity * blackbody_spectrum(wavelength_nm, source_temperature_k))


#: The camera used when none is given: Gaussian channels (R, G, B peaks 605.1 / 530.1 / 464.7 nm,
#: FWHM 86.5 / 100.3 / 85.8 nm) under a 3100 K blackbody. Their source-weighted centroids are
#: 610.9 / 542.4 / 479.1 nm (Nikon D5100: 607 / 542 / 482). Largest |contrast residual| against the
#: Nikon D5100 columns of optics-tables.txt: graphene 1-4L 0.004 (rms 0.002); hBN 1-5L 0.005;
#: hBN 3.3-20 nm 0.039; MoS2 1-3L 0.011; WSe2 1-3L 0.016 except 3L on 90 nm, red, 0.047 (the
#: Gaussian red channel lacks the real one's spectral shape where WSe2 3L's index is structured).
#: Against the RWTH measurements of optics.md §1.7 (graphene 1-4L on 90 nm, WSe2 1-3L on 70 nm) every
#: channel is within 0.033 except blue: graphene 3L 0.041, 4L 0.046 and WSe2 1L 0.059, which the
#: measured-curve Nikon model misses by as much.
DEFAULT_SOURCE_TEMPERATURE_K = 3100.0
DEFAULT_CAMERA = CameraResponse.gaussian(
    _DEFAULT_CENTRES_NM, _DEFAULT_FWHM_NM, source_temperature_k=DEFAULT_SOURCE_TEMPERATURE_K
)


@functools.lru_cache(maxsize=16)
def camera_with_lamp(source_temperature_k: float) -> CameraResponse:
    """The default camera's channels under a halogen lamp of another colour temperature (cached, so
    the contrast cache, keyed by camera identity, stays warm)."""
    return CameraResponse.gaussian(_DEFAULT_CENTRES_NM, _DEFAULT_FWHM_NM, source_temperature_k=source_temperature_k)


def rgb_contrast(films: Sequence[Film], oxide_nm: float, camera: CameraResponse = DEFAULT_CAMERA) -> np.ndarray:
    """Per-channel Weber contrast S(stack)/S(substrate) - 1 of ``films`` on SiO2/Si, R, G, B order.

    Film indices must be sampled on ``camera.wavelengths_nm``.
    """
    wavelength_nm = camera.wavelengths_nm
    stack = camera.rgb(stack_reflectance(films, oxide_nm, wavelength_nm))
    contrast: np.ndarray = stack / _substrate_rgb_cached(oxide_nm, camera) - 1.0
    return contrast


def rgb_contrast_over_oxides(
    films: Sequence[Film], oxides_nm: npt.ArrayLike, camera: CameraResponse = DEFAULT_CAMERA
) -> np.ndarray:
    """(D, 3) contrasts of ``films`` on each of the D ``oxides_nm``: `rgb_contrast` for a whole table of
    oxides in one broadcast computation (to rounding)."""
    oxides = np.asarray(oxides_nm, dtype=float)[:, None]
    stack = camera.rgb(stack_reflectance(films, oxides, camera.wavelengths_nm))
    contrast: np.ndarray = stack / substrate_rgb(oxides, camera) - 1.0
    return contrast


# The same substrate under every layer count of a contrast table: computed once per oxide (and camera, by
# identity), half of the work of a table of contrasts.
@functools.lru_cache(maxsize=4096)
def _substrate_rgb_cached(oxide_nm: float, camera: CameraResponse) -> np.ndarray:
    rgb = substrate_rgb(oxide_nm, camera)
    rgb.flags.writeable = False
    return rgb


def substrate_rgb(oxide_nm: float | np.ndarray, camera: CameraResponse = DEFAULT_CAMERA) -> np.ndarray:
    """Absolute linear R, G, B signal of bare SiO2(``oxide_nm``)/Si (a perfect mirror gives 1, 1, 1); oxides of
    shape (D, 1) give (D, 3)."""
    return camera.rgb(stack_reflectance([], oxide_nm, camera.wavelengths_nm))


def film_contrast(
    index: npt.ArrayLike, thickness_nm: float, oxide_nm: float, camera: CameraResponse = DEFAULT_CAMERA
) -> np.ndarray:
    """R, G, B contrast of one homogeneous film (e.g. tape residue, n = 1.49) on SiO2/Si.

    ``index`` is a complex scalar or an array over ``camera.wavelengths_nm``.
    """
    index = np.broadcast_to(np.asarray(index, dtype=complex), camera.wavelengths_nm.shape)
    return rgb_contrast([(index, thickness_nm)], oxide_nm, camera)


def material_films(material: Material, layers: int, wavelength_nm: npt.ArrayLike = WAVELENGTHS_NM) -> list[Film]:
    """The film stack of a ``layers``-layer flake: one homogeneous film, or none for 0 layers."""
    if layers < 0:
        raise ValueError(f"layers must be >= 0, got {layers}")
    if layers == 0:
        return []
    wavelength_nm = np.asarray(wavelength_nm, dtype=float)
    return [(material.index(wavelength_nm, layers), material.thickness_nm(layers))]


def layer_contrast(
    material: Material, layers: int, oxide_nm: float, camera: CameraResponse = DEFAULT_CAMERA
) -> np.ndarray:
    """R, G, B contrast of a ``layers``-layer flake of ``material`` on SiO2(``oxide_nm``)/Si.

    Cached: the simulator and detectors call it per tile. The oxide is rounded to 0.01 nm before
    computing, so the cached value is exactly the value for its key. The result is read-only.
    """
    return _layer_contrast_cached(_MaterialKey(material), int(layers), round(float(oxide_nm), 2), camera)


class _MaterialKey:
    """Cache key for a Material: hashes by name, equal only to the same (or an equal) Material.

    Hashing by name needs nothing hashable inside the Material (its index may be a bound method of an
    unhashable table); comparing the Material keeps two materials that share a name apart.
    """

    __slots__ = ("material",)

    def __init__(self, material: Material) -> None:
        self.material = material

    def __hash__(self) -> int:
        return hash(self.material.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _MaterialKey) and (other.material is self.material or other.material == self.material)


# The camera keys by identity (CameraResponse has eq=False).
@functools.lru_cache(maxsize=4096)
def _layer_contrast_cached(key: _MaterialKey, layers: int, oxide_nm: float, camera: CameraResponse) -> np.ndarray:
    films = material_films(key.material, layers, camera.wavelengths_nm)
    contrast = rgb_contrast(films, oxide_nm, camera)
    contrast.flags.writeable = False
    return contrast
