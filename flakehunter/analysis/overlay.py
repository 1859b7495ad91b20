"""Overlays: an image with its detections drawn on it, for a person to check at a glance."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from flakehunter.analysis.detector import Detection
from flakehunter.atomic import atomic_write

#: Long side of an overlay PNG, in pixels.
OVERLAY_SIDE_PX = 2000

# BGR colours per layer count, distinct at a glance; others white.
_COLOURS = {1: (0, 255, 255), 2: (0, 200, 0), 3: (255, 128, 0), 4: (255, 0, 255)}


def to_display(image: np.ndarray) -> np.ndarray:
    """An 8-bit BGR copy of an image (contrast-stretched if it is 16-bit or float)."""
    img = image
    if img.dtype != np.uint8:
        lo, hi = np.percentile(img, [0.5, 99.5])
        img = np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def draw_overlay(
    image: np.ndarray, detections: Sequence[Detection], labels: Sequence[str] | None = None, scale: float = 1.0,
) -> np.ndarray:
    """BGR image with a box, the layer class, score and crystal axis of every detection (their pixel
    coordinates times ``scale``, for an image shrunk by that much)."""
    if scale != 1.0:
        detections = [_scaled(d, scale) for d in detections]
    out = to_display(image)
    thickness = max(1, round(max(out.shape[:2]) / 800))
    for i, d in enumerate(detections):
        colour = _COLOURS.get(d.layers or 0, (255, 255, 255))
        r0, c0, r1, c1 = d.bbox
        cv2.rectangle(out, (c0 - 2, r0 - 2), (c1 + 1, r1 + 1), colour, thickness)
        text = labels[i] if labels else f"{d.layer_class} {d.score:.2f}"
        cv2.putText(out, text, (c0, max(r0 - 5, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colour, thickness)
        if d.orientation_deg is not None:
            length = 0.6 * max(r1 - r0, c1 - c0)
            t = np.radians(d.orientation_deg)
            dc, dr = np.cos(t) * length / 2, np.sin(t) * length / 2
            cv2.line(
                out, (round(d.col - dc), round(d.row - dr)), (round(d.col + dc), round(d.row + dr)), colour, thickness
            )
    return out


def save_overlay(
    path: Path,
    image: np.ndarray,
    detections: Sequence[Detection],
    labels: Sequence[str] | None = None,
    max_side_px: int = OVERLAY_SIDE_PX,
    scale: float = 1.0,
) -> Path:
    """Write the overlay as a PNG (scaled down to ``max_side_px`` on its long side); ``scale`` as in
    `draw_overlay`."""
    out = draw_overlay(image, detections, labels, scale)
    scale = max_side_px / max(out.shape[:2])
    if scale < 1:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".png", out)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        fh.write(data.tobytes())
    return path


def _scaled(d: Detection, scale: float) -> Detection:
    r0, c0, r1, c1 = d.bbox
    box = (int(r0 * scale), int(c0 * scale), max(int(r1 * scale), int(r0 * scale) + 1),
           max(int(c1 * scale), int(c0 * scale) + 1))
    return dataclasses.replace(d, row=d.row * scale, col=d.col * scale, bbox=box)
