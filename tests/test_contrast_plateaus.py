"""Plateaus without a model (plugins/contrast/plateaus.py) and focus relative to the run (focus.py).

The images are painted here: polygons of known contrast on a vignetted, noisy background, blurred like a
low-NA objective, optionally through a camera tone curve. `render_flakes` is shared with the ladder tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from flakehunter.plugins.contrast.background import BackgroundModel
from flakehunter.plugins.contrast.plateaus import RejectRules, find_plateaus, reject_reason

SUPERSAMPLE = 4


@dataclass(frozen=True)
class Painted:
    """One painted object: its outline in (row, col) pixels and its linear contrast per channel."""

    outline: np.ndarray
    contrast: tuple[float, float, float]
    layers: int = 0  # 0: not a flake (residue, dust, scratch)

    def contains(self, row: float, col: float) -> bool:
        return cv2.pointPolygonTest(self.outline[:, ::-1].astype(np.float32), (col, row), False) >= 0


def polygon(centre: tuple[float, float], radius: float, sides: int = 6, angle_deg: float = 10.0,
            aspect: float = 1.0) -> np.ndarray:
    """Corners (row, col) of a regular polygon, stretched by ``aspect`` along the rows."""
    t = np.radians(angle_deg) + 2 * np.pi * np.arange(sides) / sides
    return np.stack([centre[0] + aspect * radius * np.sin(t), centre[1] + radius * np.cos(t)], axis=1)


def render_flakes(
    shape: tuple[int, int],
    objects: Sequence[Painted],
    *,
    substrate: tuple[float, float, float] = (150.0, 125.0, 160.0),
    noise: float = 0.006,
    blur_px: float = 1.0,
    vignetting: float = 0.15,
    gamma: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """An 8-bit RGB image of ``objects`` (painted in order, later ones on top) on a bare substrate.

    Linear signal: substrate × vignetting × (1 + contrast), Gaussian blur, shot-like noise (relative
    ``noise``), then the tone curve (x / 255)^(1/gamma) · 255 and rounding.
    """
    rows, cols = shape
    ss = SUPERSAMPLE
    ratio = np.ones((rows * ss, cols * ss, 3), np.float32)
    for obj in objects:
        mask = np.zeros(ratio.shape[:2], np.uint8)
        pts = np.round((obj.outline[:, ::-1] + 0.5) * ss - 0.5).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
        ratio[mask > 0] = 1.0 + np.asarray(obj.contrast, np.float32)
    ratio = cv2.resize(ratio, (cols, rows), interpolation=cv2.INTER_AREA)
    if blur_px > 0:
        ratio = cv2.GaussianBlur(ratio, (0, 0), blur_px)
    r, c = np.mgrid[0:rows, 0:cols]
    radius2 = ((r - rows / 2) ** 2 + (c - cols / 2) ** 2) / ((rows / 2) ** 2 + (cols / 2) ** 2)
    signal = ratio * (1.0 - vignetting * radius2)[..., None] * np.asarray(substrate, np.float32)
    rng = np.random.default_rng(seed)
    signal = signal * (1.0 + rng.normal(0.0, noise, signal.shape))
    encoded = 255.0 * np.clip(signal / 255.0, 0, 1) ** (1.0 / gamma)
    return np.clip(np.round(encoded), 0, 255).astype(np.uint8)


def contrast_of(image: np.ndarray) -> np.ndarray:
    img = image.astype(np.float32)
    return img / BackgroundModel().background(img) - 1.0


def test_plateaus_of_known_regions() -> None:
    """Three flakes (one 1L with a 2L terrace on it) come back as four plateaus with their contrast and area."""
    c1, c2, c3 = (-0.12, -0.13, -0.09), (-0.23, -0.25, -0.17), (-0.33, -0.35, -0.24)
    big = Painted(polygon((120, 150), 60), c1, 1)
    terrace = Painted(polygon((120, 170), 22, sides=3, angle_deg=30), c2, 2)
    lone = Painted(polygon((300, 420), 35, sides=4, angle_deg=20), c3, 3)
    small = Painted(polygon((300, 150), 12), c2, 2)
    image = render_flakes((400, 600), [big, terrace, lone, small], seed=1)
    found = find_plateaus(contrast_of(image), min_area_px=20)
    assert found.noise.max() < 0.01  # the substrate's noise, not the flakes', sets the scale

    painted = [big, terrace, lone, small]

    def plateau_at(obj: Painted):
        """The plateaus whose centre lies on ``obj`` and on nothing painted over it."""
        on_top = painted[[id(o) for o in painted].index(id(obj)) + 1 :]
        hits = [p for p in found.plateaus if obj.contains(*p.centroid) and not any(o.contains(*p.centroid)
                                                                                   for o in on_top)]
        assert len(hits) == 1, (obj, [(p.centroid, p.contrast) for p in hits])
        return hits[0]

    for obj in painted:
        p = plateau_at(obj)
        assert np.allclose(p.contrast, obj.contrast, atol=0.012), (p.contrast, obj.contrast)
        assert reject_reason(p, RejectRules(min_area_px=20)) is None
    # Areas: the half-height contour of a lone flake is its outline.
    expected = cv2.contourArea(lone.outline.astype(np.float32))
    assert plateau_at(lone).area_px == pytest.approx(expected, rel=0.1)
    # The 1L plateau is the part of the hexagon outside the terrace: smaller than the hexagon.
    assert plateau_at(big).area_px < cv2.contourArea(big.outline.astype(np.float32))
    assert all(p.sharpness > 0.15 for p in (plateau_at(big), plateau_at(lone)))


def test_scratches_residue_and_specks_are_rejected_by_shape_and_texture() -> None:
    """A scratch (long and narrow), a speck (too small) and a blotchy residue patch are not flakes; a flake
    of the same contrast as the scratch is one."""
    scratch = Painted(np.array([[50, 40], [53, 40], [200, 560], [197, 560]], float), (-0.15, -0.15, -0.1))
    speck = Painted(polygon((330, 80), 1.8), (-0.3, -0.3, -0.3))
    flake = Painted(polygon((300, 300), 30), (-0.15, -0.15, -0.1), 1)
    image = render_flakes((400, 600), [scratch, speck, flake], seed=2)
    # Residue: a patch whose thickness (contrast) varies from pixel to pixel.
    rng = np.random.default_rng(3)
    patch = image[250:330, 460:560].astype(np.float32)
    blotches = cv2.GaussianBlur(rng.normal(0, 1, patch.shape[:2]).astype(np.float32), (0, 0), 1.5)
    image[250:330, 460:560] = np.clip(patch * (0.85 + 0.08 * blotches)[..., None], 0, 255).astype(np.uint8)
    found = find_plateaus(contrast_of(image), min_area_px=20)
    rules = RejectRules(min_area_px=20)
    reasons = {}
    for p in found.plateaus:
        for name, obj in (("scratch", scratch), ("speck", speck), ("flake", flake)):
            if obj.contains(*p.centroid):
                reasons.setdefault(name, []).append(reject_reason(p, rules))
        if 250 <= p.centroid[0] < 330 and 460 <= p.centroid[1] < 560:
            reasons.setdefault("residue", []).append(reject_reason(p, rules))
    assert reasons["flake"] == [None]
    assert reasons.get("scratch") and all(r in ("line", "narrow") for r in reasons["scratch"]), reasons
    assert all(r is not None for r in reasons.get("speck", [])), reasons
    assert all(r is not None for r in reasons.get("residue", [])), reasons


def test_a_clipped_flake_is_not_measured() -> None:
    """A flake bright enough to clip the camera says nothing about its thickness."""
    from flakehunter.plugins.contrast.saturation import saturation_mask

    bright = Painted(polygon((200, 300), 40), (1.2, 1.0, 0.9))
    image = render_flakes((400, 600), [bright], seed=4)
    found = find_plateaus(contrast_of(image), min_area_px=20, saturated=saturation_mask(image))
    hits = [p for p in found.plateaus if bright.contains(*p.centroid)]
    assert hits and all(reject_reason(p, RejectRules(min_area_px=20)) == "saturated" for p in hits)


def _detector():
    from flakehunter.analysis.detector import DetectionContext
    from flakehunter.plugins.contrast.detector import ContrastDetector, ContrastOptions
    from flakehunter.registry import get_registry

    context = DetectionContext(material=get_registry().material("graphene"), oxide_nm=90.0, pixel_size_um=1.0)
    return ContrastDetector(ContrastOptions(), context)


def focus_scene(seed: int) -> list[Painted]:
    """A few thin and thick flakes at seed-dependent places."""
    rng = np.random.default_rng(seed)
    objects = []
    for k, c in enumerate([(-0.12, -0.13, -0.09), (-0.23, -0.25, -0.17), (0.6, 0.7, 0.2), (0.4, 0.9, 0.5)]):
        centre = (70 + 260 * (k // 2) + rng.uniform(-20, 20), 120 + 300 * (k % 2) + rng.uniform(-30, 30))
        objects.append(Painted(polygon(centre, rng.uniform(25, 45), sides=int(rng.integers(3, 7)),
                                       angle_deg=rng.uniform(0, 60)), c, k + 1 if k < 2 else 0))
    return objects


def test_relative_focus_flags_a_blurred_copy_and_not_the_sharp_images() -> None:
    """Sharp images of one run are judged against each other; an image blurred by 4 px is out of focus, is
    flagged and warned about, and still reports its flakes. Sharpness is relative: a run whose every image
    is a little soft (PSF 1.8 px) is not flagged."""
    from flakehunter.image_metadata import ImageMeta

    for psf in (1.0, 1.8):
        detector = _detector()
        sharp = [render_flakes((400, 600), focus_scene(s), blur_px=psf, seed=s) for s in range(5)]
        metas = [ImageMeta(pixel_size_um=1.0) for _ in sharp]
        detector.calibrate(list(zip(sharp, metas, strict=True)))
        for image, meta in zip(sharp, metas, strict=True):
            detector.detect(image, meta, [])
            assert "out_of_focus" not in meta.flags and not meta.warnings, (psf, meta.warnings)
    soft_image = render_flakes((400, 600), focus_scene(9), blur_px=4.0, seed=9)
    soft_meta = ImageMeta(pixel_size_um=1.0)
    found = detector.detect(soft_image, soft_meta, [])
    assert "out_of_focus" in soft_meta.flags
    assert any("out of focus" in w for w in soft_meta.warnings)
    assert found, "a soft image still reports its plateaus"
    assert all(d.extra.get("soft") for d in found)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fast_median_is_numpys_bit_for_bit(dtype) -> None:
    """A region's medians come from a sort: the same values as np.median, odd and even counts, ties included."""
    from flakehunter.plugins.contrast.plateaus import median0

    rng = np.random.default_rng(11)
    for trial in range(2000):
        values = rng.normal(size=(int(rng.integers(1, 450)), int(rng.integers(1, 4)))) * rng.uniform(1e-3, 1.0)
        if trial % 4 == 0:
            values = np.round(values, 2)  # ties
        values = values.astype(dtype)
        expected, got = np.median(values, axis=0), median0(values)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), trial
        assert median0(values[:, 0]) == np.median(values[:, 0])


def test_regions_smaller_than_the_smallest_flake_are_not_reported() -> None:
    """A speck below ``min_area_px`` is not reported (it is with a smaller limit); a flake above it is."""
    speck = Painted(polygon((100, 100), 2.5, sides=12), (-0.3, -0.3, -0.3))
    flake = Painted(polygon((100, 250), 20), (-0.12, -0.13, -0.09), 1)
    found = find_plateaus(contrast_of(render_flakes((200, 400), [speck, flake], seed=2)), min_area_px=60)
    assert any(flake.contains(*p.centroid) for p in found.plateaus)
    assert not any(abs(p.centroid[0] - 100) < 8 and abs(p.centroid[1] - 100) < 8 for p in found.plateaus)
    assert all(p.area_px >= 60 for p in found.plateaus)
    smaller = find_plateaus(contrast_of(render_flakes((200, 400), [speck, flake], seed=2)), min_area_px=12)
    assert any(abs(p.centroid[0] - 100) < 8 and abs(p.centroid[1] - 100) < 8 for p in smaller.plateaus)
