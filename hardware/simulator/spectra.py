"""Optical data of the foreign imaging chain: index tables from several literature sources, camera
spectral sensitivities, lamp spectra, and a thin-film model with a finite illumination aperture.

Everything here lives with the simulator, not with the material plugins, so a detector under test
never sees it. Every table in ``data/`` names its source in its header; docs/foreign-setups.md lists them.

Units: wavelengths and thicknesses in nm; indices n + iκ (κ > 0 absorbs), as in `flakehunter.optics`.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt

from flakehunter.optics import blackbody_spectrum, interpolate_index, read_nk_csv, silica_index, silicon_index

_DATA = resources.files(__package__) / "data"

#: Wavelength grid of the foreign chain: 380..750 nm in 5 nm steps (white LEDs have a violet or blue pump).
GRID_NM: np.ndarray = np.arange(380.0, 750.0 + 2.5, 5.0)
GRID_NM.flags.writeable = False

#: Index sources per material. Each source maps "from this many layers on" to a table in ``data/``, all of
#: one publication, so that a source's few-layer ladder stays self-consistent (a monolayer-only source uses
#: its monolayer index for every thickness; graphene's thick bodies are graphite). "catalog" is the
#: material plugin's own index (the one the detector assumes), drawn like any other.
INDEX_SOURCES: dict[str, dict[str, dict[int, str]]] = {
    "graphene": {
        "catalog": {},
        "weber2010": {1: "graphene_weber2010.csv", 21: "graphite_djurisic1999_o.csv"},
        "djurisic1999": {1: "graphite_djurisic1999_o.csv"},
    },
    "hbn": {
        "catalog": {},
        "zotev2023": {1: "hbn_zotev2023_o.csv"},
        "grudinin2023": {1: "hbn_grudinin2023_o.csv"},
    },
    "mos2": {
        "catalog": {},
        "islam2021": {1: "mos2_islam2021_1L.csv", 2: "mos2_islam2021_fewL.csv"},
        "ermolaev2020": {1: "mos2_ermolaev2020_1L.csv"},
        "song2019": {1: "mos2_song2019_1L.csv", 3: "mos2_song2019_3L.csv"},
    },
    "wse2": {
        "catalog": {},
        "gu2019": {1: "wse2_gu2019_1L.csv", 2: "wse2_gu2019_2L.csv", 3: "wse2_gu2019_3L.csv"},
        "jung2019": {1: "wse2_jung2019_1L.csv"},
    },
    "mose2": {
        "catalog": {},
        "munkhbat2022": {1: "mose2_munkhbat2022_o.csv"},
        "zotev2023": {1: "mose2_zotev2023_o.csv"},
    },
    "ws2": {
        "catalog": {},
        "ermolaev2020": {1: "ws2_ermolaev2020_1L.csv"},
        "jung2019": {1: "ws2_jung2019_1L.csv"},
        "munkhbat2022": {1: "ws2_munkhbat2022_o.csv"},
    },
}
#: Silicon: Green 2008 (the core's table), Aspnes & Studna 1983, Schinke et al. 2015.
SILICON_SOURCES: dict[str, str | None] = {"green2008": None, "aspnes1983": "si_aspnes1983.csv",
                                          "schinke2015": "si_schinke2015.csv"}
#: Silica: Malitson 1965 (the core's formula), deposited films of Gao et al. 2013 and Lemarchand 2013.
SILICA_SOURCES: dict[str, str | None] = {"malitson1965": None, "gao2013": "sio2_gao2013.csv",
                                         "lemarchand2013": "sio2_lemarchand2013.csv"}
#: Measured RGB sensitivities (see each file's header); "gaussian" is the parametrised family.
SENSOR_FILES: dict[str, str] = {
    "nikon-d5100": "camera_nikon_d5100_npl.csv",
    "sigma-sd-merrill": "camera_sigma_sdmerrill_npl.csv",
    "sony-icx282aq": "camera_sony_icx282aq.csv",
}
#: Sensors whose curves already include an IR-cut filter.
SENSORS_WITH_IR_CUT = frozenset({"nikon-d5100", "sigma-sd-merrill"})
#: CIE 015:2018 white-LED spectra.
LED_FILES: dict[str, str] = {
    "led-b1": "lamp_cie_led_b1.csv",
    "led-b3": "lamp_cie_led_b3.csv",
    "led-b5": "lamp_cie_led_b5.csv",
    "led-v1": "lamp_cie_led_v1.csv",
}


@functools.cache
def _nk_table(name: str) -> tuple[np.ndarray, np.ndarray]:
    return read_nk_csv(_DATA / name)


@functools.cache
def _columns(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength_nm, values (n_columns, n_rows)) of a ``wavelength_nm,...`` table with # comments."""
    with (_DATA / name).open(encoding="utf-8") as handle:
        rows = list(csv.reader(line for line in handle if not line.startswith("#")))
    table = np.array([[float(v) for v in row] for row in rows[1:]])
    return table[:, 0], table[:, 1:].T


