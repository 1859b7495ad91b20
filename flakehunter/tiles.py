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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from flakehunter.atomic import atomic_write, is_temp_name
from flakehunter.errors import InputError, RuntimeFailure
from flakehunter.image_decode import (
    ImageFormatError,
    image_format,
    one_line,
    png_jpeg_size,
    read_png_jpeg,
    read_tiff,
)
from flakehunter.image_metadata import PROVENANCE_FORMAT, PROVENANCE_KEY, ImageMeta, tiff_meta
from flakehunter.image_windows import WindowedTiff, open_windowed

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageMeta",
    "is_temp_file",
    "iter_image_files",
    "open_windows",
    "read_image",
    "read_pixels",
    "tile_filename",
    "write_tile",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg")

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
            {PROVENANCE_KEY: {"format": PROVENANCE_FORMAT, "stage": stage, "provenance": provenance}}, allow_nan=False
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
        raise RuntimeFailure(f"{path}: could not create the folder ({one_line(exc)})") from exc
    try:
        with atomic_write(path, "wb") as fh:
            # Through the module attribute so tests can inject a failure here.
            tifffile.imwrite(fh, image, photometric=photometric, metadata=metadata, ome=True)
    except OSError as exc:
        reason = "the disk is full" if _disk_full(exc, path.parent, image.nbytes) else one_line(exc)
        raise RuntimeFailure(f"{path}: could not write tile ({reason})") from exc
    return path


def _checked_float(name: str, value: float | None, path: Path) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{path}: {name} must be finite, got {value}")
    return value


# --------------------------------------------------------------------------------------------- reading


def read_image(
    path: str | Path, before_decoding: Callable[[tuple[int, int]], None] | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    """Read a TIFF (OME or plain), PNG or JPEG image and whatever stage metadata it carries.

    Returns ``(array, meta)``: ``array`` is (H, W) or (H, W, 3) in RGB order, dtype as stored (uint8 or
    uint16 for camera images; float32/float64 TIFFs are passed through, 1-bit becomes uint8 0/255). Alpha
    is dropped, palette and CMYK are converted to RGB. Of a stack (z, time, channels) the first plane is
    returned; a channel-first (3, H, W) image becomes (H, W, 3). The format is recognised by content, not
    suffix. Raises ``InputError`` for a missing, unreadable, truncated or unsupported file.

    ``before_decoding`` is called with (rows, cols), where the file's header gives them, before the pixels
    are decoded; it may raise to refuse the image.
    """
    path = Path(path)
    with _readable(path), open(path, "rb") as fh:
        head = fh.read(16)
        if not head:
            raise ImageFormatError("file is empty")
        kind = image_format(head)
        if kind == "tiff":
            return read_tiff(fh, before_decoding)
        if kind is None:
            raise ImageFormatError("not TIFF, PNG or JPEG data")
        fh.seek(0)
        data = fh.read()
        size = png_jpeg_size(data)
        if before_decoding is not None and size is not None:
            before_decoding(size)
        return read_png_jpeg(data, is_png=kind == "png"), ImageMeta()
    raise AssertionError("unreachable")  # _readable re-raises every exception


def open_windows(path: str | Path) -> WindowedTiff | None:
    """The image at ``path`` as a `WindowedTiff` that reads windows of it without decoding the rest, or
    None when its format or layout is not windowed (read it whole with `read_image`). Use it as a context
    manager. Raises ``InputError`` as `read_image` does."""
    path = Path(path)
    with _readable(path):
        return open_windowed(path)
    raise AssertionError("unreachable")


def read_pixels(
    path: str | Path, whole_up_to_px: int, before_decoding: Callable[[tuple[int, int]], None] | None = None,
) -> tuple[np.ndarray | WindowedTiff, ImageMeta]:
    """`read_image`, except that a TIFF longer than ``whole_up_to_px`` on a side whose layout windows can
    read comes back as an open `WindowedTiff` (the caller closes it). ``before_decoding`` as in
    `read_image`. Raises ``InputError`` as `read_image` does.
    """
    path = Path(path)
    source = open_windows(path)
    if source is None:
        return read_image(path, before_decoding)
    rows, cols = int(source.shape[0]), int(source.shape[1])
    if max(rows, cols) > whole_up_to_px:
        return source, source.meta
    with source, _readable(path):
        if before_decoding is not None:
            before_decoding((rows, cols))
        return source.read(0, 0, rows, cols), source.meta
    raise AssertionError("unreachable")


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn whatever reading ``path`` raises into one ``InputError`` line naming it."""
    try:
        yield
    except ImageFormatError as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    except InputError:
        raise
    except OSError as exc:  # missing file, permission denied, a folder, I/O error
        raise InputError(f"{path}: not a readable image ({exc.strerror or one_line(exc)})") from exc
    except MemoryError:
        raise
    except Exception as exc:  # tifffile/imagecodecs raise many types on corrupt data
        raise InputError(f"{path}: not a readable image ({one_line(exc)})") from exc


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
            return shape, tiff_meta(tif, series)
    except Exception:  # not a TIFF, or corrupt: read_image decides what to say
        return None


def _disk_full(exc: OSError, folder: Path, needed: int) -> bool:
    """Whether a failed write ran out of space (numpy's short writes carry no errno, so ask the disk)."""
    import errno

    if exc.errno == errno.ENOSPC:
        return True
    try:
        return os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize < needed
    except OSError:
        return False
