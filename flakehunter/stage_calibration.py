"""Measure the camera's pixel size, rotation and flips by moving the stage and registering images.

The stage moves by known displacements d (µm) around a point with structure under the objective; each
frame is registered against the first by phase correlation (scikit-image's upsampled DFT, 1/20 pixel),
giving the image-content shift s = (Δcol, Δrow) in pixels. With the transform of DESIGN.md §4 (pixel
(row, col) of a tile centred at C lies at C + A·(col − W/2, row − H/2)), content at a fixed stage point
moves by s = −A⁻¹·d when the stage moves by d, so A = −D·S⁺ by least squares over all moves. A is
``pixel_size · R(rotation) · diag(±1, ±1)``: its determinant gives the pixel size and whether one image
axis is flipped, its first column the rotation (the representation with |rotation| ≤ 90° is chosen,
because flipping rows is flipping columns plus half a turn).

Before registration each frame is reduced to grey and band-pass filtered (see `prepare`), so vignetting
and shading, which stay put while the sample moves, do not pull the shift towards zero.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from flakehunter.devices import Camera, Stage
from flakehunter.errors import HardwareError
from flakehunter.geometry import PixelTransform

log = logging.getLogger(__name__)

#: Registration precision: 1/UPSAMPLE pixel (0.05 px; the measured registration errors are about that).
UPSAMPLE = 20


@dataclass
class StageCalibration:
    """The measured transform and how well the moves agree with it."""

    pixel_size_um: float
    rotation_deg: float
    flip_rows: bool
    flip_cols: bool
    matrix_um_per_px: np.ndarray  # columns: stage µm per pixel step along col, along row
    residual_px: float  # RMS disagreement between the measured shifts and the fitted transform
    aspect: float  # |col step| / |row step|: 1 for square pixels
    skew_deg: float  # departure of the image axes from perpendicular
    moves: list[dict[str, Any]] = field(default_factory=list)

    @property
    def transform(self) -> PixelTransform:
        return PixelTransform(self.pixel_size_um, self.rotation_deg, self.flip_rows, self.flip_cols)

    def optics(self) -> dict[str, Any]:
        """The ``optics:`` values to write into a config."""
        return {
            "pixel_size_um": float(f"{self.pixel_size_um:.5g}"),
            "rotation_deg": round(self.rotation_deg, 3),
            "flip_rows": self.flip_rows,
            "flip_cols": self.flip_cols,
        }


def prepare(image: np.ndarray) -> np.ndarray:
    """Grey, float, band-passed and edge-tapered, ready for phase correlation.

    A 1-pixel Gaussian takes out shot noise; subtracting a 10-pixel one takes out illumination, which stays
    put while the sample moves; a Tukey window (tapering the outer 10 % on each side) keeps the frame's
    own border, identical in both crops, from pulling the shift towards a whole pixel. Measured on the
    simulator over 100 registrations: a full Hann window let noise win once (1.1 px), no window biased by
    up to 0.6 px, this taper stayed within 0.13 px.
    """
    grey = np.asarray(image, np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    band = cv2.GaussianBlur(grey, (0, 0), 1.0) - cv2.GaussianBlur(grey, (0, 0), 10.0)
    window = np.outer(_tukey(grey.shape[0]), _tukey(grey.shape[1])).astype(np.float32)
    return band * window


def _tukey(n: int, alpha: float = 0.2) -> np.ndarray:
    """A Tukey window: flat, with cosine tapers over ``alpha / 2`` of the length at each end."""
    x = np.linspace(0.0, 1.0, n)
    w = np.ones(n)
    left, right = x < alpha / 2, x > 1 - alpha / 2
    w[left] = 0.5 * (1 + np.cos(np.pi * (2 * x[left] / alpha - 1)))
    w[right] = 0.5 * (1 + np.cos(np.pi * (2 * x[right] / alpha - 2 / alpha + 1)))
    return w


def image_shift(
    reference: np.ndarray, moved: np.ndarray, predicted: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """(Δrow, Δcol, error) of the content of ``moved`` relative to ``reference``, in pixels.

    Content at (row, col) of ``reference`` lies at (row + Δrow, col + Δcol) of ``moved``. Without a
    prediction the whole frames are registered (robust for small shifts). With one, the region the two
    frames should share is cut from each and only the remaining small shift is measured, so content that
    is in one frame only does not pull the estimate.
    """
    from skimage.registration import phase_cross_correlation

    if predicted is None:
        shift, error, _ = phase_cross_correlation(
            prepare(moved), prepare(reference), upsample_factor=UPSAMPLE, normalization=None
        )
        # (moved, reference) gives the shift that registers reference onto moved: the content's shift.
        return float(shift[0]), float(shift[1]), float(error)
    rows, cols = reference.shape[:2]
    dr, dc = round(predicted[0]), round(predicted[1])
    r0, r1 = max(0, -dr), min(rows, rows - dr)
    c0, c1 = max(0, -dc), min(cols, cols - dc)
    if r1 - r0 < 32 or c1 - c0 < 32:
        raise HardwareError(f"stage calibration: a move shifts the image by ({dr}, {dc}) px, leaving no overlap")
    ref_crop = reference[r0:r1, c0:c1]
    moved_crop = moved[r0 + dr : r1 + dr, c0 + dc : c1 + dc]
    shift, error, _ = phase_cross_correlation(
        prepare(moved_crop), prepare(ref_crop), upsample_factor=UPSAMPLE, normalization=None
    )
    return dr + float(shift[0]), dc + float(shift[1]), float(error)


def decompose(matrix: np.ndarray) -> tuple[float, float, bool, bool, float, float]:
    """(pixel size, rotation°, flip_rows, flip_cols, aspect, skew°) of a 2x2 µm-per-pixel matrix."""
    col_step, row_step = matrix[:, 0], matrix[:, 1]
    det = float(np.linalg.det(matrix))
    pixel = math.sqrt(abs(det))
    aspect = float(np.linalg.norm(col_step) / np.linalg.norm(row_step))
    cos_angle = float(np.dot(col_step, row_step) / (np.linalg.norm(col_step) * np.linalg.norm(row_step)))
    skew = 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, abs(cos_angle)))))
    if det > 0:  # no flip, or both (= half a turn)
        rotation = math.degrees(math.atan2(col_step[1], col_step[0]))
        return pixel, rotation, False, False, aspect, skew
    # One axis flipped: flip_cols with θ, or flip_rows with θ + 180°; keep the smaller |θ|.
    theta_cols = math.degrees(math.atan2(-row_step[0], row_step[1]))
    if abs(theta_cols) <= 90.0:
        return pixel, theta_cols, False, True, aspect, skew
    theta_rows = math.degrees(math.atan2(col_step[1], col_step[0]))
    return pixel, theta_rows, True, False, aspect, skew


def default_moves(step_um: float) -> list[tuple[float, float]]:
    """Eight displacements: ± along x and y, and the four diagonals (at 0.7 of the step)."""
    d = step_um * math.sqrt(0.5)
    return [(step_um, 0.0), (-step_um, 0.0), (0.0, step_um), (0.0, -step_um), (d, d), (-d, d), (d, -d), (-d, -d)]


def structure_score(image: np.ndarray) -> float:
    """How much the registration has to hold on to: the band-passed frame's RMS."""
    band = prepare(image)
    return float(np.sqrt(np.mean(band * band)))