def tabulated_index(name: str, wavelength_nm: npt.ArrayLike) -> np.ndarray:
    """Index n + iκ of a vendored table, interpolated (held constant beyond the table)."""
    return interpolate_index(*_nk_table(name), wavelength_nm)


@dataclass(frozen=True)
class Perturbation:
    """A multiplicative change of n and κ, and a shift of the spectrum (exciton positions move with strain,
    substrate and temperature). The index at λ is the source's at λ - shift_nm, times the scales."""

    n_scale: float = 1.0
    k_scale: float = 1.0
    shift_nm: float = 0.0

    def apply(self, index_at: Callable[[np.ndarray], np.ndarray], wavelength_nm: np.ndarray) -> np.ndarray:
        index = index_at(np.asarray(wavelength_nm, float) - self.shift_nm)
        return index.real * self.n_scale + 1j * np.maximum(index.imag, 0.0) * self.k_scale


def material_index_function(
    material: str, source: str, catalog_index: Callable[[np.ndarray, int], np.ndarray] | None
) -> Callable[[np.ndarray, int], np.ndarray]:
    """(wavelength_nm, layers) -> index for ``source`` of ``material`` (see `INDEX_SOURCES`)."""
    tables = INDEX_SOURCES[material][source]
    if not tables:
        if catalog_index is None:
            raise ValueError(f"{material}: source 'catalog' needs the material's own index function")
        return catalog_index

    def index(wavelength_nm: np.ndarray, layers: int) -> np.ndarray:
        usable = [n for n in tables if n <= max(layers, 1)]
        return tabulated_index(tables[max(usable) if usable else min(tables)], wavelength_nm)

    return index


def silicon(source: str, wavelength_nm: np.ndarray) -> np.ndarray:
    name = SILICON_SOURCES[source]
    return silicon_index(wavelength_nm) if name is None else tabulated_index(name, wavelength_nm)


def silica(source: str, wavelength_nm: np.ndarray) -> np.ndarray:
    name = SILICA_SOURCES[source]
    return silica_index(wavelength_nm) if name is None else tabulated_index(name, wavelength_nm)


# ------------------------------------------------------------------------------------- thin films


