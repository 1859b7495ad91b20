"""Material profiles: per-layer contrast distributions measured on a particular microscope.

A profile holds, for each labelled layer count, the mean and covariance of the RGB contrast
C = I/background − 1 seen on one setup (oxide, lamp, camera). `flakehunter calibrate` fits one
from 3–5 labelled images (label images: pixel value = layer count, 0 substrate, 255 ignore) or
converts the Gaussian-mixture parameters of the RWTH 2DMatGMM system; detectors use it by name or
path (``profile:`` option, ``--profile``) instead of the thin-film model at the nominal oxide.

Profiles are JSON. A name is looked up as ``NAME.json`` in ``$FLAKEHUNTER_PROFILES`` and then in
``~/.local/share/flakehunter/profiles``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flakehunter.atomic import write_json_atomic
from flakehunter.errors import InputError
from flakehunter.materials import Material

PROFILE_FORMAT = "flakehunter.material-profile"
IGNORE_LABEL = 255


@dataclass(frozen=True)
class LayerStats:
    """Contrast distribution of one layer count: mean (channels,), covariance (channels, channels)."""

    layers: int
    mean: np.ndarray
    cov: np.ndarray
    pixels: int = 0


@dataclass(frozen=True)
class MaterialProfile:
    material: str
    name: str
    classes: dict[int, LayerStats]
    oxide_nm: float | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(next(iter(self.classes.values())).mean.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "version": 1,
            "material": self.material,
            "name": self.name,
            "channels": ["R", "G", "B"][: self.channels] if self.channels == 3 else ["mono"],
            "oxide_nm": self.oxide_nm,
            "layers": {
                str(n): {"mean": s.mean.round(5).tolist(), "cov": s.cov.round(7).tolist(), "pixels": s.pixels}
                for n, s in sorted(self.classes.items())
            },
            "source": self.source,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, data: Any, where: str = "profile") -> MaterialProfile:
        try:
            if data.get("format") != PROFILE_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {PROFILE_FORMAT!r}")
            classes = {}
            for key, rec in data["layers"].items():
                n = int(key)
                mean = np.asarray(rec["mean"], float)
                cov = np.asarray(rec["cov"], float)
                if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
                    raise ValueError(f"layers.{key}: mean and cov shapes do not agree")
                classes[n] = LayerStats(n, mean, cov, int(rec.get("pixels", 0)))
            if not classes:
                raise ValueError("layers: no layer classes")
            return cls(data["material"], data.get("name", "profile"), classes, data.get("oxide_nm"),
                       data.get("source", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{where}: not a material profile ({exc})") from None


def profile_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("FLAKEHUNTER_PROFILES"):
        dirs.append(Path(os.environ["FLAKEHUNTER_PROFILES"]))
    dirs.append(Path.home() / ".local" / "share" / "flakehunter" / "profiles")
    return dirs


def load_profile(name_or_path: str | Path, base_dir: Path | None = None) -> MaterialProfile:
    """A profile by path (absolute, or relative to ``base_dir``) or by name in the profile folders."""
    candidate = Path(name_or_path).expanduser()
    paths = [candidate] if candidate.is_absolute() else [*([base_dir / candidate] if base_dir else []), candidate]
    paths += [d / f"{name_or_path}.json" for d in profile_dirs()]
    for path in paths:
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"{path}: not a readable profile ({exc})") from None
            return MaterialProfile.from_dict(data, str(path))
    searched = ", ".join(str(d) for d in profile_dirs())
    raise InputError(f"profile {name_or_path!r}: no such file, and no {name_or_path}.json in {searched}")


def fit_profile(
    material: Material,
    contrasts: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    name: str,
    nominal_oxide_nm: float,
    erode_px: int = 2,
    max_layers: int = 10,
    source: dict[str, Any] | None = None,
) -> MaterialProfile:
    """Per-layer contrast statistics from contrast images and their label images.

    Pixels within ``erode_px`` of a region's edge are left out (the blurred rim is not the layer's
    contrast); labels above ``max_layers`` (thick flakes) are not part of a thin-layer profile. The
    oxide thickness whose thin-film curve best matches the means is recorded too.
    """
    import cv2

    from flakehunter.plugins.contrast.calibration import fit_oxide

    samples: dict[int, list[np.ndarray]] = {}
    kernel = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8)
    for contrast, label in zip(contrasts, labels, strict=True):
        if label.shape != contrast.shape[:2]:
            raise InputError(f"label image is {label.shape}, image is {contrast.shape[:2]}: sizes must match")
        for value in np.unique(label):
            n = int(value)
            if n == 0 or n == IGNORE_LABEL or n > max_layers:
                continue
            inner = cv2.erode((label == value).astype(np.uint8), kernel).astype(bool)
            if inner.any():
                samples.setdefault(n, []).append(contrast[inner])
    if not samples:
        raise InputError("labels: no labelled flake pixels (values 1..254) away from region edges")
    classes = {}
    for n, chunks in sorted(samples.items()):
        pix = np.concatenate(chunks).astype(float)
        cov = np.cov(pix, rowvar=False) if len(pix) > 1 else np.zeros((pix.shape[1], pix.shape[1]))
        classes[n] = LayerStats(n, pix.mean(axis=0), np.atleast_2d(cov), len(pix))
    means = np.array([s.mean for s in classes.values()])
    fit = fit_oxide(means, np.ones(len(means)), material, nominal_oxide_nm, min_inliers=1, tolerance=0.1)
    return MaterialProfile(
        material.name, name, classes, round(fit.oxide_nm, 2),
        {"created": datetime.now(UTC).isoformat(timespec="seconds"), **(source or {})},
    )


def profile_from_gmm(path: str | Path, material: str, name: str | None = None) -> MaterialProfile:
    """Convert 2DMatGMM parameters (per class: "contrast" {b, g, r}, "covariance_matrix" in B, G, R
    order) into a profile (R, G, B order)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        order = [2, 1, 0]  # B, G, R -> R, G, B
        classes = {}
        for key, rec in data.items():
            c = rec["contrast"]
            mean = np.array([c["r"], c["g"], c["b"]], float)
            cov = np.asarray(rec["covariance_matrix"], float)[np.ix_(order, order)]
            classes[int(key)] = LayerStats(int(key), mean, cov, 0)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a 2DMatGMM parameter file ({exc})") from None
    return MaterialProfile(material, name or path.stem, classes, None, {"converted_from": str(path)})