def find_structure(
    stage: Stage, camera: Camera, centre_um: tuple[float, float], spacing_um: float, *, z_um: float | None = None,
    grid: int = 3,
) -> tuple[float, float]:
    """The position, among a ``grid`` x ``grid`` lattice ``spacing_um`` apart around ``centre_um``, whose
    frame has the most structure (bare substrate cannot be registered; flakes and dust can)."""
    offsets = [(i - (grid - 1) / 2) * spacing_um for i in range(grid)]
    best, best_score = centre_um, -1.0
    for dy in offsets:
        for dx in offsets:
            x, y = centre_um[0] + dx, centre_um[1] + dy
            try:
                stage.limits.check(x, y, z_um, device="calibration survey")
            except HardwareError:
                continue
            stage.move_to_um(x, y, z_um)
            score = structure_score(camera.snap())
            if score > best_score:
                best, best_score = (x, y), score
    log.info("stage calibration: most structure at (%.0f, %.0f) µm (score %.3f)", best[0], best[1], best_score)
    return best


def _fit(displacements: list[tuple[float, float]], shifts: list[tuple[float, float]]) -> tuple[np.ndarray, float]:
    """A (µm per pixel) from d = −A·s by least squares, and the RMS misfit in pixels."""
    d = np.asarray(displacements, float).T  # 2 x N, stage µm
    s = np.asarray(shifts, float).T  # 2 x N, (Δcol, Δrow) pixels
    matrix = -d @ np.linalg.pinv(s)
    predicted = -np.linalg.inv(matrix) @ d
    return matrix, float(np.sqrt(np.mean(np.sum((predicted - s) ** 2, axis=0))))


