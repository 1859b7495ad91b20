"""A "foreign setup": a random microscope, camera, lamp, chip and file format the detector was never tuned on.

`draw_setup(seed)` draws every part of the imaging chain that a detector must not assume (docs/foreign-setups.md
gives the ranges and why): refractive-index data of the flake, silicon and oxide from several literature
sources with their n and κ perturbed; the camera's spectral response (a parametrised family or a measured
sensor), lamp, white balance, colour matrix, tone curve, bit depth, file format and JPEG quality, PSF,
noise, vignetting; the oxide (50-320 nm) and the nominal the user states (up to ±15 nm off, or none);
the pixel size. The same seed always gives the same setup. `ForeignSetup` is plain data (pydantic), so a
scan config can give one explicitly (``camera.options.imaging.setup``) and a benchmark can write it to JSON.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flakehunter.hardware.simulator.spectra import (
    INDEX_SOURCES,
    LED_FILES,
    SENSOR_FILES,
    SENSORS_WITH_IR_CUT,
    SILICA_SOURCES,
    SILICON_SOURCES,
)

#: Materials a setup draws by default. hBN is left out: 1-3L hBN has |contrast| <= 3 % (optics.md §4.3)
#: and is not reliably visible at low magnification; ask for it explicitly.
DEFAULT_MATERIALS = ("graphene", "mos2", "wse2", "mose2", "ws2")

Tone = Literal["linear", "gamma", "srgb"]
WhiteBalance = Literal["grey-world", "preset", "off"]
FileFormat = Literal["ome-tiff", "png", "jpeg"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IndexChoice(_Frozen):
    """One material's optical constants: a source (spectra.INDEX_SOURCES etc.) and its perturbation."""

    source: str
    n_scale: float = Field(1.0, gt=0)
    k_scale: float = Field(1.0, ge=0)
    shift_nm: float = 0.0


