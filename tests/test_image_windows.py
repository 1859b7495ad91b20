"""Windows of large TIFFs: the same pixels as reading the whole file, read without decoding the rest."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from flakehunter.errors import InputError
from flakehunter.image_decode import ImageFormatError
from flakehunter.image_windows import open_windowed
from flakehunter.tiles import open_windows, read_image

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (300, 410, 3), dtype=np.uint8)
GREY16 = RNG.integers(0, 65536, (300, 410), dtype=np.uint16)
WINDOWS = [(0, 0, 300, 410), (5, 33, 77, 200), (299, 0, 300, 1), (100, 400, 250, 410), (64, 64, 128, 96)]

LAYOUTS = {
    "one uncompressed strip": (RGB, {"photometric": "rgb"}),
    "uncompressed strips": (GREY16, {"photometric": "minisblack", "rowsperstrip": 7}),
    "big-endian": (GREY16, {"photometric": "minisblack", "byteorder": ">"}),
    "zlib strips": (GREY16, {"photometric": "minisblack", "rowsperstrip": 16, "compression": "zlib"}),
    "tiles": (RGB, {"photometric": "rgb", "tile": (64, 32)}),
    "float tiles, predictor": (RNG.random((300, 410, 3)).astype(np.float32),
                               {"photometric": "rgb", "tile": (32, 32), "compression": "zlib", "predictor": True}),
    "JPEG tiles": (RGB, {"photometric": "rgb", "tile": (64, 64), "compression": "jpeg"}),
    "RGBA": (np.dstack([RGB, RGB[:, :, :1]]), {"photometric": "rgb", "extrasamples": ["unassalpha"]}),
    "z-stack": (np.stack([GREY16, GREY16 // 2]), {"photometric": "minisblack", "metadata": {"axes": "ZYX"}}),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_window_holds_the_pixels_of_the_whole_image(tmp_path: Path, layout: str) -> None:
    array, options = LAYOUTS[layout]
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, array, **options)
    whole, meta = read_image(path)
    source = open_windows(path)
    assert source is not None, "this layout is read in windows"
    with source:
        assert source.shape == whole.shape and source.dtype == whole.dtype
        for r0, c0, r1, c1 in WINDOWS:
            np.testing.assert_array_equal(source[r0:r1, c0:c1], whole[r0:r1, c0:c1])
        assert source.meta == meta
        small = source.reduced(4, band_rows=40)  # several bands, each a multiple of the factor
        expected = cv2.resize(whole[:300, :408], (102, 75), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(small, expected)


def test_cv2_strips_are_windowed_too(tmp_path: Path) -> None:
    path = tmp_path / "cv2.tif"
    cv2.imwrite(str(path), RGB[:, :, ::-1])  # OpenCV writes LZW, one row per strip
    with open_windowed(path) as source:  # type: ignore[union-attr]
        np.testing.assert_array_equal(source[10:290, 20:400], RGB[10:290, 20:400])


@pytest.mark.parametrize("layout", ["planar", "palette", "png"])
def test_layouts_windows_cannot_read_are_left_to_read_image(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "image.tif"
    if layout == "planar":
        tifffile.imwrite(path, np.moveaxis(RGB, -1, 0), photometric="rgb", planarconfig="separate")
    elif layout == "palette":
        colormap = np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1))
        tifffile.imwrite(path, RGB[:, :, 0], photometric="palette", colormap=colormap)
    else:
        path = tmp_path / "image.png"
        cv2.imwrite(str(path), RGB)
    assert open_windows(path) is None
    assert read_image(path)[0].shape[:2] == (300, 410)


def test_a_truncated_tiff_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "half.tif"
    tifffile.imwrite(path, RGB, photometric="rgb")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"half\.tif: not a readable image \(truncated TIFF"):
        open_windows(path)


def test_a_corrupt_strip_fails_the_window_that_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, GREY16, photometric="minisblack", rowsperstrip=16, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = int(tif.pages.first.dataoffsets[5])
    data = bytearray(path.read_bytes())
    data[offset : offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    with open_windowed(path) as source:  # type: ignore[union-attr]
        np.testing.assert_array_equal(source[0:64, 0:410], GREY16[0:64])  # strips 0-3 are fine
        with pytest.raises(ImageFormatError, match="rows 64-96"):
            source.read(64, 0, 96, 410)


def test_a_window_costs_memory_of_the_window_not_of_the_image(tmp_path: Path) -> None:
    image = np.tile(RGB, (8, 8, 1))  # 2400 x 3280 RGB, 23.6 MB
    path = tmp_path / "large.tif"
    tifffile.imwrite(path, image, photometric="rgb")  # one strip of 23.6 MB
    with open_windowed(path) as source:  # type: ignore[union-attr]
        tracemalloc.start()
        window = source[1000:1256, 2000:2256]
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    np.testing.assert_array_equal(window, image[1000:1256, 2000:2256])
    assert peak < 4_000_000, f"{peak} bytes traced for a 197 kB window of a 23.6 MB image"


@pytest.mark.parametrize("kind", ["png", "jpeg", "progressive jpeg", "tiff", "planar tiff"])
def test_the_size_is_read_from_the_header_before_decoding(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("image.png" if kind == "png" else "image.tif" if "tiff" in kind else "image.jpg")
    if kind == "png":
        cv2.imwrite(str(path), RGB)
    elif kind == "jpeg":
        cv2.imwrite(str(path), RGB, [cv2.IMWRITE_JPEG_QUALITY, 90])
    elif kind == "progressive jpeg":
        cv2.imwrite(str(path), RGB, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    elif kind == "tiff":
        tifffile.imwrite(path, RGB, photometric="rgb")
    else:
        tifffile.imwrite(path, np.moveaxis(RGB, -1, 0), photometric="rgb", planarconfig="separate")
    sizes: list[tuple[int, int]] = []
    assert read_image(path, sizes.append)[0].shape[:2] == (300, 410)
    assert sizes == [(300, 410)]
    path.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(path, sizes.append)
    assert sizes == [(300, 410)]


def test_an_image_over_the_limit_is_refused_before_it_is_decoded(tmp_path: Path, monkeypatch) -> None:
    import flakehunter.tiles
    from flakehunter.analysis.pipeline import PipelineSpec, build_pipeline
    from flakehunter.analysis.step import AnalysisInput, AnalysisStep
    from flakehunter.journal import Journal
    from flakehunter.registry import get_registry
    from flakehunter.run.candidate_writer import CandidateWriter

    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.zeros((1000, 1200, 3), np.uint8))

    def no_decoding(data: object, **_: object) -> object:
        raise AssertionError(f"{path} decoded")

    monkeypatch.setattr(flakehunter.tiles, "read_png_jpeg", no_decoding)  # a spy: the decoder must not run
    pipeline = build_pipeline(PipelineSpec(material="graphene", oxide_nm=90.0), get_registry(), tmp_path)
    with Journal(tmp_path / "journal.sqlite") as journal, CandidateWriter(tmp_path) as writer:
        step = AnalysisStep(pipeline, journal, writer, pixel_size_um=1.0, max_image_megapixels=1.0)
        [result] = step.analyse([AnalysisInput(str(path), path=path)])
    assert result.status == "failed" and "1200x1000 px (1 MP) is more than the 1 MP" in (result.error or "")
