"""The overview mosaic: every tile, downsampled, placed where the stage says it was, flat-field corrected.

The mosaic lies in the stage frame: overview pixel (row, col), centres at integers, shows stage point
``x = x0 + col·s``, ``y = y0 + row·s`` (`Georef`; s in µm per overview pixel), so +x runs right and +y
down, which is how the camera shows a tile with the default transform (DESIGN.md §4). Each tile goes
through the run's own pixel -> stage transform (rotation, flips), so a candidate's stage position
lands on its flake in the overview exactly as it does on the stage.

Flat field: when at least `MIN_FLAT_TILES` tiles of one size exist, the per-pixel median of the
downsampled tiles (flakes are rare; the median is the bare substrate and its vignetting) is smoothed,
normalised to mean 1 per channel, and divided out of every tile.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from flakehunter.geometry import PixelTransform

#: Fewest tiles of one size for a median flat field; fewer leave the tiles uncorrected.
MIN_FLAT_TILES = 8
BACKGROUND_RGB = (32, 32, 36)


@dataclass(frozen=True)
class Georef:
    """Where the overview lies on the stage: overview pixel (row, col) <-> stage (x_um, y_um)."""

    x0_um: float
    y0_um: float
    um_per_px: float
    rows: int
    cols: int

    def to_px(self, x_um: Any, y_um: Any) -> tuple[Any, Any]:
        """Overview (row, col) of stage point(s), pixel centres at integers."""
        return (np.asarray(y_um, float) - self.y0_um) / self.um_per_px, (
            np.asarray(x_um, float) - self.x0_um) / self.um_per_px

    def to_dict(self) -> dict[str, Any]:
        return {"origin_um": [self.x0_um, self.y0_um], "um_per_px": self.um_per_px, "shape": [self.rows, self.cols],
                "convention": "overview pixel (row, col), centres at integers, shows stage x = x0 + col*s, "
                              "y = y0 + row*s"}


@dataclass(frozen=True)
class Placement:
    """One image to place: its centre on the stage, its size in pixels and its pixel -> stage transform."""

    centre_um: tuple[float, float]
    shape: tuple[int, int]
    transform: PixelTransform


def plan_georef(placements: Iterable[Placement], max_side_px: int) -> Georef | None:
    """The overview covering every image, at most ``max_side_px`` on its long side and never finer than
    the finest image pixel. None when there is nothing to place."""
    corners = []
    finest = math.inf
    for p in placements:
        corners.append(np.asarray(p.transform.footprint(p.centre_um, p.shape).exterior.coords))
        finest = min(finest, p.transform.pixel_size_um)
    if not corners:
        return None
    pts = np.concatenate(corners)
    (xmin, ymin), (xmax, ymax) = pts.min(axis=0), pts.max(axis=0)
    s = max(max(xmax - xmin, ymax - ymin) / max_side_px, finest)
    cols = max(1, math.ceil((xmax - xmin) / s - 1e-6))
    rows = max(1, math.ceil((ymax - ymin) / s - 1e-6))
    # Pixel centres at integers: the first pixel's centre is half a pixel inside the edge.
    return Georef(float(xmin + s / 2), float(ymin + s / 2), float(s), rows, cols)


def downsample(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` shrunk by ``factor`` (>= 1) with area averaging, as float32 (H', W', 3)."""
    img = image if image.dtype in (np.uint8, np.uint16) else image.astype(np.float32)
    if factor > 1:  # shrink in the image's own type first: a fraction of the work of converting every pixel
        rows = max(1, round(img.shape[0] / factor))
        cols = max(1, round(img.shape[1] / factor))
        img = cv2.resize(img, (cols, rows), interpolation=cv2.INTER_AREA)
    small = np.asarray(img, np.float32)
    if small.ndim == 2:
        small = np.repeat(small[:, :, None], 3, axis=2)
    return np.ascontiguousarray(small)


