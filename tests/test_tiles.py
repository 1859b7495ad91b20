"""Tests of flakehunter.tiles: OME-TIFF tiles with stage metadata, foreign files, atomic writes."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from flakehunter import tiles
from flakehunter.errors import InputError, RuntimeFailure
from flakehunter.tiles import (
    IMAGE_SUFFIXES,
    ImageMeta,
    is_temp_file,
    iter_image_files,
    read_image,
    tile_filename,
    write_tile,
)

MM_TAG = 51123  # Micro-Manager's per-image JSON


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def rgb8(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def mono16(h: int = 40, w: int = 56, seed: int = 1) -> np.ndarray:
    # Values above 255 so a silent down-conversion to uint8 would show.
    return rng(seed).integers(0, 65536, (h, w), dtype=np.uint16)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------ round trip


def test_rgb_uint8_round_trip_keeps_pixels_metadata_and_provenance(tmp_path: Path) -> None:
    image = rgb8()
    provenance = {"scan_id": "2024-05-01T10-00", "tile": 12, "exposure_ms": 8.5, "focus": {"z_um": 1.25}}
    path = write_tile(
        tmp_path / tile_filename(12, 2, 4),
        image,
        pixel_size_um=0.345,
        x_um=1234.5,
        y_um=-678.25,
        z_um=12.5,
        provenance=provenance,
    )

    assert path == tmp_path / "tile_00012_r002_c004.ome.tif"
    assert listing(tmp_path) == [path.name]  # no temporary file left behind
    data, meta = read_image(path)
    assert data.dtype == np.uint8 and data.shape == (48, 64, 3)
    np.testing.assert_array_equal(data, image)
    assert meta == ImageMeta(
        pixel_size_um=0.345, x_um=1234.5, y_um=-678.25, z_um=12.5, provenance=provenance, source="flakehunter"
    )


def test_written_tile_is_standard_ome_that_other_software_reads(tmp_path: Path) -> None:
    path = write_tile(
        tmp_path / "t.ome.tif", rgb8(), pixel_size_um=0.5, x_um=10.0, y_um=20.0, z_um=3.0, provenance={"a": 1}
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        assert tif.series[0].axes == "YXS"
        xml = tif.ome_metadata
    for attribute in (
        'PhysicalSizeX="0.5"',
        'PhysicalSizeXUnit="µm"',
        'PhysicalSizeY="0.5"',
        'PositionX="10.0"',
        'PositionXUnit="µm"',
        'PositionY="20.0"',
        'PositionZ="3.0"',
    ):
        assert attribute in xml
    # Parsed independently of flakehunter's reader: what Fiji/Bio-Formats would see.
    root = ET.fromstring(xml)
    ns = {"ome": root.tag[1:].split("}")[0]}
    plane = root.find("ome:Image/ome:Pixels/ome:Plane", ns)
    assert plane is not None and float(plane.get("PositionY")) == 20.0
    description = root.find("ome:Image/ome:Description", ns)
    assert description is not None
    assert json.loads(description.text)["flakehunter"]["provenance"] == {"a": 1}


def test_mono_uint16_round_trip_without_z_or_pixel_size(tmp_path: Path) -> None:
    image = mono16()
    path = write_tile(tmp_path / "m.ome.tif", image, pixel_size_um=None, x_um=0.0, y_um=5.5, z_um=None, provenance={})
    data, meta = read_image(path)
    assert data.dtype == np.uint16 and data.shape == image.shape
    np.testing.assert_array_equal(data, image)
    assert (meta.pixel_size_um, meta.x_um, meta.y_um, meta.z_um) == (None, 0.0, 5.5, None)
    assert meta.source == "flakehunter"
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "YX"


def test_overwriting_a_tile_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "t.ome.tif"
    write_tile(path, rgb8(seed=1), pixel_size_um=1.0, x_um=1.0, y_um=1.0, z_um=None, provenance={"v": 1})
    write_tile(path, rgb8(seed=2), pixel_size_um=1.0, x_um=2.0, y_um=2.0, z_um=None, provenance={"v": 2})
    data, meta = read_image(path)
    np.testing.assert_array_equal(data, rgb8(seed=2))
    assert meta.provenance == {"v": 2} and meta.x_um == 2.0
    assert listing(tmp_path) == ["t.ome.tif"]


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros((4, 4), np.float32), {}, "uint8 or uint16"),
        (np.zeros((4, 4, 4), np.uint8), {}, "shape"),
        (np.zeros((4, 4), np.uint8), {"x_um": float("nan")}, "finite"),
        (np.zeros((4, 4), np.uint8), {"pixel_size_um": 0.0}, "> 0"),
        (np.zeros((4, 4), np.uint8), {"y_um": None}, "both"),
    ],
)
def test_write_tile_rejects_bad_input_before_creating_any_file(
    tmp_path: Path, image: np.ndarray, kwargs: dict, match: str
) -> None:
    args = {"pixel_size_um": 1.0, "x_um": 0.0, "y_um": 0.0, "z_um": None, "provenance": {}} | kwargs
    with pytest.raises(ValueError, match=match):
        write_tile(tmp_path / "bad.ome.tif", image, **args)
    assert listing(tmp_path) == []


def test_write_tile_rejects_provenance_that_is_not_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="provenance"):
        write_tile(
            tmp_path / "p.ome.tif",
            mono16(),
            pixel_size_um=1.0,
            x_um=0.0,
            y_um=0.0,
            z_um=None,
            provenance={"when": object()},
        )
    assert listing(tmp_path) == []


# -------------------------------------------------------------------------------------- atomic writes


def _failing_imwrite(fh, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Failure injection (the only mock here): write part of a file into the temp file, then fail."""
    fh.write(b"II*\x00" + b"\x00" * 100)
    raise RuntimeError("simulated failure half-way through writing")


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiles.tifffile, "imwrite", _failing_imwrite)
    with pytest.raises(RuntimeError, match="simulated"):
        write_tile(tmp_path / "t.ome.tif", rgb8(), pixel_size_um=1.0, x_um=0.0, y_um=0.0, z_um=None, provenance={})
    assert listing(tmp_path) == []  # neither the final name nor the temporary one