class CameraChoice(_Frozen):
    """The camera's spectral response and in-camera processing.

    ``sensor``: "gaussian" (the parametrised family: ``peaks_nm``, ``left_fwhm_nm``, ``right_fwhm_nm`` in
    R, G, B order, ``red_blue_lobe`` and ``qe_envelope``) or a measured sensor of spectra.SENSOR_FILES.
    ``crosstalk`` mixes the channels' sensitivities (row c: how much of each channel leaks into c),
    ``ir_cut_nm`` is an IR-cut filter's 50 % point (None: no filter added). ``ccm`` is the
    colour-correction matrix applied after white balance (rows sum to 1, so grey stays grey; None for
    none). ``bayer``: a Bayer mosaic demosaiced bilinearly.
    """

    sensor: str = "gaussian"
    peaks_nm: tuple[float, float, float] = (605.0, 530.0, 465.0)
    left_fwhm_nm: tuple[float, float, float] = (90.0, 100.0, 85.0)
    right_fwhm_nm: tuple[float, float, float] = (90.0, 100.0, 85.0)
    red_blue_lobe: float = Field(0.0, ge=0)
    qe_envelope: bool = Field(True, description="multiply the family by a silicon quantum-efficiency curve")
    crosstalk: tuple[tuple[float, float, float], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    ir_cut_nm: float | None = None
    ir_cut_width_nm: float = Field(8.0, gt=0)
    ccm: tuple[tuple[float, float, float], ...] | None = None
    bayer: bool = False

    @model_validator(mode="after")
    def _shapes(self) -> CameraChoice:
        if self.sensor != "gaussian" and self.sensor not in SENSOR_FILES:
            raise ValueError(f"sensor: expected gaussian or one of {sorted(SENSOR_FILES)}, got {self.sensor!r}")
        for name in ("crosstalk", "ccm"):
            m = getattr(self, name)
            if m is not None and (len(m) != 3 or any(len(row) != 3 for row in m)):
                raise ValueError(f"{name} must be a 3 x 3 matrix")
        return self


class ForeignSetup(_Frozen):
    """Everything about one foreign setup. Lengths in µm, thicknesses and wavelengths in nm.

    The detector under test is told only what a user would tell it: the material, the pixel size and
    ``stated_oxide_nm`` (None: the user does not state the oxide). ``oxide_nm`` is the truth.
    """

    seed: int = 0
    material: str = "graphene"
    oxide_nm: float = Field(90.0, gt=0)
    stated_oxide_nm: float | None = 90.0
    pixel_size_um: float = Field(1.0, gt=0)
    flake_index: IndexChoice = IndexChoice(source="catalog")
    silicon: IndexChoice = IndexChoice(source="green2008")
    silica: IndexChoice = IndexChoice(source="malitson1965")
    residue_index: float = Field(1.49, gt=1)
    illumination_na: float = Field(0.1, ge=0, lt=1)
    lamp: str = "halogen"
    lamp_temperature_k: float = Field(3100.0, ge=1500, le=10000)
    camera: CameraChoice = CameraChoice()
    white_balance: WhiteBalance = "grey-world"
    preset_temperature_k: float = Field(5500.0, description="the light the 'preset' white balance was made for")
    exposure: float = Field(0.55, gt=0, lt=1, description="substrate at the centre, brightest channel, of full scale")
    black_level: float = Field(0.0, ge=0, lt=0.2, description="pedestal left in the data, fraction of full scale")
    tone: Tone = "linear"
    gamma: float = Field(2.2, gt=0)
    bit_depth: Literal[8, 12, 16] = 8
    file_format: FileFormat = "ome-tiff"
    jpeg_quality: int = Field(90, ge=1, le=100)
    psf_sigma_px: float = Field(1.0, ge=0)
    psf_jitter: float = Field(0.0, ge=0, description="relative tile-to-tile change of the PSF width (focus)")
    full_well_e: float = Field(10700.0, gt=0)
    read_noise_e: float = Field(6.0, ge=0)
    flicker: float = Field(0.005, ge=0)
    vignetting_a: float = Field(0.12, ge=0, lt=1)
    vignetting_b: float = Field(0.0, gt=-0.5, lt=1)
    vignetting_offset: tuple[float, float] = (0.0, 0.0)
    colour_tilt: float = Field(0.01, ge=0)
    shading_rms: float = Field(0.005, ge=0, description="low-frequency multiplicative illumination field")

    @model_validator(mode="after")
    def _consistent(self) -> ForeignSetup:
        if self.material not in INDEX_SOURCES:
            raise ValueError(f"material: expected one of {sorted(INDEX_SOURCES)}, got {self.material!r}")
        if self.flake_index.source not in INDEX_SOURCES[self.material]:
            raise ValueError(f"flake_index.source: {self.flake_index.source!r} is not a source for {self.material}")
        if self.silicon.source not in SILICON_SOURCES:
            raise ValueError(f"silicon.source: expected one of {sorted(SILICON_SOURCES)}")
        if self.silica.source not in SILICA_SOURCES:
            raise ValueError(f"silica.source: expected one of {sorted(SILICA_SOURCES)}")
        if self.lamp != "halogen" and self.lamp not in LED_FILES:
            raise ValueError(f"lamp: expected halogen or one of {sorted(LED_FILES)}, got {self.lamp!r}")
        if self.file_format == "jpeg" and self.bit_depth != 8:
            raise ValueError("a JPEG holds 8-bit data only")
        return self

    def summary(self) -> str:
        """One line: material, oxide true/stated, sensor, lamp, tone, format, pixel size."""
        stated = "-" if self.stated_oxide_nm is None else f"{self.stated_oxide_nm:.0f}"
        tone = {"linear": "lin", "srgb": "sRGB"}.get(self.tone, f"g{self.gamma:.1f}")
        fmt = {"ome-tiff": "tif", "png": "png"}.get(self.file_format, f"jpg{self.jpeg_quality}")
        lamp = f"{self.lamp_temperature_k:.0f}K" if self.lamp == "halogen" else self.lamp
        return (f"{self.material} ox {self.oxide_nm:.0f}/{stated} {self.camera.sensor} {lamp} "
                f"wb:{self.white_balance} {tone} {self.bit_depth}b {fmt} {self.pixel_size_um:.2f}um/px")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _index_choice(rng: np.random.Generator, sources: list[str], perturb: float, shift_nm: float = 0.0) -> IndexChoice:
    return IndexChoice(
        source=str(rng.choice(sources)),
        n_scale=float(1.0 + rng.uniform(-perturb, perturb)),
        k_scale=float(1.0 + rng.uniform(-perturb, perturb)),
        shift_nm=float(rng.uniform(-shift_nm, shift_nm)),
    )


def _camera(rng: np.random.Generator) -> CameraChoice:
    sensor = str(rng.choice(["gaussian", "gaussian", *SENSOR_FILES]))
    peaks = (rng.uniform(585, 625), rng.uniform(515, 555), rng.uniform(445, 475))
    fwhm = [rng.uniform(lo, hi) for lo, hi in ((60, 110), (70, 120), (50, 100))]
    skew = rng.uniform(0.7, 1.4, size=3)
    leak = rng.uniform(0.0, 0.12, size=(3, 3))
    crosstalk = np.eye(3) + leak * (1 - np.eye(3))
    has_cut = sensor in SENSORS_WITH_IR_CUT
    ir_cut_nm = None if has_cut or rng.random() < 0.15 else float(rng.uniform(640, 700))
    ccm = None
    if rng.random() < 0.5:  # a colour-correction matrix: saturation boost, rows sum to 1
        off = -rng.uniform(0.05, 0.4, size=(3, 3)) * (1 - np.eye(3))
        ccm = off + np.diag(1.0 - off.sum(axis=1))
    return CameraChoice(
        sensor=sensor,
        peaks_nm=tuple(float(p) for p in peaks),
        left_fwhm_nm=tuple(float(f * s) for f, s in zip(fwhm, skew, strict=True)),
        right_fwhm_nm=tuple(float(f / s) for f, s in zip(fwhm, skew, strict=True)),
        red_blue_lobe=float(rng.uniform(0.0, 0.12)),
        crosstalk=tuple(tuple(float(v) for v in row) for row in crosstalk),
        ir_cut_nm=ir_cut_nm,
        ir_cut_width_nm=float(rng.uniform(5, 12)),
        ccm=None if ccm is None else tuple(tuple(float(v) for v in row) for row in ccm),
        bayer=bool(rng.random() < 0.4),
    )


def draw_setup(seed: int, materials: tuple[str, ...] = DEFAULT_MATERIALS) -> ForeignSetup:
    """A random foreign setup; the same ``seed`` (and ``materials``) always gives the same one."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng([seed, 12])
    material = str(rng.choice(list(materials)))
    oxide = float(rng.uniform(50.0, 320.0))
    stated = None if rng.random() < 0.25 else float(round(oxide + rng.uniform(-15.0, 15.0)))
    if stated is not None:  # users state whole nm; rounding must not take it past ±15 nm
        stated = float(min(max(stated, math.ceil(oxide - 15.0)), math.floor(oxide + 15.0)))
    file_format = str(rng.choice(["ome-tiff", "ome-tiff", "png", "jpeg", "jpeg"]))
    bit_depth = 8 if file_format == "jpeg" else int(rng.choice([8, 12, 16]))
    tone = str(rng.choice(["linear", "gamma", "srgb"]))
    lamp = "halogen" if rng.random() < 0.65 else str(rng.choice(list(LED_FILES)))
    return ForeignSetup(
        seed=seed,
        material=material,
        oxide_nm=round(oxide, 2),
        stated_oxide_nm=stated,
        pixel_size_um=round(_log_uniform(rng, 0.3, 2.5), 4),
        flake_index=_index_choice(rng, list(INDEX_SOURCES[material]), 0.10, shift_nm=5.0),
        silicon=_index_choice(rng, list(SILICON_SOURCES), 0.02),
        silica=IndexChoice(source=str(rng.choice(list(SILICA_SOURCES))), n_scale=float(1 + rng.uniform(-0.01, 0.01))),
        residue_index=float(rng.uniform(1.45, 1.55)),
        illumination_na=float(rng.uniform(0.03, 0.35)),
        lamp=lamp,
        lamp_temperature_k=float(rng.uniform(2700, 3400)),
        camera=_camera(rng),
        white_balance=str(rng.choice(["grey-world", "preset", "off"])),
        preset_temperature_k=float(rng.choice([3200.0, 5500.0])),
        exposure=float(rng.uniform(0.35, 0.75)),
        black_level=float(rng.uniform(0.0, 0.03)) if rng.random() < 0.3 else 0.0,
        tone=tone,
        gamma=float(rng.uniform(1.8, 2.4)),
        bit_depth=bit_depth,
        file_format=file_format,
        jpeg_quality=int(rng.integers(70, 96)),
        psf_sigma_px=float(rng.uniform(0.5, 2.5)),
        psf_jitter=float(rng.uniform(0.0, 0.1)),
        full_well_e=_log_uniform(rng, 5000, 30000),
        read_noise_e=float(rng.uniform(2, 15)),
        flicker=float(rng.uniform(0.002, 0.01)),
        vignetting_a=float(rng.uniform(0.03, 0.35)),
        vignetting_b=float(rng.uniform(-0.06, 0.06)),
        vignetting_offset=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))),
        colour_tilt=float(rng.uniform(0.0, 0.015)),
        shading_rms=float(rng.uniform(0.003, 0.008)),
    )


def control_setup(material: str = "graphene", oxide_nm: float = 90.0, pixel_size_um: float = 1.0,
                  seed: int = 0) -> ForeignSetup:
    """The detector's own model written as a setup: the material plugin's index, Green/Malitson substrate,
    the default camera of `flakehunter.optics` (Gaussian channels peaking at 605.1/530.1/464.7 nm, FWHM
    86.5/100.3/85.8 nm) under a 3100 K lamp, normal incidence, linear 8-bit OME-TIFF, oxide stated exactly.

    A control: a detector that scores poorly here has a bug, not a robustness problem.
    """
    fwhm = (86.5, 100.3, 85.8)
    return ForeignSetup(
        seed=seed, material=material, oxide_nm=oxide_nm, stated_oxide_nm=oxide_nm, pixel_size_um=pixel_size_um,
        camera=CameraChoice(sensor="gaussian", peaks_nm=(605.1, 530.1, 464.7), left_fwhm_nm=fwhm, right_fwhm_nm=fwhm,
                            qe_envelope=False),
        illumination_na=0.0, lamp="halogen", lamp_temperature_k=3100.0, white_balance="off", tone="linear",
        bit_depth=8, file_format="ome-tiff", psf_sigma_px=1.0, vignetting_a=0.12, black_level=0.0,
    )
