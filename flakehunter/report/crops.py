"""Candidate crops for the gallery: a window around each flake, scaled to a thumbnail, its crystal axis drawn.

The window is centred on the candidate's pixel (row, col) and three flake diameters wide (48 to 512
pixels); what falls outside the image is black. The axis is drawn through the centre along
``orientation_deg``, turned from the stage frame (where candidates keep it) back into the image frame
through the image's transform, so the line lies along the flake's straight edges as the camera saw them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from flakehunter.analysis.overlay import to_display
from flakehunter.candidates import Candidate
from flakehunter.geometry import PixelTransform
from flakehunter.image_windows import WindowedTiff

THUMB_PX = 192
MIN_WINDOW_PX = 48
MAX_WINDOW_PX = 512
JPEG_QUALITY = 85


def window_px(candidate: Candidate, pixel_size_um: float | None) -> int:
    """Side of the crop window in image pixels: three equivalent diameters, within 48..512."""
    if not pixel_size_um:
        return 128
    diameter_px = candidate.equivalent_diameter_um / pixel_size_um
    return int(min(MAX_WINDOW_PX, max(MIN_WINDOW_PX, round(3 * diameter_px))))


def cut(image: np.ndarray | WindowedTiff, row: float, col: float, side: int) -> np.ndarray:
    """The ``side`` x ``side`` window of ``image`` centred on (row, col), zero-padded past the edges."""
    r0, c0 = round(row) - side // 2, round(col) - side // 2
    out = np.zeros((side, side, *image.shape[2:]), image.dtype)
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + side, image.shape[0]), min(c0 + side, image.shape[1])
    if rr1 > rr0 and cc1 > cc0:
        out[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = image[rr0:rr1, cc0:cc1]
    return out


def image_angle_deg(stage_angle_deg: float, transform: PixelTransform | None) -> float:
    """The image direction, atan2(Δrow, Δcol), that ``transform`` maps to the stage direction
    atan2(Δy, Δx) = ``stage_angle_deg``: the inverse of `PixelTransform.angle_to_stage`."""
    if transform is None:
        return stage_angle_deg
    t = math.radians(stage_angle_deg)
    dr, dc = transform.stage_to_pixel(math.cos(t), math.sin(t), (0.0, 0.0), (0, 0))
    return math.degrees(math.atan2(float(dr), float(dc)))


def thumbnail(crop_bgr: np.ndarray, size_px: int = THUMB_PX) -> np.ndarray:
    """Scale a crop so its long side is ``size_px`` (area averaging down, linear up)."""
    h, w = crop_bgr.shape[:2]
    scale = size_px / max(h, w)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(crop_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)


def draw_axis(thumb_bgr: np.ndarray, angle_deg: float, length_px: float, bgr: tuple[int, int, int]) -> None:
    """Draw a line through the centre of ``thumb_bgr`` along image angle ``angle_deg`` (in place)."""
    h, w = thumb_bgr.shape[:2]
    t = math.radians(angle_deg)
    dc, dr = math.cos(t) * length_px / 2, math.sin(t) * length_px / 2
    p0 = (round((w - 1) / 2 - dc), round((h - 1) / 2 - dr))
    p1 = (round((w - 1) / 2 + dc), round((h - 1) / 2 + dr))
    cv2.line(thumb_bgr, p0, p1, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.line(thumb_bgr, p0, p1, bgr, 2, cv2.LINE_AA)


def candidate_crop(
    image: np.ndarray | WindowedTiff, candidate: Candidate, pixel_size_um: float | None,
    transform: PixelTransform | None, rgb: tuple[int, int, int],
) -> bytes:
    """JPEG bytes of one candidate's gallery crop, with its crystal axis when it has one."""
    side = window_px(candidate, pixel_size_um)
    crop = to_display(cut(image, candidate.row, candidate.col, side))
    thumb = thumbnail(crop)
    if candidate.orientation_deg is not None:
        scale = thumb.shape[1] / side
        diameter = (candidate.equivalent_diameter_um / pixel_size_um) if pixel_size_um else side / 3
        length = max(24.0, 1.2 * diameter * scale)
        draw_axis(thumb, image_angle_deg(candidate.orientation_deg, transform), length, (rgb[2], rgb[1], rgb[0]))
    return jpeg(thumb)


def gradcam_thumbnail(image: np.ndarray) -> bytes:
    """JPEG bytes of a detector's Grad-CAM picture, scaled like the crops."""
    return jpeg(thumbnail(to_display(image)))


def jpeg(bgr: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("JPEG encoding failed")
    return bytes(data.tobytes())