def test_failed_overwrite_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tile(
        tmp_path / "t.ome.tif", rgb8(seed=3), pixel_size_um=1.0, x_um=0.0, y_um=0.0, z_um=None, provenance={"v": "old"}
    )
    monkeypatch.setattr(tiles.tifffile, "imwrite", _failing_imwrite)
    with pytest.raises(RuntimeError):
        write_tile(path, rgb8(seed=4), pixel_size_um=1.0, x_um=0.0, y_um=0.0, z_um=None, provenance={})
    assert listing(tmp_path) == ["t.ome.tif"]
    monkeypatch.undo()
    data, meta = read_image(path)
    np.testing.assert_array_equal(data, rgb8(seed=3))
    assert meta.provenance == {"v": "old"}


def test_os_error_while_writing_becomes_runtime_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fh, *args, **kwargs):  # type: ignore[no-untyped-def]
        fh.write(b"II*\x00")
        raise OSError(28, "No space left on device")  # failure injection only

    monkeypatch.setattr(tiles.tifffile, "imwrite", disk_full)
    with pytest.raises(RuntimeFailure, match=r"t\.ome\.tif: could not write tile \(the disk is full\)"):
        write_tile(tmp_path / "t.ome.tif", rgb8(), pixel_size_um=1.0, x_um=0.0, y_um=0.0, z_um=None, provenance={})
    assert listing(tmp_path) == []


# ------------------------------------------------------------------------------------- foreign files


@pytest.mark.parametrize(
    ("size", "unit", "expected_um"),
    [(500.0, "nm", 0.5), (0.65, "µm", 0.65), (0.65, "μm", 0.65), (0.65, "um", 0.65), (0.0013, "mm", 1.3)],
)
def test_foreign_ome_tiff_pixel_size_units(tmp_path: Path, size: float, unit: str, expected_um: float) -> None:
    image = mono16()
    path = tmp_path / "other.ome.tif"
    tifffile.imwrite(
        path,
        image,
        photometric="minisblack",
        metadata={
            "axes": "YX",
            "PhysicalSizeX": size,
            "PhysicalSizeXUnit": unit,
            "PhysicalSizeY": size,
            "PhysicalSizeYUnit": unit,
        },
    )
    data, meta = read_image(path)
    np.testing.assert_array_equal(data, image)
    assert meta.pixel_size_um == pytest.approx(expected_um)
    assert (meta.x_um, meta.y_um, meta.source, meta.provenance) == (None, None, "none", {})