def calibrate_stage(
    stage: Stage,
    camera: Camera,
    centre_um: tuple[float, float],
    step_um: float,
    *,
    z_um: float | None = None,
    moves: list[tuple[float, float]] | None = None,
    max_residual_px: float = 0.5,
) -> StageCalibration:
    """Move around ``centre_um`` and fit the transform (see the module docstring).

    First four small moves (a fifth of ``step_um``), registered on whole frames, give a rough transform;
    it predicts the shifts of the full ``moves`` (default: `default_moves`), which are then measured on
    the overlapping parts of the frames; a move whose measurement misses the prediction by more than 1.5 px
    is dropped (the rough transform predicts to about 0.5 px). Raises `HardwareError` when fewer than four
    moves remain, or when the shifts disagree with any single transform by more than ``max_residual_px``
    (too little structure, a slipping stage, a wrong step).
    """
    moves = moves or default_moves(step_um)
    x0, y0 = centre_um
    stage.move_to_um(x0, y0, z_um)
    reference = camera.snap()

    def shift_at(dx: float, dy: float, predicted: tuple[float, float] | None) -> tuple[float, float, float]:
        stage.move_to_um(x0 + dx, y0 + dy, z_um)
        return image_shift(reference, camera.snap(), predicted)

    small = step_um / 5
    rough_d = [(small, 0.0), (-small, 0.0), (0.0, small), (0.0, -small)]
    rough_s = []
    for dx, dy in rough_d:
        drow, dcol, _ = shift_at(dx, dy, None)
        rough_s.append((dcol, drow))
    rough, rough_residual = _fit(rough_d, rough_s)
    if rough_residual > 2.0:
        stage.move_to_um(x0, y0, z_um)
        raise HardwareError(
            f"stage calibration at ({x0:.0f}, {y0:.0f}) µm: small moves of {small:.1f} µm gave inconsistent image "
            f"shifts ({rough_residual:.1f} px RMS); pick a spot with more structure (--at X,Y)"
        )
    displacements, shifts, records = [], [], []
    for dx, dy in moves:
        dcol_p, drow_p = -np.linalg.inv(rough) @ np.array([dx, dy])
        drow, dcol, error = shift_at(dx, dy, (float(drow_p), float(dcol_p)))
        # A move that carries the structure out of the field cannot be registered; the rough transform
        # predicts every shift to a pixel or so, so a measurement far from it is dropped, not averaged in.
        miss = float(np.hypot(dcol - dcol_p, drow - drow_p))
        used = miss <= 1.5
        if used:
            displacements.append((dx, dy))
            shifts.append((dcol, drow))
        records.append({"dx_um": round(dx, 3), "dy_um": round(dy, 3), "dcol_px": round(dcol, 3),
                        "drow_px": round(drow, 3), "error": round(error, 4), "used": used})
    stage.move_to_um(x0, y0, z_um)
    if len(displacements) < 4 or np.linalg.matrix_rank(np.asarray(displacements)) < 2:
        raise HardwareError(
            f"stage calibration at ({x0:.0f}, {y0:.0f}) µm: only {len(displacements)} of {len(moves)} moves "
            f"could be registered; pick a spot with more structure (--at X,Y) or a smaller --step-um"
        )
    matrix, residual = _fit(displacements, shifts)
    pixel, rotation, flip_rows, flip_cols, aspect, skew = decompose(matrix)
    if residual > max_residual_px:
        raise HardwareError(
            f"stage calibration at ({x0:.0f}, {y0:.0f}) µm: the measured image shifts disagree with any single "
            f"transform by {residual:.2f} px RMS (limit {max_residual_px:g}); pick a spot with more structure "
            f"(--at X,Y) or a smaller --step-um"
        )
    log.info("stage calibration: %.5f µm/px, rotation %.3f°, flips rows=%s cols=%s, residual %.3f px",
             pixel, rotation, flip_rows, flip_cols, residual)
    return StageCalibration(pixel, rotation, flip_rows, flip_cols, matrix, residual, aspect, skew, records)


