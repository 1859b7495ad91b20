"""Windows of a large TIFF, read without decoding the whole image.

A 12000 x 12000 RGB image is 432 MB as stored and several GB once a detector works on it in floating
point. A TIFF is stored in strips or tiles that can be decoded one at a time, so `WindowedTiff` reads a
window (rows, cols) by decoding only the segments it touches: memory grows with the window, not the
image. It looks like a read-only array to code that slices (``image[r0:r1, c0:c1]``, ``shape``,
``dtype``), so the report's gallery crops take it where they take an array.

Only layouts whose first plane is one page of chunky pixels are windowed (RGB, grey, JPEG-in-TIFF as
YCbCr); anything else (palette, CMYK, planes in separate pages, 1-bit) is read whole by
`flakehunter.tiles.read_image`, within its size limit.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import tifffile

from flakehunter.image_decode import ImageFormatError, one_line, tiff_truncation
from flakehunter.image_metadata import ImageMeta, tiff_meta

__all__ = ["LARGE_IMAGE_PX", "WindowedTiff", "open_windowed"]

#: Images with a longer side than this are analysed, and read where their layout allows, a window at a time.
LARGE_IMAGE_PX = 4096

_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


class WindowedTiff:
    """The first plane of a TIFF as (rows, cols) or (rows, cols, 3), read a window at a time.

    Use as a context manager (it holds the file open). ``meta`` is the file's stage metadata.
    """

    def __init__(self, path: Path, tif: tifffile.TiffFile, page: tifffile.TiffPage, meta: ImageMeta) -> None:
        self.path = path
        self.meta = meta
        self._tif = tif
        self._page = page
        self._lock = threading.Lock()  # one file position; the report reads crops from several threads
        rows, cols = int(page.imagelength), int(page.imagewidth)
        self._samples = int(page.samplesperpixel)
        self._colour = int(page.photometric) in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
        self.shape: tuple[int, ...] = (rows, cols, 3) if self._colour else (rows, cols)
        self.dtype = np.dtype(page.dtype)
        if page.is_tiled:
            self._seg_rows, self._seg_cols = int(page.tilelength), int(page.tilewidth)
        else:
            self._seg_rows, self._seg_cols = min(int(page.rowsperstrip), rows), cols
        self._per_row = math.ceil(cols / self._seg_cols)
        self._raw_rows = not page.is_tiled and page.compression == tifffile.COMPRESSION.NONE
        self._stored = np.dtype(page.dtype).newbyteorder(tif.byteorder)

    def __enter__(self) -> WindowedTiff:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._tif.close()

    def __getitem__(self, key: Any) -> np.ndarray:
        """``image[r0:r1, c0:c1]`` (steps of 1) as a new array; other indexing is not supported."""
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)):
            raise TypeError("a windowed image takes [row_slice, col_slice]")
        (r0, r1, rs), (c0, c1, cs) = (k.indices(n) for k, n in zip(key, self.shape[:2], strict=True))
        if rs != 1 or cs != 1:
            raise TypeError("a windowed image takes slices with a step of 1")
        return self.read(r0, c0, max(r1, r0), max(c1, c0))

    def read(self, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
        """Pixels [r0:r1, c0:c1], decoding only the strips or tiles that hold them. Raises
        `ImageFormatError` for data that cannot be read or decoded (a corrupt or missing strip)."""
        try:
            return self._read(r0, c0, r1, c1)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # OSError, tifffile's and the codecs' own errors
            raise ImageFormatError(f"rows {r0}-{r1}, columns {c0}-{c1}: {one_line(exc)}") from exc

    def _read(self, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
        # Raw rows fill every pixel; decoded segments may be empty (zeros, as tifffile reads them).
        out = (np.empty if self._raw_rows else np.zeros)((r1 - r0, c1 - c0, self._samples), self.dtype)
        if r1 > r0 and c1 > c0:
            first, last = r0 // self._seg_rows, (r1 - 1) // self._seg_rows
            for seg_row in range(first, last + 1):
                if self._raw_rows:  # uncompressed strips: read just the rows, even of one huge strip
                    self._read_rows(seg_row, r0, c0, r1, c1, out)
                    continue
                for seg_col in range(c0 // self._seg_cols, (c1 - 1) // self._seg_cols + 1):
                    self._decode_segment(seg_row * self._per_row + seg_col, r0, c0, r1, c1, out)
        return np.ascontiguousarray(out[:, :, :3] if self._colour else out[:, :, 0])

    def _read_rows(self, strip: int, r0: int, c0: int, r1: int, c1: int, out: np.ndarray, chunk: int = 256) -> None:
        top = strip * self._seg_rows
        cols = self.shape[1]
        row_bytes = cols * self._samples * self._stored.itemsize
        # a few hundred whole rows at a time, so a window of a very wide image costs little more than itself
        for start in range(max(r0, top), min(r1, top + self._seg_rows), chunk):
            stop = min(start + chunk, r1, top + self._seg_rows)
            with self._lock:
                fh = self._tif.filehandle
                fh.seek(int(self._page.dataoffsets[strip]) + (start - top) * row_bytes)
                data = fh.read((stop - start) * row_bytes)
            if len(data) < (stop - start) * row_bytes:
                raise ValueError(f"strip {strip} is shorter than its rows")
            rows = np.frombuffer(data, self._stored).reshape(stop - start, cols, self._samples)
            out[start - r0 : stop - r0] = rows[:, c0:c1]

    def _decode_segment(self, index: int, r0: int, c0: int, r1: int, c1: int, out: np.ndarray) -> None:
        page = self._page
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        with self._lock:
            fh = self._tif.filehandle
            fh.seek(offset)
            data = fh.read(count) if count else None
        segment, (_, _, top, left, _), _ = page.decode(data, index, jpegtables=page.jpegtables)
        if segment is None:  # an empty segment: zeros, as tifffile reads it
            return
        block = segment[0]
        rr0, rr1 = max(r0, top), min(r1, top + block.shape[0])
        cc0, cc1 = max(c0, left), min(c1, left + block.shape[1])
        if rr1 > rr0 and cc1 > cc0:
            out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = block[rr0 - top : rr1 - top, cc0 - left : cc1 - left]

    def reduced(self, factor: int, band_rows: int = 2048) -> np.ndarray:
        """The image shrunk by an integer ``factor`` with area averaging, read in bands of rows."""
        import cv2

        factor = max(1, int(factor))
        rows, cols = self.shape[:2]
        out_rows, out_cols = max(1, rows // factor), max(1, cols // factor)
        step = max(factor, band_rows - band_rows % factor)
        bands = []
        for top in range(0, out_rows * factor, step):
            band = self.read(top, 0, min(top + step, out_rows * factor), out_cols * factor)
            size = (out_cols, band.shape[0] // factor)
            bands.append(cv2.resize(band, size, interpolation=cv2.INTER_AREA) if factor > 1 else band)
        return np.concatenate(bands, axis=0)


def open_windowed(path: str | Path) -> WindowedTiff | None:
    """The TIFF at ``path`` as a `WindowedTiff`, or None when its layout is not one that windows read
    (or it is not a TIFF at all: `flakehunter.tiles.read_image` then reads it, or says what is wrong).

    Raises `ImageFormatError` for a TIFF that is cut short (still being written) and OSError for a file
    that cannot be opened.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        if fh.read(4) not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return None
        problem = tiff_truncation(fh, size)
        if problem:
            raise ImageFormatError(f"truncated TIFF, maybe still being written: {problem}")
    tif = tifffile.TiffFile(path)
    try:
        page = _windowable_page(tif)
        if page is None:
            tif.close()
            return None
        return WindowedTiff(path, tif, page, tiff_meta(tif, tif.series[0]))
    except BaseException:
        tif.close()
        raise


