"""Shortcuts taken for speed give the very values of the computations they replace (issue 15): block means
from integer sums, clipped pixels without splitting the channels, the contrast image in place, a background
fit remembered, the report's sort-based median, and the ladder's model table over all oxides at once; and BLAS
on one thread while the detector works."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flakehunter.optics import material_films, rgb_contrast
from flakehunter.plugins.contrast.background import BackgroundModel, block_means
from flakehunter.plugins.contrast.blas import one_blas_thread
from flakehunter.plugins.contrast.detector import _contrast
from flakehunter.plugins.contrast.ladder import OXIDE_RANGE_NM, OXIDE_STEP_NM, _model_table
from flakehunter.plugins.contrast.saturation import saturation_mask
from flakehunter.registry import get_registry
from flakehunter.report.mosaic import _median_of_stack


def _area_resize_means(image: np.ndarray, block_px: int) -> np.ndarray:
    rows, cols = image.shape[:2]
    size = (max(cols // block_px, 1), max(rows // block_px, 1))
    out = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return out.reshape(size[1], size[0], -1)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def _vignetted(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    """A tile-like image: a vignetted level, noise, a clipped bright patch and a crushed dark one."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    rows, cols = shape[:2]
    r, c = np.mgrid[:rows, :cols]
    level = 0.6 * top * (1 - 0.3 * (((r - rows / 2) / rows) ** 2 + ((c - cols / 2) / cols) ** 2))
    channels = shape[2:] or (1,)
    image = level[..., None] * np.ones(channels) + rng.normal(0, 0.01 * top, (rows, cols, *channels))
    image[rows // 4 : rows // 3, cols // 4 : cols // 3] = top
    image[rows // 2 : rows // 2 + 20, cols // 2 : cols // 2 + 30, 0] = 0
    return np.clip(image, 0, top).astype(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(96, 128, 3), (96, 128, 1), (96, 128), (100, 130, 3)])
@pytest.mark.parametrize("block_px", [8, 16, 32])
def test_block_means_equal_the_area_resize_bit_for_bit(dtype: type, shape: tuple[int, ...], block_px: int) -> None:
    image = _vignetted(shape, dtype)
    assert np.array_equal(_bits(block_means(image, block_px)), _bits(_area_resize_means(image, block_px)))


def test_block_means_of_full_scale_16_bit_blocks_are_exact() -> None:
    image = np.full((32, 48, 3), 65535, np.uint16)
    assert np.array_equal(block_means(image), _area_resize_means(image, 16))
    assert float(block_means(image).max()) == 65535.0


def _mask_by_planes(image: np.ndarray) -> np.ndarray | None:
    """saturation_mask as first written: each channel compared on its own, the masks ORed."""
    top, bottom = int(image.max()), int(image.min())
    if top <= 0:
        return None
    planes = cv2.split(image) if image.ndim == 3 else [image]
    enough = max(20, image.shape[0] * image.shape[1] // 20000)
    clipped = None
    for level, cmp in ((top, cv2.CMP_GE), (bottom, cv2.CMP_LE)):
        if cmp == cv2.CMP_LE and bottom > 0.03 * top:
            continue
        mask = cv2.compare(planes[0], level, cmp)
        for plane in planes[1:]:
            mask = cv2.bitwise_or(mask, cv2.compare(plane, level, cmp))
        if cv2.countNonZero(mask) >= enough:
            clipped = mask if clipped is None else cv2.bitwise_or(clipped, mask)
    return None if clipped is None else clipped > 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [None, 1, 2, 3])
def test_saturation_mask_equals_the_per_channel_masks(dtype: type, channels: int | None) -> None:
    full = _vignetted((120, 160, 3), dtype)
    image = full[..., 0] if channels is None else np.ascontiguousarray(full[..., :channels])
    noise_only = np.random.default_rng(4).normal(100, 10, image.shape).astype(dtype)  # a few values at the top
    for case in (image, noise_only, image[::2, ::3]):
        expected, got = _mask_by_planes(case), saturation_mask(case)
        assert (expected is None) == (got is None)
        if expected is not None and got is not None:
            assert np.array_equal(expected, got)
    assert saturation_mask(image) is not None and saturation_mask(noise_only) is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("floor", [False, True])
def test_contrast_in_place_equals_divide_then_subtract(dtype: type, floor: bool) -> None:
    rng = np.random.default_rng(3)
    image = (rng.uniform(0, 200, (64, 96, 3))).astype(dtype)
    surface = rng.uniform(0.0005 if floor else 50.0, 150.0, (4, 6, 3)).astype(np.float32)
    background = cv2.resize(surface, (96, 64), interpolation=cv2.INTER_LINEAR).reshape(64, 96, 3)
    expected = image.astype(np.float32) / np.maximum(background, 1e-3) - 1.0
    assert np.array_equal(_bits(_contrast(image, surface)), _bits(expected.astype(np.float32)))


def test_a_remembered_background_fit_gives_the_same_surfaces_and_flat_field() -> None:
    images = [_vignetted((160, 224, 3), np.uint8, seed) for seed in range(6)]
    fresh, twice = BackgroundModel(), BackgroundModel()
    first = [fresh.surface(i.shape, block_means(i)) for i in images]
    for i in images:
        twice.surface(i.shape, block_means(i))
    twice.load_state(BackgroundModel().state())  # put back, as calibration does, and relearn in the same order
    again = [twice.surface(i.shape, block_means(i)) for i in images]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(_bits(a), _bits(b))
    assert np.array_equal(fresh.state()["sum_log"], twice.state()["sum_log"])


def test_a_caller_changing_its_surface_leaves_the_remembered_fit_alone() -> None:
    image = _vignetted((160, 224, 3), np.uint8)
    model = BackgroundModel()
    model.surface(image.shape, block_means(image), learn=False)[:] = 0
    remembered = model.surface(image.shape, block_means(image), learn=False)
    assert np.array_equal(_bits(remembered), _bits(BackgroundModel().surface(image.shape, block_means(image))))


def test_blas_runs_on_one_thread_inside_and_as_before_after() -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    with one_blas_thread():
        assert set(blas_threads()) <= {1}
    assert blas_threads() == before


@pytest.mark.parametrize("count", [3, 4, 16, 17])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_of_stack_equals_np_median(count: int, dtype: type) -> None:
    rng = np.random.default_rng(count)
    stack = rng.uniform(0, 255, (count, 20, 30, 3)).astype(dtype)
    stack[:, 0, 0] = 7.0  # ties
    assert np.array_equal(_bits(_median_of_stack(stack)), _bits(np.median(stack, axis=0)))
    stack[1, 2, 3, 1] = np.nan
    assert np.array_equal(_median_of_stack(stack), np.median(stack, axis=0), equal_nan=True)


@pytest.mark.parametrize(("material", "scale"), [("graphene", 1.0), ("wse2", 0.7), ("mos2", 1.4)])
def test_the_model_table_over_all_oxides_at_once_equals_one_oxide_at_a_time(material: str, scale: float) -> None:
    """The ladder's table, computed for every oxide in one broadcast, is each oxide's `rgb_contrast` to
    rounding (a few units in the last place of a contrast near 1)."""
    mat = get_registry().material(material)
    oxides, table = _model_table(mat, 3, 4, scale)
    assert oxides[0] == OXIDE_RANGE_NM[0] and oxides[-1] == OXIDE_RANGE_NM[1] and oxides[1] - oxides[0] == OXIDE_STEP_NM
    one_at_a_time = np.array([
        [rgb_contrast([(index, scale * nm) for index, nm in material_films(mat, n)], float(d)) for n in range(1, 5)]
        for d in oxides
    ])
    assert table.shape == one_at_a_time.shape == (len(oxides), 4, 3)
    np.testing.assert_allclose(table, one_at_a_time, rtol=0, atol=1e-13)
    assert np.abs(table).max() > 0.05, "a table of contrasts, not of zeros"
