"""Analysis windows: a large image analysed as overlapping windows, each flake reported by one of them."""

from __future__ import annotations

import dataclasses

from flakehunter.analysis.detector import Detection
from flakehunter.tiles import ImageMeta

Window = tuple[tuple[int, int, int, int], tuple[float, float, float, float]]


def windows(shape: tuple[int, int], size: int, overlap: int) -> list[Window]:
    """Windows of at most ``size`` px overlapping by at least ``overlap`` px that cover ``shape``: each is
    ((row0, col0, row1, col1), its core (row0, col0, row1, col1)). The cores, split halfway through each
    overlap, partition the image, so a detection belongs to exactly one window."""
    def spans(n: int) -> list[tuple[int, int, float, float]]:
        if n <= size:
            return [(0, n, 0.0, float(n))]
        step = size - overlap
        count = -(-(n - overlap) // step)
        starts = [min(i * step, n - size) for i in range(count)]
        ends = [s + size for s in starts]
        cuts = [0.0, *((starts[i + 1] + ends[i]) / 2 for i in range(count - 1)), float(n)]
        return [(starts[i], ends[i], cuts[i], cuts[i + 1]) for i in range(count)]

    return [((r0, c0, r1, c1), (cr0, cc0, cr1, cc1))
            for r0, r1, cr0, cr1 in spans(shape[0]) for c0, c1, cc0, cc1 in spans(shape[1])]


def from_window(detections: list[Detection], window: Window, shape: tuple[int, int]) -> list[Detection]:
    """Detections of a window in the whole image's pixels, keeping those whose centre lies in the window's core
    (each flake reported by one window)."""
    (r0, c0, r1, c1), (lo_r, lo_c, hi_r, hi_c) = window
    if (r0, c0, r1, c1) == (0, 0, shape[0], shape[1]):
        return detections
    out = []
    for d in detections:
        row, col = d.row + r0, d.col + c0
        if not (lo_r <= row < hi_r and lo_c <= col < hi_c):
            continue
        b = d.bbox
        bbox = (b[0] + r0, b[1] + c0, b[2] + r0, b[3] + c0)
        at_edge = bbox[0] == 0 or bbox[1] == 0 or bbox[2] >= shape[0] or bbox[3] >= shape[1]
        touches = bool(d.touches_border and at_edge)
        out.append(dataclasses.replace(d, row=row, col=col, bbox=bbox, touches_border=touches))
    return out


def add_window(
    into: tuple[list[Detection], ImageMeta, float], found: list[Detection], meta: ImageMeta, window: Window,
    shape: tuple[int, int],
) -> None:
    """Add one window's detections, warnings and flags to its image's."""
    detections, item_meta, _ = into
    item_meta.warnings.extend(w for w in meta.warnings if w not in item_meta.warnings)
    item_meta.flags.update(meta.flags)
    detections += from_window(found, window, shape)