# -- writing the result into a config file --------------------------------------------------------------


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def update_optics_text(text: str, values: dict[str, Any]) -> str:
    """``text`` (a config's YAML) with ``optics:`` keys set to ``values``, everything else untouched.

    Handles a block section (keys replaced in place, their comments kept, missing keys added), a flow
    section (``optics: {...}`` rewritten with the same keys plus the new values) and no section (one is
    appended). The caller checks the result parses to the same document apart from ``optics``.
    """
    import re

    import yaml

    lines = text.splitlines(keepends=True)
    head = next((i for i, line in enumerate(lines) if re.match(r"^optics\s*:", line)), None)
    newline = "\n" if not lines or lines[-1].endswith("\n") else ""
    if head is None:
        body = ", ".join(f"{k}: {_format(v)}" for k, v in values.items())
        return text + newline + f"optics: {{{body}}}\n"
    rest = lines[head].split(":", 1)[1]
    if rest.strip().startswith("{"):
        # Flow mapping, possibly over several lines: find where the braces balance.
        end, depth = head, 0
        for end in range(head, len(lines)):
            segment = lines[end] if end > head else rest
            depth += segment.split("#", 1)[0].count("{") - segment.split("#", 1)[0].count("}")
            if depth <= 0:
                break
        block = "".join(lines[head : end + 1])
        current = yaml.safe_load(block).get("optics") or {}
        merged = {**current, **values}
        tail = lines[end].rstrip("\n")
        comment = ""
        if "#" in tail.rsplit("}", 1)[-1]:
            comment = "  #" + tail.rsplit("}", 1)[-1].split("#", 1)[1]
        body = ", ".join(f"{k}: {_format(v)}" for k, v in merged.items())
        lines[head : end + 1] = [f"optics: {{{body}}}{comment}\n"]
        return "".join(lines)
    # Block mapping: the indented lines after the header.
    end = head + 1
    indent = None
    while end < len(lines):
        line = lines[end]
        if line.strip() and not line.lstrip().startswith("#") and not line[0].isspace():
            break
        if indent is None and line.strip() and not line.lstrip().startswith("#"):
            indent = line[: len(line) - len(line.lstrip())]
        end += 1
    indent = indent or "  "
    todo = dict(values)
    last_content = head  # new keys go after the block's last line (a nested list included)
    for i in range(head + 1, end):
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            last_content = i
        m = re.match(rf"^{re.escape(indent)}([A-Za-z_][\w]*)\s*:(\s*)([^#\n]*?)(\s*#.*)?$", lines[i].rstrip("\n"))
        if m is None:
            continue
        key = m.group(1)
        if key in todo:
            comment = m.group(4) or ""
            lines[i] = f"{indent}{key}: {_format(todo.pop(key))}{comment}\n"
    added = [f"{indent}{k}: {_format(v)}\n" for k, v in todo.items()]
    if not lines[last_content].endswith("\n"):
        lines[last_content] += "\n"
    lines[last_content + 1 : last_content + 1] = added
    return "".join(lines)


def write_optics(path: Any, values: dict[str, Any]) -> str:
    """Write ``values`` into the ``optics:`` section of the config at ``path``, atomically.

    Everything else in the file (other sections, comments, order) is kept byte for byte; the new text
    is checked to parse to the same document with only ``optics`` changed before it replaces the file.
    Returns the new text.
    """
    from pathlib import Path

    import yaml

    from flakehunter.atomic import write_text_atomic
    from flakehunter.errors import ConfigError

    path = Path(path)
    old_text = path.read_text(encoding="utf-8")
    new_text = update_optics_text(old_text, values)
    old, new = yaml.safe_load(old_text) or {}, yaml.safe_load(new_text) or {}
    expected = {**old, "optics": {**(old.get("optics") or {}), **values}}
    if new != expected:
        raise ConfigError(path, "optics", "could not update the section in place; edit it by hand to: "
                          + ", ".join(f"{k}: {_format(v)}" for k, v in values.items()))
    write_text_atomic(path, new_text)
    return new_text
