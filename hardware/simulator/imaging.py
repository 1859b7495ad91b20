"""The foreign imaging chain: a frame as a `ForeignSetup`'s microscope and camera would record it.

Per frame (docs/foreign-setups.md):

1. per object, the reflectance spectrum of its stack from the setup's own index data (flake, oxide,
   silicon: literature source + perturbation), averaged over the illumination cone (finite NA), weighted
   by lamp × camera sensitivity (incl. crosstalk and IR cut): an absolute linear R, G, B signal, not the
   detector's normalised contrast;
2. ratio map composited by exact pixel coverage (the simulator camera's rasteriser), blurred with the
   setup's Gaussian PSF (in pixels, tile-to-tile jitter) and any defocus;
3. times the substrate signal at the local oxide, the vignetting and shading field, exposure and lamp
   flicker; shot and read noise in electrons, saturation at full well, black-level pedestal;
4. optional Bayer mosaic + bilinear demosaic; white balance (grey-world per frame, a fixed preset for
   another light, or none); colour-correction matrix; tone curve (linear, gamma, sRGB); quantisation to
   8/12/16 bit (12-bit in 16-bit words); optional JPEG round trip.

`ImagingOptions` is the simulator camera's ``imaging`` option: with it the camera renders through this
chain instead of its own (which assumes exactly the detector's model).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flakehunter.hardware.simulator.setup import ForeignSetup, IndexChoice, draw_setup
from flakehunter.hardware.simulator.spectra import (
    GRID_NM,
    Perturbation,
    blackbody_spectrum,
    gaussian_family_sensitivity,
    ir_cut,
    lamp_spectrum,
    material_index_function,
    measured_sensitivity,
    reflectance_na,
    silica,
    silicon,
)

if TYPE_CHECKING:
    from flakehunter.hardware.simulator.camera import SimulatorCamera
    from flakehunter.materials import Material

#: Angles sampled over the illumination cone (Gauss-Legendre); NA <= 0.35 needs few.
_ANGLES = 4


class ImagingOptions(BaseModel):
    """``camera.options.imaging``: render through a foreign setup, drawn from ``foreign_seed`` or given.

    The scan still decides the chip (material, oxide), the pixel size and the frame shape; the setup decides
    everything between the chip and the pixel values (its ``bit_depth`` replaces the camera's).
    """

    model_config = ConfigDict(extra="forbid")

    foreign_seed: int | None = Field(None, ge=0, description="draw a random setup (for the chip's material)")
    setup: ForeignSetup | None = Field(None, description="an explicit setup instead of a drawn one")
    jpeg_roundtrip: bool = Field(True, description="apply the setup's JPEG compression to each frame")

    @model_validator(mode="after")
    def _one(self) -> ImagingOptions:
        if (self.foreign_seed is None) == (self.setup is None):
            raise ValueError("give exactly one of foreign_seed or setup")
        return self

    def resolve(self, material: str) -> ForeignSetup:
        """The setup for a chip of ``material``."""
        if self.setup is not None:
            if self.setup.material != material:
                raise ValueError(f"imaging.setup.material is {self.setup.material!r} but the chip is {material!r}")
            return self.setup
        assert self.foreign_seed is not None
        return draw_setup(self.foreign_seed, materials=(material,))


class ForeignOptics:
    """A setup's optics: absolute linear R, G, B signals of layer stacks on its substrate."""

    def __init__(self, setup: ForeignSetup, material: Material) -> None:
        self.setup = setup
        self.material = material
        lam = GRID_NM

        def perturbation(choice: IndexChoice) -> Perturbation:
            return Perturbation(choice.n_scale, choice.k_scale, choice.shift_nm)

        self.n_si = perturbation(setup.silicon).apply(lambda w: silicon(setup.silicon.source, w), lam)
        self.n_sio2 = perturbation(setup.silica).apply(lambda w: silica(setup.silica.source, w), lam)
        flake = material_index_function(setup.material, setup.flake_index.source, material.index)
        flake_perturbation = perturbation(setup.flake_index)
        self._flake_index = functools.cache(lambda layers: flake_perturbation.apply(lambda w: flake(w, layers), lam))
        sensitivity = self.sensitivity()
        source = lamp_spectrum(setup.lamp, setup.lamp_temperature_k, lam)
        weights = sensitivity * source
        self.weights = weights / weights.sum(axis=1).max()  # a perfect mirror: brightest channel 1
        reference = (sensitivity * blackbody_spectrum(lam, setup.preset_temperature_k)).sum(axis=1)
        self.preset_gains = reference[1] / reference  # makes white grey under the preset's light, green = 1
        self._signal = functools.lru_cache(maxsize=4096)(self._signal_uncached)

    def sensitivity(self) -> np.ndarray:
        """(3, n) channel sensitivities after crosstalk and IR cut."""
        cam = self.setup.camera
        if cam.sensor == "gaussian":
            q = gaussian_family_sensitivity(cam.peaks_nm, cam.left_fwhm_nm, cam.right_fwhm_nm, cam.red_blue_lobe,
                                             GRID_NM, cam.qe_envelope)
        else:
            q = measured_sensitivity(cam.sensor, GRID_NM)
        q = np.asarray(cam.crosstalk, float) @ q
        return q * ir_cut(cam.ir_cut_nm, cam.ir_cut_width_nm, GRID_NM)

    def _signal_uncached(self, kind: str, amount: float, oxide_nm: float) -> np.ndarray:
        films: list[tuple[np.ndarray, float]] = []
        if kind == "flake":
            layers = int(amount)
            films = [(self._flake_index(layers), layers * self.material.layer_thickness_nm)]
        elif kind == "residue":
            films = [(np.full(GRID_NM.shape, self.setup.residue_index, complex), amount)]
        indices = [n for n, _ in films] + [self.n_sio2]
        thickness = [d for _, d in films] + [max(oxide_nm, 0.0)]
        r = reflectance_na(indices, thickness, self.n_si, GRID_NM, self.setup.illumination_na, _ANGLES)
        return self.weights @ r

    def substrate(self, oxide_nm: float) -> np.ndarray:
        """R, G, B signal of bare SiO2/Si (a perfect mirror's brightest channel is 1)."""
        return self._signal("bare", 0.0, round(float(oxide_nm), 1))

    def flake_ratio(self, layers: int, oxide_nm: float) -> np.ndarray:
        """Signal of a ``layers``-layer flake over that of the bare substrate, per channel."""
        ox = round(float(oxide_nm), 1)
        return self._signal("flake", float(layers), ox) / self._signal("bare", 0.0, ox)

    def residue_ratio(self, thickness_nm: float, oxide_nm: float) -> np.ndarray:
        ox = round(float(oxide_nm), 1)
        return self._signal("residue", round(float(thickness_nm), 2), ox) / self._signal("bare", 0.0, ox)


def apply_tone(linear: np.ndarray, tone: str, gamma: float) -> np.ndarray:
    """Encode linear values in [0, 1]: "linear", "gamma" (x^(1/gamma)) or "srgb" (IEC 61966-2-1)."""
    x = np.clip(linear, 0.0, 1.0)
    if tone == "gamma":
        return x ** np.float32(1.0 / gamma)
    if tone == "srgb":
        return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** np.float32(1 / 2.4) - 0.055).astype(np.float32)
    return x


