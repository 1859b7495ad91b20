"""Decoding TIFF, PNG and JPEG bytes into arrays, recognised by content, not by suffix.

Truncated files (still being written) are recognised and refused rather than decoded into partly grey
images; stacks give their first plane; palette, CMYK, inverted and bit-packed TIFFs become RGB or mono.
Every failure is an `ImageFormatError` with a one-line reason; `flakehunter.tiles.read_image` adds the
file name.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from typing import IO, Any, Literal

import cv2
import numpy as np
import tifffile

from flakehunter.image_metadata import ImageMeta, tiff_meta

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"




class ImageFormatError(Exception):
    """The reason bytes cannot be decoded as an image (one line, no file name)."""


def image_format(head: bytes) -> str | None:
    """"tiff", "png" or "jpeg" from a file's first bytes, or None when they are none of these."""
    if head.startswith(_TIFF_MAGICS):
        return "tiff"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    return None


def png_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(rows, cols) from a PNG's or JPEG's header bytes (its first 64 KiB are plenty), without decoding it;
    None when the header does not say."""
    if data.startswith(_PNG_MAGIC) and len(data) >= 24 and data[12:16] == b"IHDR":
        cols, rows = struct.unpack(">II", data[16:24])
        return rows, cols
    if not data.startswith(_JPEG_MAGIC):
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and at + 9 <= len(data):
            rows, cols = struct.unpack(">HH", data[at + 5 : at + 9])
            return rows, cols
        at += 2 + length
    return None


def one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_png_jpeg(data: bytes, *, is_png: bool) -> np.ndarray:
    # Decoders may return a partly grey image for a file that is still being written; check the end.
    if is_png and b"IEND" not in data[-64:]:
        raise ImageFormatError("truncated PNG: no IEND chunk at the end")
    if not is_png and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ImageFormatError("truncated JPEG: no end-of-image marker after the last scan")
    # imdecode rather than imread: imread cannot open non-ASCII paths on Windows.
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageFormatError("OpenCV could not decode it")
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
        elif arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        elif arr.shape[2] == 1:
            arr = arr[:, :, 0]
        else:
            raise ImageFormatError(f"unsupported channel count {arr.shape[2]}")
    if not is_png:
        arr = _upright(arr, _exif_orientation(data))
    return _finish(arr)


def _exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of a JPEG: how the camera held the sensor; 1 when absent."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:  # no or broken EXIF: the pixels as stored
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as the photographer saw them (what every viewer shows), from EXIF orientation 1-8."""
    swap = (1, 0, 2)[: arr.ndim]
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1, :]
    if orientation == 5:
        return arr.transpose(swap)
    if orientation == 6:
        return np.rot90(arr, k=-1)
    if orientation == 7:
        return arr.transpose(swap)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr


def read_tiff(
    fh: IO[bytes], before_decoding: Callable[[tuple[int, int]], None] | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    size = fh.seek(0, os.SEEK_END)
    problem = tiff_truncation(fh, size)
    if problem:
        raise ImageFormatError(f"truncated TIFF, maybe still being written: {problem}")
    fh.seek(0)
    with tifffile.TiffFile(fh) as tif:
        if not tif.series:
            raise ImageFormatError("TIFF contains no image")
        series = tif.series[0]
        if before_decoding is not None:  # the frame's size from the header, before any pixel is decoded
            before_decoding((int(series.keyframe.imagelength), int(series.keyframe.imagewidth)))
        arr = _first_plane(tif, series)
        meta = tiff_meta(tif, series)
    return _finish(arr), meta


def _finish(arr: np.ndarray) -> np.ndarray:
    if arr.size == 0:
        raise ImageFormatError(f"image is empty, shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * np.uint8(255)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ImageFormatError(f"unsupported sample type {arr.dtype} (expected uint8, uint16 or float)")
    return np.ascontiguousarray(arr)


def _first_plane(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> np.ndarray:
    """The first 2D plane of the first series as (H, W) or (H, W, samples), without reading the stack."""
    keyframe = series.keyframe
    page_axes: str = keyframe.axes
    axes: str = series.axes
    lead_axes = axes[: len(axes) - len(page_axes)] if axes.endswith(page_axes) else ""
    lead_shape = tuple(series.shape[: len(lead_axes)])
    n_pages = len(series.pages)

    # Separate pages holding R, G, B: an OME/ImageJ channel axis of 3, or a bare (3, H, W) stack.
    rgb_axis = None
    if "S" not in page_axes and n_pages == math.prod(lead_shape):
        if "C" in lead_axes and lead_shape[lead_axes.index("C")] == 3:
            rgb_axis = lead_axes.index("C")
        elif len(lead_axes) == 1 and lead_shape == (3,) and lead_axes in "CQSI":
            rgb_axis = 0
    if rgb_axis is not None:
        index = [0] * len(lead_shape)
        keys = []
        for c in range(3):
            index[rgb_axis] = c
            keys.append(int(np.ravel_multi_index(index, lead_shape)))
        planes = tif.asarray(series=0, key=keys)  # (3, H, W)
        return np.stack([_reduce_to(p, page_axes, "YX") for p in planes], axis=-1)

    page = tif.asarray(series=0, key=0)
    plane = _reduce_to(page, page_axes, "YXS" if "S" in page_axes else "YX")
    return _apply_photometric(plane, keyframe)


def _reduce_to(arr: np.ndarray, axes: str, keep: str) -> np.ndarray:
    """Index 0 along every axis not in ``keep`` and order the rest as ``keep``."""
    if arr.ndim != len(axes):
        raise ImageFormatError(f"unsupported TIFF layout: page of shape {arr.shape} with axes {axes!r}")
    for ax in reversed(range(len(axes))):
        if axes[ax] not in keep:
            arr = arr.take(0, axis=ax)
            axes = axes[:ax] + axes[ax + 1 :]
    return np.transpose(arr, [axes.index(a) for a in keep if a in axes])


def _apply_photometric(plane: np.ndarray, keyframe: Any) -> np.ndarray:
    photometric = int(keyframe.photometric)
    samples = plane.shape[2] if plane.ndim == 3 else 1
    if photometric == tifffile.PHOTOMETRIC.PALETTE and plane.ndim == 2:
        colormap = keyframe.colormap
        if colormap is None:
            raise ImageFormatError("palette TIFF without a colour map")
        colormap = np.asarray(colormap)
        if colormap.ndim != 2 or colormap.shape[0] != 3 or int(plane.max()) >= colormap.shape[1]:
            raise ImageFormatError("palette TIFF with a colour map that does not fit its indices")
        rgb = np.moveaxis(colormap[:, plane], 0, -1)
        # TIFF colour maps are 16-bit (0..65535); an 8-bit palette image is an 8-bit RGB image.
        if rgb.dtype == np.uint16 and int(keyframe.bitspersample) <= 8:
            rgb = np.round(rgb / 257.0).astype(np.uint8)
        return rgb
    if photometric == tifffile.PHOTOMETRIC.SEPARATED:
        if plane.ndim != 3 or samples < 4 or plane.dtype != np.uint8 or _inkset(keyframe) != 1:
            raise ImageFormatError("unsupported separated (non-CMYK) TIFF")
        cmyk = plane[:, :, :4].astype(np.float32) / 255.0
        rgb = 255.0 * (1.0 - cmyk[:, :, :3]) * (1.0 - cmyk[:, :, 3:4])
        return np.round(rgb).astype(np.uint8)
    if photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR):
        if samples < 3:
            raise ImageFormatError(f"RGB TIFF with {samples} samples per pixel")
        return plane[:, :, :3]  # drop alpha and other extra samples
    if photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE):
        if plane.ndim == 3:
            plane = plane[:, :, 0]  # grey + alpha, or extra samples
        if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            plane = _invert(plane, int(keyframe.bitspersample))
        return plane
    raise ImageFormatError(f"unsupported colour space {tifffile.PHOTOMETRIC(photometric).name}")


def _inkset(keyframe: Any) -> int:
    tag = keyframe.tags.get(332)  # InkSet; 1 (CMYK) when absent
    return int(tag.value) if tag is not None else 1


def _invert(plane: np.ndarray, bits: int) -> np.ndarray:
    if plane.dtype == np.bool_:
        return ~plane
    if plane.dtype.kind == "u":
        return (np.uint64((1 << bits) - 1) - plane.astype(np.uint64)).astype(plane.dtype)
    raise ImageFormatError(f"unsupported min-is-white TIFF of {plane.dtype}")


# ------------------------------------------------------------------------------------ TIFF completeness

_TIFF_TYPE_SIZES = {
    1: 1,
    2: 1,
    3: 2,
    4: 4,
    5: 8,
    6: 1,
    7: 1,
    8: 2,
    9: 4,
    10: 8,
    11: 4,
    12: 8,
    13: 4,
    16: 8,
    17: 8,
    18: 8,
}
_STRIP_TAGS = {273: 279, 324: 325}  # StripOffsets -> StripByteCounts, TileOffsets -> TileByteCounts
_MAX_IFDS = 1_000_000


def tiff_truncation(fh: IO[bytes], size: int) -> str | None:
    """Walk the IFD chain and say what lies beyond the end of the file, or None if nothing does.

    tifffile silently drops a tag whose value lies past the end (so a half-written OME-TIFF would read
    with its metadata missing); this check makes a file that is still being written an error instead.
    Layouts this walker does not know are left to tifffile.
    """
    fh.seek(0)
    head = fh.read(16)
    bo: Literal["<", ">"] = "<" if head[:2] == b"II" else ">"
    version = struct.unpack(bo + "H", head[2:4])[0]
    if version == 42:
        off_fmt, cnt_fmt, entry_size, inline, first = "I", "H", 12, 4, 4
    elif version == 43:
        off_fmt, cnt_fmt, entry_size, inline, first = "Q", "Q", 20, 8, 8
    else:
        return None
    off_size = struct.calcsize(off_fmt)
    cnt_size = struct.calcsize(cnt_fmt)
    if first + off_size > size:
        return f"the header is cut short at {size} bytes"
    fh.seek(first)
    ifd = struct.unpack(bo + off_fmt, fh.read(off_size))[0]
    seen: set[int] = set()
    while ifd and ifd not in seen and len(seen) < _MAX_IFDS:
        seen.add(ifd)
        if ifd + cnt_size > size:
            return f"IFD at byte {ifd} is past the end ({size} bytes)"
        fh.seek(ifd)
        (n,) = struct.unpack(bo + cnt_fmt, fh.read(cnt_size))
        end = ifd + cnt_size + n * entry_size + off_size
        if end > size:
            return f"IFD at byte {ifd} ends at byte {end}, past the end ({size} bytes)"
        block = fh.read(n * entry_size + off_size)
        arrays: dict[int, np.ndarray] = {}
        for i in range(n):
            entry = block[i * entry_size : (i + 1) * entry_size]
            tag, typ = struct.unpack(bo + "HH", entry[:4])
            count = struct.unpack(bo + off_fmt, entry[4 : 4 + off_size])[0]
            value = entry[4 + off_size :]
            nbytes = count * _TIFF_TYPE_SIZES.get(typ, 0)
            offset = struct.unpack(bo + off_fmt, value)[0] if nbytes > inline else None
            if offset is not None and offset + nbytes > size:
                return f"value of tag {tag} ends at byte {offset + nbytes}, past the end ({size} bytes)"
            if tag in _STRIP_TAGS or tag in _STRIP_TAGS.values():
                dtype = {3: "u2", 4: "u4", 16: "u8"}.get(typ)
                if dtype is None:
                    continue
                if offset is None:
                    raw = value[:nbytes]
                else:
                    fh.seek(offset)
                    raw = fh.read(nbytes)
                arrays[tag] = np.frombuffer(raw, np.dtype(dtype).newbyteorder(bo)).astype(np.uint64)
        for offsets_tag, counts_tag in _STRIP_TAGS.items():
            offsets, counts = arrays.get(offsets_tag), arrays.get(counts_tag)
            if offsets is not None and counts is not None and len(offsets) == len(counts) and len(offsets):
                data_end = int((offsets + counts).max())
                if data_end > size:
                    return f"image data ends at byte {data_end}, past the end ({size} bytes)"
        ifd = struct.unpack(bo + off_fmt, block[n * entry_size :])[0]
    return None
