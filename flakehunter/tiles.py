"""Reading and writing microscope images together with their stage metadata.

Contract (DESIGN.md §4, "Tile files" and "Units and axes"):

* A tile is one OME-TIFF. ``PhysicalSizeX``/``PhysicalSizeY`` carry the pixel size and the first
  ``Plane``'s ``PositionX``/``PositionY``/``PositionZ`` the stage position of the image centre, all in
  micrometres with explicit units, which is what Micro-Manager and other acquisition software write and
  what Fiji/Bio-Formats read. flakehunter's own provenance (scan id, tile index, exposure, focus, ...) is
  JSON in the OME ``Image/Description`` under the key ``"flakehunter"``.
* Everything public is in µm (``x_um``, ``y_um``, ``z_um``, ``pixel_size_um``). Arrays are indexed
  ``[row, col]`` (``[row, col, channel]`` for colour, channels in RGB order); never x/y.
* Tiles are written atomically: a temporary hidden name in the same folder, flushed and fsynced, then
  renamed over the final name. A reader (``watch``, a user's script) therefore sees either no file or a
  complete one, and ``iter_image_files`` skips the temporary names.
* ``read_image`` reads TIFF (OME or plain), PNG and JPEG from any software. The metadata comes from, in
  order of precedence, flakehunter's provenance JSON, the OME-XML, Micro-Manager's per-image JSON (TIFF tag
  51123); a field none of them has is ``None`` and the caller falls back to command-line values. A file
  that cannot be decoded, including one that is still being written (truncated), raises ``InputError``
  with a one-line message naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import tifffile

from flakehunter.atomic import atomic_write, is_temp_name
from flakehunter.errors import InputError, RuntimeFailure

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageMeta",
    "is_temp_file",
    "iter_image_files",
    "read_image",
    "tile_filename",
    "write_tile",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg")

# Key of flakehunter's block in the OME Image Description JSON; bump FORMAT on incompatible changes.
_FH_KEY = "flakehunter"
_FH_FORMAT = 1


# Length units as OME writes them (UnitsLength), converted to µm. "reference frame" is OME's default for
# stage positions; acquisition software that leaves the unit out means µm, so both count as µm.
_UNIT_TO_UM: dict[str, float] = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,  # U+00B5 MICRO SIGN, what OME and tifffile write
    "μm": 1.0,  # U+03BC GREEK SMALL LETTER MU, what some writers use instead
    "um": 1.0,
    "micron": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "reference frame": 1.0,
}

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class ImageMeta:
    """What a file says about where and how it was taken. ``None`` means the file does not say.

    ``x_um``/``y_um``/``z_um`` are the stage position of the image centre. ``source`` names where the
    (x, y) position came from: "flakehunter", "ome", "micromanager" or "none".
    """

    pixel_size_um: float | None = None
    x_um: float | None = None
    y_um: float | None = None
    z_um: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str = "none"
    #: What detectors found wrong with the image as a whole (e.g. out of focus); recorded with the tile or
    #: file in the journal and manifest, so that a user can go back to it.
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- names


def tile_filename(index: int, grid_row: int, grid_col: int) -> str:
    """File name of a scan tile, e.g. ``tile_00012_r002_c004.ome.tif`` (zero-padded so names sort)."""
    if min(index, grid_row, grid_col) < 0:
        raise ValueError(f"tile index, row and column must be >= 0, got {index}, {grid_row}, {grid_col}")
    return f"tile_{index:05d}_r{grid_row:03d}_c{grid_col:03d}.ome.tif"


def is_temp_file(path: str | Path) -> bool:
    """True for the temporary name of a tile that ``write_tile`` has not finished writing."""
    return is_temp_name(path)


def iter_image_files(paths: Iterable[Path], recursive: bool = True) -> list[Path]:
    """Expand files and folders into a list of image files.

    Files named explicitly are kept (in the given order) if their suffix is an image suffix; folders are
    expanded into their image files sorted by relative path, skipping hidden files and folders (which
    include ``write_tile``'s temporary names). Suffixes are matched case-insensitively. A path given twice
    is listed once. Raises ``InputError`` for a path that does not exist or a file that is not an image.
    """
    result: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            result.append(p)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for p in _walk_folder(path, recursive):
                add(p)
        elif path.exists():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"{path}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
            add(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return result


def _walk_folder(root: Path, recursive: bool) -> Iterator[Path]:
    found: list[tuple[tuple[str, ...], Path]] = []
    # os.walk does not follow symlinked folders, so a link loop cannot make this run forever.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for name in filenames:
            if name.startswith(".") or is_temp_file(name):
                continue
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                p = Path(dirpath, name)
                found.append((p.relative_to(root).parts, p))
    found.sort(key=lambda item: item[0])
    yield from (p for _, p in found)


# --------------------------------------------------------------------------------------------- writing


def write_tile(
    path: str | Path,
    image: np.ndarray,
    *,
    pixel_size_um: float | None,
    x_um: float | None,
    y_um: float | None,
    z_um: float | None,
    provenance: dict[str, Any],
) -> Path:
    """Write ``image`` as an OME-TIFF with its stage metadata and provenance, atomically.

    ``image`` is (H, W) mono or (H, W, 3) RGB, uint8 or uint16, stored as is (no compression).
    ``provenance`` must be JSON-serialisable. The parent folder is created if missing. On any failure the
    temporary file is removed and nothing new appears under ``path`` (an existing file there is kept);
    an ``OSError`` (disk full, permissions) is re-raised as ``RuntimeFailure``. Returns ``path``.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: tile must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        axes, photometric = "YX", "minisblack"
    elif image.ndim == 3 and image.shape[2] == 3:
        axes, photometric = "YXS", "rgb"
    else:
        raise ValueError(f"{path}: tile must be (H, W) or (H, W, 3), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{path}: tile is empty, shape {image.shape}")
    pixel_size_um = _checked_float("pixel_size_um", pixel_size_um, path)
    if pixel_size_um is not None and pixel_size_um <= 0:
        raise ValueError(f"{path}: pixel_size_um must be > 0, got {pixel_size_um}")
    x_um = _checked_float("x_um", x_um, path)
    y_um = _checked_float("y_um", y_um, path)
    z_um = _checked_float("z_um", z_um, path)
    if (x_um is None) != (y_um is None):
        raise ValueError(f"{path}: give both x_um and y_um or neither")

    stage = {"x_um": x_um, "y_um": y_um, "z_um": z_um, "pixel_size_um": pixel_size_um}
    try:
        description = json.dumps(
            {_FH_KEY: {"format": _FH_FORMAT, "stage": stage, "provenance": provenance}}, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{path}: provenance is not JSON-serialisable ({exc})") from exc

    metadata: dict[str, Any] = {"axes": axes, "Description": description}
    if pixel_size_um is not None:
        metadata.update(
            PhysicalSizeX=pixel_size_um,
            PhysicalSizeXUnit="µm",
            PhysicalSizeY=pixel_size_um,
            PhysicalSizeYUnit="µm",
        )
    plane: dict[str, list[Any]] = {}
    for axis, value in (("X", x_um), ("Y", y_um), ("Z", z_um)):
        if value is not None:
            plane[f"Position{axis}"] = [value]
            plane[f"Position{axis}Unit"] = ["µm"]
    if plane:
        metadata["Plane"] = plane

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeFailure(f"{path}: could not create the folder ({_one_line(exc)})") from exc
    try:
        with atomic_write(path, "wb") as fh:
            # Through the module attribute so tests can inject a failure here.
            tifffile.imwrite(fh, image, photometric=photometric, metadata=metadata, ome=True)
    except OSError as exc:
        raise RuntimeFailure(f"{path}: could not write tile ({_one_line(exc)})") from exc
    return path


def _checked_float(name: str, value: float | None, path: Path) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{path}: {name} must be finite, got {value}")
    return value


# --------------------------------------------------------------------------------------------- reading


def read_image(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read a TIFF (OME or plain), PNG or JPEG image and whatever stage metadata it carries.

    Returns ``(array, meta)``: ``array`` is (H, W) or (H, W, 3) in RGB order, dtype as stored (uint8 or
    uint16 for camera images; float32/float64 TIFFs are passed through, 1-bit becomes uint8 0/255). Alpha
    is dropped, palette and CMYK are converted to RGB. Of a stack (z, time, channels) the first plane is
    returned; a channel-first (3, H, W) image becomes (H, W, 3). The format is recognised by content, not
    suffix. Raises ``InputError`` for a missing, unreadable, truncated or unsupported file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            if not head:
                raise _Unreadable("file is empty")
            if head.startswith(_TIFF_MAGICS):
                return _read_tiff(fh)
            if head.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
                fh.seek(0)
                return _read_png_jpeg(fh.read(), is_png=head.startswith(_PNG_MAGIC)), ImageMeta()
            raise _Unreadable("not TIFF, PNG or JPEG data")
    except _Unreadable as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    except InputError:
        raise
    except OSError as exc:  # missing file, permission denied, a folder, I/O error
        raise InputError(f"{path}: not a readable image ({exc.strerror or _one_line(exc)})") from exc
    except MemoryError:
        raise
    except Exception as exc:  # tifffile/imagecodecs raise many types on corrupt data
        raise InputError(f"{path}: not a readable image ({_one_line(exc)})") from exc


def read_geometry(path: str | Path) -> tuple[tuple[int, int], ImageMeta] | None:
    """Frame size (rows, cols) and stage metadata of a TIFF without reading its pixels.

    Returns None for PNG/JPEG (they carry no stage position) and for files that cannot be parsed;
    `read_image` reports those properly when the file is analysed.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                return None
            series = tif.series[0]
            keyframe = series.keyframe
            shape = (int(keyframe.imagelength), int(keyframe.imagewidth))
            return shape, _tiff_meta(tif, series)
    except Exception:  # not a TIFF, or corrupt: read_image decides what to say
        return None


class _Unreadable(Exception):
    """Internal: the reason a file cannot be read, turned into InputError by read_image."""


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_png_jpeg(data: bytes, *, is_png: bool) -> np.ndarray:
    # Decoders may return a partly grey image for a file that is still being written; check the end.
    if is_png and b"IEND" not in data[-64:]:
        raise _Unreadable("truncated PNG: no IEND chunk at the end")
    if not is_png and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise _Unreadable("truncated JPEG: no end-of-image marker after the last scan")
    # imdecode rather than imread: imread cannot open non-ASCII paths on Windows.
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise _Unreadable("OpenCV could not decode it")
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
        elif arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        elif arr.shape[2] == 1:
            arr = arr[:, :, 0]
        else:
            raise _Unreadable(f"unsupported channel count {arr.shape[2]}")
    return _finish(arr)


def _read_tiff(fh: IO[bytes]) -> tuple[np.ndarray, ImageMeta]:
    size = fh.seek(0, os.SEEK_END)
    problem = _tiff_truncation(fh, size)
    if problem:
        raise _Unreadable(f"truncated TIFF, maybe still being written: {problem}")
    fh.seek(0)
    with tifffile.TiffFile(fh) as tif:
        if not tif.series:
            raise _Unreadable("TIFF contains no image")
        series = tif.series[0]
        arr = _first_plane(tif, series)
        meta = _tiff_meta(tif, series)
    return _finish(arr), meta


def _finish(arr: np.ndarray) -> np.ndarray:
    if arr.size == 0:
        raise _Unreadable(f"image is empty, shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * np.uint8(255)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise _Unreadable(f"unsupported sample type {arr.dtype} (expected uint8, uint16 or float)")
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
        raise _Unreadable(f"unsupported TIFF layout: page of shape {arr.shape} with axes {axes!r}")
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
            raise _Unreadable("palette TIFF without a colour map")
        colormap = np.asarray(colormap)
        if colormap.ndim != 2 or colormap.shape[0] != 3 or int(plane.max()) >= colormap.shape[1]:
            raise _Unreadable("palette TIFF with a colour map that does not fit its indices")
        rgb = np.moveaxis(colormap[:, plane], 0, -1)
        # TIFF colour maps are 16-bit (0..65535); an 8-bit palette image is an 8-bit RGB image.
        if rgb.dtype == np.uint16 and int(keyframe.bitspersample) <= 8:
            rgb = np.round(rgb / 257.0).astype(np.uint8)
        return rgb
    if photometric == tifffile.PHOTOMETRIC.SEPARATED:
        if plane.ndim != 3 or samples < 4 or plane.dtype != np.uint8 or _inkset(keyframe) != 1:
            raise _Unreadable("unsupported separated (non-CMYK) TIFF")
        cmyk = plane[:, :, :4].astype(np.float32) / 255.0
        rgb = 255.0 * (1.0 - cmyk[:, :, :3]) * (1.0 - cmyk[:, :, 3:4])
        return np.round(rgb).astype(np.uint8)
    if photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR):
        if samples < 3:
            raise _Unreadable(f"RGB TIFF with {samples} samples per pixel")
        return plane[:, :, :3]  # drop alpha and other extra samples
    if photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE):
        if plane.ndim == 3:
            plane = plane[:, :, 0]  # grey + alpha, or extra samples
        if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            plane = _invert(plane, int(keyframe.bitspersample))
        return plane
    raise _Unreadable(f"unsupported colour space {tifffile.PHOTOMETRIC(photometric).name}")


def _inkset(keyframe: Any) -> int:
    tag = keyframe.tags.get(332)  # InkSet; 1 (CMYK) when absent
    return int(tag.value) if tag is not None else 1


def _invert(plane: np.ndarray, bits: int) -> np.ndarray:
    if plane.dtype == np.bool_:
        return ~plane
    if plane.dtype.kind == "u":
        return (np.uint64((1 << bits) - 1) - plane.astype(np.uint64)).astype(plane.dtype)
    raise _Unreadable(f"unsupported min-is-white TIFF of {plane.dtype}")


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


def _tiff_truncation(fh: IO[bytes], size: int) -> str | None:
    """Walk the IFD chain and say what lies beyond the end of the file, or None if nothing does.

    tifffile silently drops a tag whose value lies past the end (so a half-written OME-TIFF would read
    with its metadata missing); this check makes a file that is still being written an error instead.
    Layouts this walker does not know are left to tifffile.
    """
    fh.seek(0)
    head = fh.read(16)
    bo = "<" if head[:2] == b"II" else ">"
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


# ----------------------------------------------------------------------------------------- metadata


def _tiff_meta(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> ImageMeta:
    """Combine the metadata sources field by field, in order of precedence."""
    provenance: dict[str, Any] = {}
    sources: list[tuple[str, dict[str, float | None]]] = []

    ome_xml = tif.ome_metadata
    if ome_xml:
        ome_values, description = _parse_ome(ome_xml)
        fh_block = _flakehunter_block(description)
        if fh_block is not None:
            provenance = fh_block.get("provenance") or {}
            stage = fh_block.get("stage") or {}
            sources.append(("flakehunter", {k: _as_float(stage.get(k)) for k in _FIELDS}))
        sources.append(("ome", ome_values))
    mm = _micromanager_values(series)
    if mm:
        sources.append(("micromanager", mm))

    def first(key: str) -> float | None:
        return next((v[key] for _, v in sources if v.get(key) is not None), None)

    # x and y as a pair from one source, so a position is never stitched together from two programs.
    source, x_um, y_um = "none", None, None
    for name, values in sources:
        if values.get("x_um") is not None and values.get("y_um") is not None:
            source, x_um, y_um = name, values["x_um"], values["y_um"]
            break
    pixel = first("pixel_size_um")
    if pixel is not None and pixel <= 0:  # Micro-Manager writes 0 when uncalibrated
        pixel = None
    return ImageMeta(
        pixel_size_um=pixel,
        x_um=x_um,
        y_um=y_um,
        z_um=first("z_um"),
        provenance=provenance if isinstance(provenance, dict) else {},
        source=source,
    )


_FIELDS = ("pixel_size_um", "x_um", "y_um", "z_um")


def _as_float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _length_um(value: str | None, unit: str | None, what: str) -> float | None:
    number = _as_float(value)
    if number is None:
        return None
    factor = _UNIT_TO_UM.get((unit or "µm").strip())
    if factor is None:
        log.warning("ignoring %s in unsupported unit %r", what, unit)
        return None
    return number * factor


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # strip the namespace, which changes with the OME schema version


def _parse_ome(xml: str) -> tuple[dict[str, float | None], str | None]:
    """Pixel size and first-plane position (µm) and the Description of the first OME Image."""
    values: dict[str, float | None] = dict.fromkeys(_FIELDS)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        log.warning("ignoring malformed OME-XML (%s)", exc)
        return values, None
    image = next((el for el in root.iter() if _local(el.tag) == "Image"), None)
    if image is None:
        return values, None
    description = next((el.text for el in image if _local(el.tag) == "Description"), None)
    pixels = next((el for el in image if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return values, description

    a = pixels.attrib
    size_x = _length_um(a.get("PhysicalSizeX"), a.get("PhysicalSizeXUnit"), "PhysicalSizeX")
    size_y = _length_um(a.get("PhysicalSizeY"), a.get("PhysicalSizeYUnit"), "PhysicalSizeY")
    if size_x is not None and size_y is not None and abs(size_x - size_y) > 0.01 * size_x:
        log.warning("pixels are not square (%.4g x %.4g µm); using PhysicalSizeX", size_x, size_y)
    values["pixel_size_um"] = size_x if size_x is not None else size_y

    planes = [el for el in pixels if _local(el.tag) == "Plane"]
    # The plane we return the pixels of is C=Z=T=0; fall back to the first listed.
    plane = next(
        (p for p in planes if all(p.get(k, "0") == "0" for k in ("TheC", "TheZ", "TheT"))),
        planes[0] if planes else None,
    )
    if plane is not None:
        for axis in "XYZ":
            values[f"{axis.lower()}_um"] = _length_um(
                plane.get(f"Position{axis}"), plane.get(f"Position{axis}Unit"), f"Position{axis}"
            )
    return values, description


def _flakehunter_block(description: str | None) -> dict[str, Any] | None:
    if not description or _FH_KEY not in description:
        return None
    try:
        data = json.loads(description)
    except ValueError:
        return None  # a foreign description that happens to contain the word
    block = data.get(_FH_KEY) if isinstance(data, dict) else None
    return block if isinstance(block, dict) else None


def _micromanager_values(series: tifffile.TiffPageSeries) -> dict[str, float | None] | None:
    """Position and pixel size from Micro-Manager's per-image JSON (tag 51123) of the first page."""
    page = series.pages[0] if len(series.pages) else None
    tags = getattr(page, "tags", None)
    tag = tags.get(51123) if tags is not None else None
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value.rstrip("\x00"))
        except ValueError:
            log.warning("ignoring Micro-Manager metadata that is not JSON")
            return None
    if not isinstance(value, dict):
        return None
    return {
        "x_um": _as_float(value.get("XPositionUm")),
        "y_um": _as_float(value.get("YPositionUm")),
        "z_um": _as_float(value.get("ZPositionUm")),
        "pixel_size_um": _as_float(value.get("PixelSizeUm")),
    }