def _gauss_angles(na: float, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Angles (rad) and weights of a uniformly filled pupil up to asin(na): weight ∝ sinθ cosθ dθ."""
    if na <= 1e-6:
        return np.zeros(1), np.ones(1)
    theta_max = float(np.arcsin(min(na, 0.99)))
    x, w = np.polynomial.legendre.leggauss(count)
    theta = 0.5 * theta_max * (x + 1.0)
    weight = w * np.sin(theta) * np.cos(theta)
    return theta, weight / weight.sum()


def _admittance(n: np.ndarray, sin0: float, pol: str) -> tuple[np.ndarray, np.ndarray]:
    """Tilted admittance (n cosθ for s, n / cosθ for p) and cosθ in a layer of index ``n`` (Snell from air)."""
    cos = np.sqrt(1.0 - (sin0 / n) ** 2 + 0j)
    cos = np.where(cos.imag < 0, -cos, cos)  # the forward (decaying) wave
    return (n * cos if pol == "s" else n / cos), cos


def reflectance_na(
    n_layers: Sequence[np.ndarray], d_layers_nm: Sequence[float], n_sub: np.ndarray, wavelength_nm: np.ndarray,
    na: float = 0.0, angles: int = 6,
) -> np.ndarray:
    """Unpolarised reflectance of a layer stack (top to bottom) on a substrate, averaged over an
    illumination cone of numerical aperture ``na`` (uniform pupil; optics.md §1.4 extension 1).

    s and p admittances n·cosθ and n/cosθ, phase 2π n d cosθ / λ, characteristic-matrix method. With
    ``na`` = 0 this is the normal-incidence result of `flakehunter.optics.reflectance`.
    """
    lam = np.asarray(wavelength_nm, float)
    thetas, weights = _gauss_angles(na, angles)
    total = np.zeros_like(lam)
    for theta0, weight in zip(thetas, weights, strict=True):
        sin0 = float(np.sin(theta0))
        for pol in ("s", "p"):
            m11 = np.ones_like(lam, complex)
            m12 = np.zeros_like(m11)
            m21 = np.zeros_like(m11)
            m22 = np.ones_like(m11)
            for n, d in zip(n_layers, d_layers_nm, strict=True):
                n = np.asarray(n, complex)
                eta, cos = _admittance(n, sin0, pol)
                delta = 2.0 * np.pi * n * d * cos / lam
                c, s = np.cos(delta), np.sin(delta)
                a12, a21 = -1j * s / eta, -1j * eta * s
                m11, m12, m21, m22 = m11 * c + m12 * a21, m11 * a12 + m12 * c, m21 * c + m22 * a21, m21 * a12 + m22 * c
            eta_sub, _ = _admittance(np.asarray(n_sub, complex), sin0, pol)
            eta0, _ = _admittance(np.ones_like(lam, complex), sin0, pol)
            b = m11 + m12 * eta_sub
            c = m21 + m22 * eta_sub
            total += weight * 0.5 * np.abs((eta0 * b - c) / (eta0 * b + c)) ** 2
    return total


# ------------------------------------------------------------------------------------- camera and lamp


def lamp_spectrum(kind: str, temperature_k: float, wavelength_nm: np.ndarray = GRID_NM) -> np.ndarray:
    """Relative spectral power of a halogen lamp (Planck at ``temperature_k``) or a CIE white LED."""
    if kind == "halogen":
        return blackbody_spectrum(wavelength_nm, temperature_k)
    wl, values = _columns(LED_FILES[kind])
    spectrum = np.interp(wavelength_nm, wl, values[0], left=0.0, right=0.0)
    return spectrum / spectrum.max()


def measured_sensitivity(sensor: str, wavelength_nm: np.ndarray = GRID_NM) -> np.ndarray:
    """(3, n) R, G, B sensitivity of a measured sensor on ``wavelength_nm`` (zero outside its table)."""
    wl, values = _columns(SENSOR_FILES[sensor])
    q = np.stack([np.interp(wavelength_nm, wl, v, left=0.0, right=0.0) for v in values])
    return q / q.max()


def gaussian_family_sensitivity(
    peaks_nm: Sequence[float], left_fwhm_nm: Sequence[float], right_fwhm_nm: Sequence[float],
    red_blue_lobe: float, wavelength_nm: np.ndarray = GRID_NM, qe_envelope: bool = True,
) -> np.ndarray:
    """(3, n) R, G, B sensitivities of the parametrised family: skewed Gaussian passbands (a different
    width each side of the peak) on a silicon quantum-efficiency envelope, plus the small short-wave lobe
    that real red colour filters transmit (``red_blue_lobe`` of the red peak, near 440 nm)."""
    lam = np.asarray(wavelength_nm, float)
    qe = 0.35 + 0.65 * np.exp(-(((lam - 580.0) / 210.0) ** 2)) if qe_envelope else 1.0  # Si: weak in the blue
    rows = []
    for peak, left, right in zip(peaks_nm, left_fwhm_nm, right_fwhm_nm, strict=True):
        sigma = np.where(lam < peak, left, right) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        rows.append(np.exp(-0.5 * ((lam - peak) / sigma) ** 2))
    rows[0] = rows[0] + red_blue_lobe * np.exp(-0.5 * ((lam - 440.0) / 18.0) ** 2)
    q = np.stack(rows) * qe
    return q / q.max()


def ir_cut(cut_nm: float | None, width_nm: float, wavelength_nm: np.ndarray = GRID_NM) -> np.ndarray:
    """Transmission of an IR-cut (short-pass) filter with its 50 % point at ``cut_nm``; ones when None."""
    lam = np.asarray(wavelength_nm, float)
    if cut_nm is None:
        return np.ones_like(lam)
    return 1.0 / (1.0 + np.exp((lam - cut_nm) / width_nm))