def test_foreign_ome_tiff_position_with_units(tmp_path: Path) -> None:
    path = tmp_path / "other.ome.tif"
    tifffile.imwrite(
        path,
        rgb8(),
        photometric="rgb",
        metadata={
            "axes": "YXS",
            "PhysicalSizeX": 0.2,
            "PhysicalSizeXUnit": "µm",
            "Plane": {
                "PositionX": [1.5],
                "PositionXUnit": ["mm"],
                "PositionY": [-250.0],
                "PositionYUnit": ["µm"],
                "PositionZ": [4000.0],
                "PositionZUnit": ["nm"],
            },
            "Description": "acquired by some other program",
        },
    )
    _, meta = read_image(path)
    assert meta.source == "ome"
    assert meta.pixel_size_um == pytest.approx(0.2)
    assert (meta.x_um, meta.y_um, meta.z_um) == pytest.approx((1500.0, -250.0, 4.0))
    assert meta.provenance == {}


def test_ome_stack_gives_first_plane_and_its_position(tmp_path: Path) -> None:
    stack = rng(5).integers(0, 4096, (2, 3, 32, 40), dtype=np.uint16)  # Z, C, Y, X
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(
        path,
        stack,
        photometric="minisblack",
        metadata={
            "axes": "ZCYX",
            "PhysicalSizeX": 0.1,
            "Plane": {"PositionX": [float(i) for i in range(10, 16)], "PositionY": [7.0] * 6},
        },
    )
    data, meta = read_image(path)
    # Three channels at Z=0 are taken as R, G, B.
    np.testing.assert_array_equal(data, np.moveaxis(stack[0], 0, -1))
    assert (meta.x_um, meta.y_um, meta.source) == (10.0, 7.0, "ome")  # units left out mean µm


def test_ome_stack_of_two_channels_gives_first_channel(tmp_path: Path) -> None:
    stack = rng(6).integers(0, 255, (4, 2, 16, 20), dtype=np.uint8)  # T, C, Y, X
    path = tmp_path / "tc.ome.tif"
    tifffile.imwrite(path, stack, photometric="minisblack", metadata={"axes": "TCYX"})
    data, _ = read_image(path)
    np.testing.assert_array_equal(data, stack[0, 0])


def test_micromanager_tiff_metadata(tmp_path: Path) -> None:
    image = mono16()
    mm = {
        "XPositionUm": 1520.25,
        "YPositionUm": -300.5,
        "ZPositionUm": 42.0,
        "PixelSizeUm": 0.1725,
        "Camera": "HamamatsuHam_DCAM",
        "Exposure-ms": 10.0,
    }
    path = tmp_path / "img_000000000_Default_000.tif"
    tifffile.imwrite(path, image, photometric="minisblack", extratags=[(MM_TAG, "s", 0, json.dumps(mm), True)])
    data, meta = read_image(path)
    np.testing.assert_array_equal(data, image)
    assert meta == ImageMeta(pixel_size_um=0.1725, x_um=1520.25, y_um=-300.5, z_um=42.0, source="micromanager")


def test_micromanager_uncalibrated_pixel_size_and_string_values(tmp_path: Path) -> None:
    mm = {"XPositionUm": "12.5", "YPositionUm": "7", "PixelSizeUm": 0}  # 0 = no pixel calibration
    path = tmp_path / "mm.tif"
    tifffile.imwrite(path, mono16(), photometric="minisblack", extratags=[(MM_TAG, "s", 0, json.dumps(mm), True)])
    _, meta = read_image(path)
    assert (meta.pixel_size_um, meta.x_um, meta.y_um, meta.z_um) == (None, 12.5, 7.0, None)