def _windowable_page(tif: tifffile.TiffFile) -> tifffile.TiffPage | None:
    """The page holding the first plane, when it is one page of chunky pixels windows can read."""
    if not tif.series:
        return None
    series = tif.series[0]
    page = series.keyframe
    if not isinstance(page, tifffile.TiffPage) or page is not tif.pages.first:
        return None
    photometric = int(page.photometric)
    samples = int(page.samplesperpixel)
    if photometric == tifffile.PHOTOMETRIC.YCBCR:
        colour_ok = page.compression == tifffile.COMPRESSION.JPEG and samples >= 3
    elif photometric == tifffile.PHOTOMETRIC.RGB:
        colour_ok = samples >= 3
    else:
        colour_ok = photometric == tifffile.PHOTOMETRIC.MINISBLACK
        # an OME/ImageJ stack whose first pages are R, G and B is read whole (read_image joins them)
        if "C" in series.axes and len(series.pages) > 1:
            return None
    layout_ok = (
        (samples == 1 or page.planarconfig == tifffile.PLANARCONFIG.CONTIG)
        and int(page.imagedepth) == 1
        and page.dtype is not None
        and np.dtype(page.dtype) in _DTYPES
        and int(page.bitspersample) in (8, 16, 32, 64)
        and len(page.dataoffsets) == len(page.databytecounts) > 0
        and min(int(page.imagelength), int(page.imagewidth)) > 0
    )
    return page if colour_ok and layout_ok else None
