"""A simulated RGB camera that renders the synthetic chip under the configured stage.

Image formation (see ../shared/reference/optics.md §2 and §6), per frame:

1. read the stage position (x, y, z) and find the chip objects under the field of view;
2. reflectance ratio ρ = 1 on bare substrate; each flake, residue blob and dust speck replaces ρ by
   its own ratio (thin-film RGB contrast + 1 at the local oxide thickness), weighted by its exact
   area coverage of each pixel (4x4 supersampled polygons);
3. blur with the objective's PSF and the defocus |z − focus(x, y)| of the tilted chip;
4. multiply by the substrate colour at the local oxide (white-balanced at the chip centre),
   the vignetting field 1 − a·r² − b·r⁴ with a shifted centre and a slight per-channel tilt,
   and a small frame-to-frame lamp flicker;
5. convert to electrons, add shot and read noise, quantise.

With ``imaging`` set (a foreign setup, `flakehunter.hardware.simulator.imaging`), steps 2-5 run through
that setup's own index data, camera response, lamp, white balance, tone curve, bit depth and JPEG instead
(docs/foreign-setups.md); without it, frames are exactly what they always were.

Every frame is deterministic for (seed, stage position), so a resumed scan re-renders a tile
bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from functools import cached_property
from typing import Literal

import cv2
import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry.base import BaseGeometry

from flakehunter.config import ConfigFile
from flakehunter.devices import DeviceContext, Stage
from flakehunter.errors import HardwareError, InputError
from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.chip import ChipLayout, ChipSpec, SimDust
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.hardware.simulator.imaging import ForeignRenderer, ImagingOptions
from flakehunter.materials import Material
from flakehunter.optics import CameraResponse

SUPERSAMPLE = 4
RESIDUE_INDEX = 1.49  # tape / polymer residue film (optics.md §1.8)
PSF_WAVELENGTH_UM = 0.55


class SimulatorCameraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shape: tuple[int, int] = Field((1640, 2432), description="Frame (rows, cols)")
    bit_depth: Literal[8, 12, 16] = 8
    exposure_ms: float = Field(20.0, gt=0)
    signal_level: float = Field(0.55, gt=0, lt=1, description="Substrate at the centre, fraction of full scale")
    full_well_e: float = Field(10700.0, gt=0)
    read_noise_e: float = Field(6.0, ge=0)
    flicker: float = Field(0.005, ge=0, description="RMS frame-to-frame lamp gain variation")
    numerical_aperture: float = Field(0.15, gt=0, lt=1)
    defocus_blur_per_um: float = Field(0.5, ge=0, description="Blur sigma (µm) per µm of defocus, times NA")
    vignetting_a: float = Field(0.12, ge=0, lt=1, description="r² fall-off; r = 1 at the half-diagonal")
    vignetting_b: float = Field(0.03, gt=-0.5, lt=1, description="r⁴ fall-off")
    vignetting_offset: tuple[float, float] = Field(
        (0.03, -0.02), description="Optical centre shift (rows, cols) as a fraction of the frame"
    )
    colour_tilt: float = Field(0.01, ge=0, description="Per-channel shading tilt across the frame")
    lamp_temperature_k: float = Field(
        3100.0, ge=1500, le=10000, description="Colour temperature of the (blackbody) lamp the chip is imaged with"
    )
    pixel_size_um: float | None = Field(None, gt=0, description="True pixel size; default: optics.pixel_size_um")
    rotation_deg: float | None = Field(None, description="True camera rotation; default: optics.rotation_deg")
    flip_rows: bool | None = None
    flip_cols: bool | None = None
    chip: ChipSpec = ChipSpec()
    layout: ConfigFile | None = Field(None, description="A chip layout JSON to render instead of a random chip")
    seed: int | None = Field(None, description="Chip and noise seed; default: the scan's seed")
    imaging: ImagingOptions | None = Field(
        None, description="Render through a foreign setup ({foreign_seed: N} or {setup: {...}}); default: off"
    )


class SimulatorCamera:
    """The simulator's camera: renders what lies under ``context.stage``."""

    Options = SimulatorCameraOptions
    name = "simulator"

    def __init__(self, options: SimulatorCameraOptions, context: DeviceContext) -> None:
        if context.stage is None:
            raise InputError("the simulator camera needs a stage to look through")
        self.options = options
        self.stage: Stage = context.stage
        self.shape = (int(options.shape[0]), int(options.shape[1]))
        t = context.transform
        self.transform = PixelTransform(
            options.pixel_size_um or t.pixel_size_um,
            t.rotation_deg if options.rotation_deg is None else options.rotation_deg,
            t.flip_rows if options.flip_rows is None else options.flip_rows,
            t.flip_cols if options.flip_cols is None else options.flip_cols,
        )
        self.seed = context.seed if options.seed is None else options.seed
        self.material_name = context.material
        self.nominal_oxide_nm = context.oxide_nm
        self.layout_path = context.resolve_path(options.layout) if options.layout else None
        self.exposure_ms = options.exposure_ms
        self._context = context
        self.layout: ChipLayout | None = None
        self.connected = False

    # -- device contract ------------------------------------------------------------------------
    def connect(self) -> None:
        """Build (or load) the chip; the expensive part, so it is not done for a dry run."""
        if self.layout is None:
            self.layout = self._make_layout()
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def frame_time_s(self) -> float:
        return self.options.exposure_ms / 1000.0 + 0.03  # exposure plus readout and transfer

    def snap(self) -> np.ndarray:
        if not self.connected or self.layout is None:
            raise HardwareError("simulator camera: snap() before connect()")
        x, y, z = self.stage.position_um()
        return self.render(x, y, z)

    # -- rendering --------------------------------------------------------------------------------
    def _make_layout(self) -> ChipLayout:
        from flakehunter.registry import get_registry

        if self.layout_path is not None:
            if not self.layout_path.exists():
                raise InputError(f"camera.options.layout: {self.layout_path} does not exist")
            return ChipLayout.load_json(self.layout_path)
        material = get_registry().material(self.material_name)
        return generate_chip(self.options.chip, material, self.nominal_oxide_nm, self.seed)

    @cached_property
    def _material(self) -> Material:
        from flakehunter.registry import get_registry

        assert self.layout is not None
        return get_registry().material(self.layout.material)

    @cached_property
    def _vignetting(self) -> np.ndarray:
        """(rows, cols, 3) illumination field: radial fall-off plus a slight per-channel tilt."""
        o = self.options
        rows, cols = self.shape
        dr = np.arange(rows, dtype=np.float32) - rows / 2 - o.vignetting_offset[0] * rows
        dc = np.arange(cols, dtype=np.float32) - cols / 2 - o.vignetting_offset[1] * cols
        rho2 = (dr[:, None] ** 2 + dc[None, :] ** 2) / ((rows / 2) ** 2 + (cols / 2) ** 2)  # 1 at a corner
        radial = 1.0 - o.vignetting_a * rho2 - o.vignetting_b * rho2**2
        tilt = np.random.default_rng([self.seed, 7]).uniform(-o.colour_tilt, o.colour_tilt, size=(3, 2))
        field = np.empty((rows, cols, 3), np.float32)
        for ch in range(3):
            shading = 1 + tilt[ch, 0] * dr[:, None] / (rows / 2) + tilt[ch, 1] * dc[None, :] / (cols / 2)
            field[..., ch] = radial * shading
        return field

    @cached_property
    def _spectral(self) -> CameraResponse:
        """The camera's channels under this lamp (the default camera unless the lamp differs)."""
        from flakehunter.optics import DEFAULT_CAMERA, DEFAULT_SOURCE_TEMPERATURE_K, camera_with_lamp

        if self.options.lamp_temperature_k == DEFAULT_SOURCE_TEMPERATURE_K:
            return DEFAULT_CAMERA
        return camera_with_lamp(self.options.lamp_temperature_k)

    def _substrate_rgb(self, oxide_nm: float) -> np.ndarray:
        from flakehunter.optics import substrate_rgb

        return np.asarray(substrate_rgb(round(oxide_nm, 2), self._spectral), float)

    @cached_property
    def _foreign(self) -> ForeignRenderer | None:
        imaging = self.options.imaging
        if imaging is None:
            return None
        assert self.layout is not None
        try:
            setup = imaging.resolve(self.layout.material)
        except ValueError as exc:
            raise InputError(f"camera.options.imaging: {exc}") from None
        return ForeignRenderer(setup, self._material, jpeg=imaging.jpeg_roundtrip)

    def render(self, x_um: float, y_um: float, z_um: float) -> np.ndarray:
        """The frame the camera sees with the stage at (x_um, y_um, z_um)."""
        from flakehunter.optics import film_contrast, layer_contrast

        assert self.layout is not None
        if self._foreign is not None:
            rng = np.random.default_rng(self._frame_seed(x_um, y_um, z_um))
            return self._foreign.render(self, x_um, y_um, z_um, rng)
        o = self.options
        layout = self.layout
        rows, cols = self.shape
        p = self.transform.pixel_size_um
        rng = np.random.default_rng(self._frame_seed(x_um, y_um, z_um))

        defocus_um = abs(z_um - float(layout.focus_z_um_at(x_um, y_um)))
        psf_um = 0.21 * PSF_WAVELENGTH_UM / o.numerical_aperture
        blur_um = math.hypot(psf_um, o.defocus_blur_per_um * o.numerical_aperture * defocus_um)
        reach_um = 4 * blur_um + 10 * p
        xmin, ymin, xmax, ymax = self.transform.footprint((x_um, y_um), self.shape).bounds
        view = layout.query(xmin - reach_um, ymin - reach_um, xmax + reach_um, ymax + reach_um)

        oxide = float(layout.oxide_nm_at(x_um, y_um))
        camera = self._spectral
        ratio = np.ones((rows, cols, 3), np.float32)
        for scratch in view.scratches:
            rgb = self._substrate_rgb(oxide - scratch.depth_nm) / self._substrate_rgb(oxide)
            self._composite(ratio, scratch.polygon, rgb, (x_um, y_um))
        for residue in view.residue:
            rgb = 1.0 + film_contrast(RESIDUE_INDEX, residue.thickness_nm, oxide, camera)
            self._composite(ratio, residue.polygon, rgb, (x_um, y_um))
        for flake in view.flakes:
            rgb = 1.0 + layer_contrast(self._material, flake.layers, oxide, camera)
            self._composite(ratio, flake.polygon, rgb, (x_um, y_um))
        for dust in view.dust:
            self._composite_dust(ratio, dust, (x_um, y_um))

        sigma_px = blur_um / p
        if sigma_px > 0.3:
            ratio = cv2.GaussianBlur(ratio, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_REFLECT)

        white = self._substrate_rgb(layout.oxide_nm)  # white balance set once, on the chip centre
        colour = (self._substrate_rgb(oxide) / white).astype(np.float32)
        gain = np.float32(o.signal_level * (1.0 + o.flicker * rng.standard_normal()))
        signal = ratio * self._vignetting * (colour * gain)

        electrons = signal * np.float32(o.full_well_e)
        noise_sigma = np.sqrt(np.maximum(electrons, 0) + np.float32(o.read_noise_e**2))
        electrons += noise_sigma * rng.standard_normal(electrons.shape, dtype=np.float32)
        full_scale = 2**o.bit_depth - 1
        dn = np.rint(electrons * np.float32(full_scale / o.full_well_e))
        np.clip(dn, 0, full_scale, out=dn)
        return dn.astype(np.uint8 if o.bit_depth == 8 else np.uint16)

    def label_image(self, x_um: float, y_um: float) -> np.ndarray:
        """The truth as a label image of the frame at (x_um, y_um): pixel = layer count of the flake
        covering at least half of it, 0 substrate, 255 for flakes of 255 layers or more (DESIGN.md §4)."""
        assert self.layout is not None, "connect() first"
        rows, cols = self.shape
        labels = np.zeros((rows, cols), np.uint8)
        xmin, ymin, xmax, ymax = self.transform.footprint((x_um, y_um), self.shape).bounds
        for flake in self.layout.query(xmin, ymin, xmax, ymax).flakes:
            polygons = getattr(flake.polygon, "geoms", [flake.polygon])
            rings = [
                (
                    self._to_pixels(np.asarray(poly.exterior.coords), (x_um, y_um)),
                    [self._to_pixels(np.asarray(h.coords), (x_um, y_um)) for h in poly.interiors],
                )
                for poly in polygons
            ]
            coverage, r0, c0 = self._coverage(np.concatenate([ext for ext, _ in rings]), rings)
            if coverage is None:
                continue
            h, w = coverage.shape
            labels[r0 : r0 + h, c0 : c0 + w][coverage >= 0.5] = min(flake.layers, 255)
        return labels

    def _frame_seed(self, x_um: float, y_um: float, z_um: float) -> list[int]:
        key = f"{self.seed}:{x_um:.3f}:{y_um:.3f}:{z_um:.3f}".encode()
        return [int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")]

    def _to_pixels(self, xy: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
        """(N, 2) stage µm -> (N, 2) continuous (col, row) pixel coordinates."""
        row, col = self.transform.stage_to_pixel(xy[:, 0], xy[:, 1], centre, self.shape)
        return np.column_stack([col, row])

    def _composite(
        self, ratio: np.ndarray, geometry: BaseGeometry, rgb: np.ndarray, centre: tuple[float, float]
    ) -> None:
        """Blend ``rgb`` into ``ratio`` over the pixels ``geometry`` covers, by exact coverage."""
        polygons = getattr(geometry, "geoms", [geometry])
        rings_px = []
        for poly in polygons:
            rings_px.append(
                (
                    self._to_pixels(np.asarray(poly.exterior.coords), centre),
                    [self._to_pixels(np.asarray(h.coords), centre) for h in poly.interiors],
                )
            )
        allpts = np.concatenate([ext for ext, _ in rings_px])
        coverage, r0, c0 = self._coverage(allpts, rings_px)
        if coverage is None:
            return
        h, w = coverage.shape
        a = coverage[..., None]
        region = ratio[r0 : r0 + h, c0 : c0 + w]
        region *= 1.0 - a
        region += a * rgb.astype(np.float32)

    def _coverage(
        self, allpts: np.ndarray, rings_px: list[tuple[np.ndarray, list[np.ndarray]]]
    ) -> tuple[np.ndarray | None, int, int]:
        rows, cols = self.shape
        c0 = max(math.floor(allpts[:, 0].min()) - 1, 0)
        r0 = max(math.floor(allpts[:, 1].min()) - 1, 0)
        c1 = min(math.ceil(allpts[:, 0].max()) + 2, cols)
        r1 = min(math.ceil(allpts[:, 1].max()) + 2, rows)
        if c1 <= c0 or r1 <= r0:
            return None, 0, 0
        ss = SUPERSAMPLE
        canvas = np.zeros(((r1 - r0) * ss, (c1 - c0) * ss), np.uint8)

        def fixed(ring: np.ndarray) -> np.ndarray:
            # Canvas coordinates with 4 fractional bits: pixel centres sit at integer pixel coords.
            local = (ring - np.array([c0, r0]) + 0.5) * ss - 0.5
            return np.rint(local * 16).astype(np.int32)

        cv2.fillPoly(canvas, [fixed(ext) for ext, _ in rings_px], 1, lineType=cv2.LINE_8, shift=4)
        holes = [fixed(h) for _, hs in rings_px for h in hs]
        if holes:
            cv2.fillPoly(canvas, holes, 0, lineType=cv2.LINE_8, shift=4)
        coverage = canvas.reshape(r1 - r0, ss, c1 - c0, ss).mean(axis=(1, 3), dtype=np.float32)
        return coverage, r0, c0

    def _composite_dust(self, ratio: np.ndarray, dust: SimDust, centre: tuple[float, float]) -> None:
        point = shapely.Point(dust.x_um, dust.y_um)
        if dust.halo:
            # A faint bright diffraction ring around the speck.
            ring = point.buffer(2.5 * dust.radius_um, quad_segs=8).difference(point.buffer(1.5 * dust.radius_um))
            self._composite(ratio, ring, np.full(3, 1.0 + 0.25 * abs(1.0 - dust.gain), np.float32), centre)
        self._composite(ratio, point.buffer(dust.radius_um, quad_segs=8), np.full(3, dust.gain, np.float32), centre)