def test_ome_position_takes_precedence_over_micromanager(tmp_path: Path) -> None:
    mm = {"XPositionUm": 1.0, "YPositionUm": 2.0, "ZPositionUm": 3.0, "PixelSizeUm": 9.0}
    path = tmp_path / "both.ome.tif"
    tifffile.imwrite(
        path,
        mono16(),
        photometric="minisblack",
        metadata={"axes": "YX", "PhysicalSizeX": 0.5, "Plane": {"PositionX": [100.0], "PositionY": [200.0]}},
        extratags=[(MM_TAG, "s", 0, json.dumps(mm), True)],
    )
    _, meta = read_image(path)
    assert (meta.pixel_size_um, meta.x_um, meta.y_um, meta.source) == (0.5, 100.0, 200.0, "ome")
    assert meta.z_um == 3.0  # OME has no Z here, so Micro-Manager's fills it in


def test_micromanager_position_fills_in_when_ome_has_none(tmp_path: Path) -> None:
    mm = {"XPositionUm": 1.0, "YPositionUm": 2.0}
    path = tmp_path / "both.ome.tif"
    tifffile.imwrite(
        path,
        mono16(),
        photometric="minisblack",
        metadata={"axes": "YX", "PhysicalSizeX": 0.5},
        extratags=[(MM_TAG, "s", 0, json.dumps(mm), True)],
    )
    _, meta = read_image(path)
    assert (meta.pixel_size_um, meta.x_um, meta.y_um, meta.source) == (0.5, 1.0, 2.0, "micromanager")


def test_plain_tiff_has_no_metadata(tmp_path: Path) -> None:
    image = rgb8()
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    data, meta = read_image(path)
    np.testing.assert_array_equal(data, image)
    assert meta == ImageMeta()


@pytest.mark.parametrize("kind", ["separate pages", "planar RGB"])
def test_channel_first_tiff_becomes_height_width_channels(tmp_path: Path, kind: str) -> None:
    planes = rng(7).integers(0, 256, (3, 24, 30), dtype=np.uint8)
    path = tmp_path / "cfirst.tif"
    if kind == "separate pages":
        tifffile.imwrite(path, planes, photometric="minisblack")
    else:
        tifffile.imwrite(path, planes, photometric="rgb", planarconfig="separate")
    data, _ = read_image(path)
    assert data.shape == (24, 30, 3)
    np.testing.assert_array_equal(data, np.moveaxis(planes, 0, -1))