class Mosaic:
    """Collects downsampled tiles, then corrects and composes them (`compose`)."""

    def __init__(self, georef: Georef) -> None:
        self.georef = georef
        self._tiles: list[tuple[np.ndarray, Placement]] = []
        self._white = 255.0
        self.flat_field: str = "not corrected (no tiles)"

    def factor(self, placement: Placement) -> float:
        """How much to shrink this image before `add`."""
        return max(1.0, self.georef.um_per_px / placement.transform.pixel_size_um)

    def add(self, small: np.ndarray, placement: Placement, dtype: np.dtype[Any]) -> None:
        """Keep one downsampled tile (from `downsample`) for `compose`."""
        if dtype == np.uint16:
            self._white = 65535.0
        self._tiles.append((small, placement))

    def compose(self) -> np.ndarray:
        """The overview as (rows, cols, 3) uint8 RGB."""
        g = self.georef
        canvas = np.empty((g.rows, g.cols, 3), np.uint8)
        canvas[:1] = BACKGROUND_RGB
        canvas[1:] = canvas[:1]  # row by row: ten times faster than broadcasting three values over every pixel
        tiles = self._flat_corrected()
        lo, hi = self._display_range(tiles)
        for small, placement in tiles:
            img = np.clip((small - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)
            self._paste(canvas, img, placement)
        return canvas

    def _flat_corrected(self) -> list[tuple[np.ndarray, Placement]]:
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for n, (small, _) in enumerate(self._tiles):
            groups[small.shape].append(n)
        out = list(self._tiles)
        corrected = 0
        for members in groups.values():
            if len(members) < MIN_FLAT_TILES:
                continue
            stack = np.stack([self._tiles[n][0] for n in members])
            flat = _median_of_stack(stack)
            sigma = max(1.0, 0.02 * max(flat.shape[:2]))
            flat = cv2.GaussianBlur(flat, (0, 0), sigma)
            gain = flat / np.maximum(flat.reshape(-1, 3).mean(axis=0), 1e-6)
            gain = np.maximum(gain, 0.05)
            for n in members:
                out[n] = (self._tiles[n][0] / gain, self._tiles[n][1])
            corrected += len(members)
        total = len(self._tiles)
        if corrected == total and total:
            self.flat_field = f"median of {total} downsampled tiles"
        elif corrected:
            self.flat_field = f"median flat field for {corrected} of {total} tiles (sizes with >= {MIN_FLAT_TILES})"
        else:
            self.flat_field = f"not corrected ({total} tiles; {MIN_FLAT_TILES} of one size needed)"
        return out

    def _display_range(self, tiles: Sequence[tuple[np.ndarray, Placement]]) -> tuple[float, float]:
        """8-bit tiles keep their levels; deeper ones are stretched between robust percentiles."""
        if self._white <= 255.0 or not tiles:
            return 0.0, 255.0
        sample = np.concatenate([t[0].reshape(-1)[:: max(1, t[0].size // 20000)] for t in tiles])
        lo, hi = np.percentile(sample, [0.5, 99.5])
        return float(lo), float(hi)

    def _paste(self, canvas: np.ndarray, img: np.ndarray, placement: Placement) -> None:
        """Warp one tile into its place on the canvas (only its own bounding box is touched)."""
        rows, cols = placement.shape
        fr, fc = rows / img.shape[0], cols / img.shape[1]
        # Small-tile pixel (r', c') is original pixel ((r'+0.5)·fr - 0.5, (c'+0.5)·fc - 0.5); map three
        # small-tile points through the transform to the overview to get the affine between them.
        src = np.array([[0.0, 0.0], [img.shape[1] - 1.0, 0.0], [0.0, img.shape[0] - 1.0]], np.float32)
        orig_col = (src[:, 0] + 0.5) * fc - 0.5
        orig_row = (src[:, 1] + 0.5) * fr - 0.5
        x, y = placement.transform.pixel_to_stage(orig_row, orig_col, placement.centre_um, placement.shape)
        dr, dc = self.georef.to_px(x, y)
        dst = np.column_stack([dc, dr]).astype(np.float32)
        m = cv2.getAffineTransform(src, dst)
        # The tile's box on the canvas, from its four corners (edges half a small pixel out).
        h, w = img.shape[:2]
        corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]])
        out = corners @ m.T
        c0, r0 = np.floor(out.min(axis=0)).astype(int)
        c1, r1 = np.ceil(out.max(axis=0)).astype(int) + 1
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, canvas.shape[1]), min(r1, canvas.shape[0])
        if c1 <= c0 or r1 <= r0:
            return
        m[0, 2] -= c0
        m[1, 2] -= r0
        size = (int(c1 - c0), int(r1 - r0))
        warped = cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = cv2.warpAffine(np.ones(img.shape[:2], np.uint8), m, size, flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT).astype(bool)
        np.copyto(canvas[r0:r1, c0:c1], warped, where=inside[..., None])  # in place, no gather and scatter


def _median_of_stack(stack: np.ndarray) -> np.ndarray:
    """``np.median(stack, axis=0)`` bit for bit, from a sort: three times faster on a stack of tiles (np.median
    partitions each pixel's few values on its own). NaN sorts last rather than spreading, so a stack holding
    NaN goes to np.median."""
    if np.isnan(stack).any():
        return np.asarray(np.median(stack, axis=0))
    ordered = np.sort(stack, axis=0)
    half = len(ordered) // 2
    median: np.ndarray = ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2
    return median


# ------------------------------------------------------------------------------------------ drawing


def nice_scale_um(width_um: float) -> float:
    """A round scale-bar length (µm) near a fifth of ``width_um``: 1, 2 or 5 times a power of ten."""
    target = max(width_um / 5, 1e-3)
    power = 10.0 ** math.floor(math.log10(target))
    return float(max((m * power for m in (1, 2, 5) if m * power <= target), default=power))


def scale_label(length_um: float) -> str:
    """The scale bar's label in mm: "0.5 mm", "2 mm"."""
    return f"{length_um / 1000:g} mm"


def draw_marks(
    overview: np.ndarray, georef: Georef, marks: Sequence[tuple[float, float, float, tuple[int, int, int]]],
    legend: Sequence[tuple[str, tuple[int, int, int], int]],
) -> np.ndarray:
    """A copy of the RGB overview with a ring per mark (x_um, y_um, radius_um, rgb), a legend
    (label, rgb, count) and a scale bar."""
    out = overview.copy()
    side = max(out.shape[:2])
    thick = max(2, round(side / 900))
    for x, y, radius_um, rgb in marks:
        row, col = georef.to_px(x, y)
        r = max(4 * thick, round(radius_um / georef.um_per_px) + 2 * thick)
        centre = (round(float(col)), round(float(row)))
        cv2.circle(out, centre, r, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.circle(out, centre, r, rgb, thick, cv2.LINE_AA)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.45, side / 2400)
    line = round(26 * scale / 0.6)
    box_h = line * len(legend) + line // 2
    if legend:
        cv2.rectangle(out, (8, 8), (8 + round(170 * scale / 0.6), 8 + box_h), (0, 0, 0), -1)
    for n, (label, rgb, count) in enumerate(legend):
        y = 8 + line * (n + 1) - line // 4
        cv2.circle(out, (8 + line // 2, y - line // 4), max(3, line // 4), rgb, -1, cv2.LINE_AA)
        cv2.putText(out, f"{label}  {count}", (8 + line, y), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    length_um = nice_scale_um(georef.cols * georef.um_per_px)
    length_px = round(length_um / georef.um_per_px)
    x0, y0 = 16, out.shape[0] - 16
    cv2.rectangle(out, (x0 - 4, y0 - line - 10), (x0 + length_px + 4, y0 + 6), (0, 0, 0), -1)
    cv2.rectangle(out, (x0, y0 - thick * 2), (x0 + length_px, y0), (255, 255, 255), -1)
    cv2.putText(out, scale_label(length_um), (x0, y0 - thick * 2 - 6), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def encode(image_rgb: np.ndarray, suffix: str, quality: int = 90) -> bytes:
    """PNG or JPEG bytes of an RGB image."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, data = cv2.imencode(suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"{suffix} encoding failed")
    return bytes(data.tobytes())