def quantise(encoded: np.ndarray, bit_depth: int) -> np.ndarray:
    """Values in [0, 1] to integers of ``bit_depth`` bits (uint8, or uint16 words for 12 and 16 bit)."""
    full = 2**bit_depth - 1
    dn = np.rint(np.clip(encoded, 0.0, 1.0) * np.float32(full))
    return dn.astype(np.uint8 if bit_depth == 8 else np.uint16)


def jpeg_roundtrip(rgb8: np.ndarray, quality: int) -> np.ndarray:
    """What a JPEG file of ``quality`` (OpenCV/libjpeg, 4:2:0 chroma) decodes to."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def bayer_demosaic(raw: np.ndarray) -> np.ndarray:
    """Sample an RGGB Bayer mosaic from (H, W, 3) uint16 and demosaic it bilinearly (OpenCV)."""
    mosaic = np.empty(raw.shape[:2], raw.dtype)
    mosaic[0::2, 0::2] = raw[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = raw[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = raw[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = raw[1::2, 1::2, 2]
    return cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2RGB)  # OpenCV names RGGB "BG"


class ForeignRenderer:
    """Renders a `SimulatorCamera`'s frames through a foreign setup (see the module docstring)."""

    def __init__(self, setup: ForeignSetup, material: Material, *, jpeg: bool = True) -> None:
        self.setup = setup
        self.optics = ForeignOptics(setup, material)
        self.jpeg = jpeg and setup.file_format == "jpeg"
        self._fields: dict[tuple[int, int], np.ndarray] = {}

    def illumination(self, shape: tuple[int, int]) -> np.ndarray:
        """(rows, cols, 3) vignetting 1 - a r² - b r⁴ (shifted centre), colour tilt and smooth shading."""
        if shape in self._fields:
            return self._fields[shape]
        s = self.setup
        rows, cols = shape
        rng = np.random.default_rng([s.seed, 31])
        dr = (np.arange(rows, dtype=np.float32) - rows / 2 - s.vignetting_offset[0] * rows) / (rows / 2)
        dc = (np.arange(cols, dtype=np.float32) - cols / 2 - s.vignetting_offset[1] * cols) / (cols / 2)
        rho2 = (dr[:, None] ** 2 * rows**2 + dc[None, :] ** 2 * cols**2) / (rows**2 + cols**2)
        radial = 1.0 - s.vignetting_a * rho2 - s.vignetting_b * rho2**2
        shading = np.zeros((rows, cols), np.float32)
        for _ in range(4):  # a few low-order waves: a field that varies over a few hundred pixels
            fr, fc = rng.uniform(0.3, 1.5, size=2)
            phase = rng.uniform(0, 2 * math.pi, size=2)
            shading += np.cos(np.pi * fr * dr[:, None] + phase[0]) * np.cos(np.pi * fc * dc[None, :] + phase[1])
        shading *= np.float32(s.shading_rms / max(float(shading.std()), 1e-9))
        tilt = rng.uniform(-s.colour_tilt, s.colour_tilt, size=(3, 2))
        field = np.empty((rows, cols, 3), np.float32)
        for ch in range(3):
            field[..., ch] = radial * (1 + shading) * (1 + tilt[ch, 0] * dr[:, None] + tilt[ch, 1] * dc[None, :])
        self._fields[shape] = field
        return field

    def render(self, camera: SimulatorCamera, x_um: float, y_um: float, z_um: float, rng: np.random.Generator,
               ) -> np.ndarray:
        """The frame ``camera`` records with the stage at (x, y, z): uint8, or uint16 for 12/16 bit."""
        assert camera.layout is not None
        s, optics = self.setup, self.optics
        layout = camera.layout
        shape = camera.shape
        p = camera.transform.pixel_size_um
        centre = (x_um, y_um)

        o = camera.options
        defocus_um = abs(z_um - float(layout.focus_z_um_at(x_um, y_um)))
        sigma_px = s.psf_sigma_px * (1.0 + s.psf_jitter * rng.uniform(-1.0, 1.0))
        sigma_px = math.hypot(sigma_px, o.defocus_blur_per_um * o.numerical_aperture * defocus_um / p)
        reach_um = (4 * sigma_px + 10) * p
        xmin, ymin, xmax, ymax = camera.transform.footprint(centre, shape).bounds
        view = layout.query(xmin - reach_um, ymin - reach_um, xmax + reach_um, ymax + reach_um)

        oxide = float(layout.oxide_nm_at(x_um, y_um))
        ratio = np.ones((*shape, 3), np.float32)
        for scratch in view.scratches:
            rgb = optics.substrate(oxide - scratch.depth_nm) / optics.substrate(oxide)
            camera._composite(ratio, scratch.polygon, rgb, centre)
        for residue in view.residue:
            camera._composite(ratio, residue.polygon, optics.residue_ratio(residue.thickness_nm, oxide), centre)
        for flake in view.flakes:
            camera._composite(ratio, flake.polygon, optics.flake_ratio(flake.layers, oxide), centre)
        for dust in view.dust:
            camera._composite_dust(ratio, dust, centre)
        if sigma_px > 0.3:
            ratio = cv2.GaussianBlur(ratio, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_REFLECT)

        # Raw exposure: the substrate's brightest channel at the chip centre sits at `exposure` of full scale.
        substrate = optics.substrate(oxide)
        gain = s.exposure / float(optics.substrate(layout.oxide_nm).max())
        gain *= 1.0 + s.flicker * float(rng.standard_normal())
        signal = ratio * self.illumination(shape) * (substrate * gain).astype(np.float32)

        electrons = signal * np.float32(s.full_well_e)
        noise = np.sqrt(np.maximum(electrons, 0) + np.float32(s.read_noise_e**2))
        electrons += noise * rng.standard_normal(electrons.shape, dtype=np.float32)
        raw = np.clip(electrons / np.float32(s.full_well_e), 0.0, 1.0) + np.float32(s.black_level)
        raw = np.clip(raw, 0.0, 1.0)
        if s.camera.bayer:
            raw16 = bayer_demosaic(np.rint(raw * 65535).astype(np.uint16))
            raw = raw16.astype(np.float32) / np.float32(65535)

        if s.white_balance == "grey-world":
            level = np.median(raw.reshape(-1, 3)[:: max(1, raw.size // 3 // 200_000)], axis=0)
            gains = level.max() / np.maximum(level, 1e-6)
        elif s.white_balance == "preset":
            gains = optics.preset_gains
        else:
            gains = np.ones(3)
        image = raw * gains.astype(np.float32)
        if s.camera.ccm is not None:
            image = image @ np.asarray(s.camera.ccm, np.float32).T
        frame = quantise(apply_tone(image, s.tone, s.gamma), s.bit_depth)
        if self.jpeg:
            frame = jpeg_roundtrip(frame, s.jpeg_quality)
        return frame