def test_rgba_tiff_drops_alpha_and_palette_tiff_becomes_rgb(tmp_path: Path) -> None:
    rgba = rng(8).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb")
    data, _ = read_image(tmp_path / "rgba.tif")
    np.testing.assert_array_equal(data, rgba[:, :, :3])

    index = rng(9).integers(0, 4, (10, 12), dtype=np.uint8)
    colors = np.zeros((3, 256), np.uint16)
    colors[:, :4] = np.array([[0, 255, 0, 10], [0, 0, 255, 20], [0, 0, 0, 30]]) * 257
    tifffile.imwrite(tmp_path / "pal.tif", index, photometric="palette", colormap=colors)
    data, _ = read_image(tmp_path / "pal.tif")
    assert data.dtype == np.uint8
    np.testing.assert_array_equal(data, (colors[:, index] // 257).transpose(1, 2, 0))


# ------------------------------------------------------------------------------------------ PNG, JPEG


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_png_and_jpeg_are_read_in_rgb_order(tmp_path: Path, suffix: str) -> None:
    bgr_red = np.zeros((32, 48, 3), np.uint8)
    bgr_red[:, :, 2] = 255  # OpenCV's channel order is B, G, R
    path = tmp_path / f"red{suffix}"
    assert cv2.imwrite(str(path), bgr_red)
    data, meta = read_image(path)
    assert data.shape == (32, 48, 3) and data.dtype == np.uint8
    assert data[:, :, 0].min() >= 250  # red is channel 0 (JPEG is lossy, hence the margins)
    assert data[:, :, 1:].max() <= 5
    assert meta == ImageMeta()


def test_16_bit_png_stays_uint16_and_alpha_is_dropped(tmp_path: Path) -> None:
    gray = mono16(20, 24)
    cv2.imwrite(str(tmp_path / "g16.png"), gray)
    data, _ = read_image(tmp_path / "g16.png")
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data, gray)

    bgra = rng(10).integers(0, 256, (20, 24, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    data, _ = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(data, bgra[:, :, 2::-1])


def test_format_is_recognised_by_content_not_suffix(tmp_path: Path) -> None:
    bgr = rng(11).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), bgr)
    os.replace(tmp_path / "x.png", tmp_path / "x.tif")
    data, _ = read_image(tmp_path / "x.tif")
    np.testing.assert_array_equal(data, bgr[:, :, ::-1])


# ------------------------------------------------------------------------------------------ bad files


def _truncate(src: Path, dst: Path, keep: int) -> Path:
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.999])
def test_truncated_tiff_raises_input_error_naming_the_file(tmp_path: Path, fraction: float) -> None:
    full = write_tile(
        tmp_path / "full.ome.tif", rgb8(), pixel_size_um=1.0, x_um=0.0, y_um=0.0, z_um=None, provenance={"a": 1}
    )
    size = full.stat().st_size
    # 0.999 cuts only the trailing OME-XML: tifffile alone would read the pixels and lose the metadata.
    half = _truncate(full, tmp_path / "half.ome.tif", max(1, int(size * fraction)))
    with pytest.raises(InputError, match=r"half\.ome\.tif: not a readable image \(.*\)"):
        read_image(half)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_png_and_jpeg_raise_input_error(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    cv2.imwrite(str(full), rgb8(200, 300))
    half = _truncate(full, tmp_path / f"half{suffix}", full.stat().st_size // 2)
    with pytest.raises(InputError, match=rf"half\{suffix}: not a readable image"):
        read_image(half)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("notes.tif", b"these are my notes, not an image\n", "not TIFF, PNG or JPEG"),
        ("empty.tif", b"", "empty"),
        ("fake.png", b"\x89PNG\r\n\x1a\nIEND" + b"\x00" * 20, "decode"),
        ("header.tif", b"II*\x00\xff\xff\xff\x00", "truncated"),
    ],
)
def test_non_image_files_raise_one_line_input_error(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable image (")
    assert reason in message and "\n" not in message


def test_missing_file_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.tif: not a readable image"):
        read_image(tmp_path / "nope.tif")


# ------------------------------------------------------------------------------------- names, listing


def test_tile_filename() -> None:
    assert tile_filename(12, 2, 4) == "tile_00012_r002_c004.ome.tif"
    assert tile_filename(0, 0, 0) == "tile_00000_r000_c000.ome.tif"
    names = [tile_filename(i, i // 10, i % 10) for i in range(0, 120, 7)]
    assert names == sorted(names)  # zero padding keeps acquisition order in a plain sort
    with pytest.raises(ValueError):
        tile_filename(-1, 0, 0)


def test_iter_image_files_orders_and_filters(tmp_path: Path) -> None:
    files = [
        "b.tif",
        "a.PNG",
        "c.JPEG",
        "d.jpg",
        "e.tiff",
        "notes.txt",
        "data.csv",
        ".hidden.tif",
        ".t.ome.tif.tmp-123-abcdef12",
        "sub/z.tif",
        "sub/deeper/y.png",
        ".git/x.tif",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.tif").mkdir()  # a folder with an image suffix is not a file

    found = iter_image_files([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.PNG",
        "b.tif",
        "c.JPEG",
        "d.jpg",
        "e.tiff",
        "sub/deeper/y.png",
        "sub/z.tif",
    ]
    flat = iter_image_files([tmp_path], recursive=False)
    assert [p.name for p in flat] == ["a.PNG", "b.tif", "c.JPEG", "d.jpg", "e.tiff"]


def test_iter_image_files_keeps_argument_order_and_lists_each_file_once(tmp_path: Path) -> None:
    for name in ("a.tif", "b.tif", "sub/c.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = iter_image_files([tmp_path / "b.tif", tmp_path / "sub", tmp_path / "a.tif", tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["b.tif", "sub/c.tif", "a.tif"]


def test_iter_image_files_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing: no such file or folder"):
        iter_image_files([tmp_path / "missing"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"notes\.txt: not an image file \(expected one of \.tif"):
        iter_image_files([tmp_path / "notes.txt"])


def test_temp_names_are_recognised() -> None:
    assert is_temp_file(".tile_00001_r000_c001.ome.tif.tmp-4242-0123abcd")
    assert not is_temp_file("tile_00001_r000_c001.ome.tif")
    assert set(IMAGE_SUFFIXES) == {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
