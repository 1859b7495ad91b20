"""A run directory as the report, the review server and the exports see it.

Scan, detect and watch directories share one layout (docs/run-directory.md). From the manifest come the
analysed images (with their stage position and pixel size where known) and the calibration; from
``candidates.jsonl`` the candidates, with any extra fields a detector added (``gradcam``, ``bbox``,
``outline_px``, ...), which `Candidate` itself does not carry; from ``review.jsonl`` the latest verdicts.
A run without a manifest (an interrupted first write) is read from its candidates alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from flakehunter.candidates import Candidate
from flakehunter.errors import InputError
from flakehunter.geometry import PixelTransform
from flakehunter.report.verdicts import Verdict, read_verdicts
from flakehunter.run.layout import RunDirectory

_CANDIDATE_FIELDS = {f.name for f in fields(Candidate)}
#: Manifest item statuses of images that are not (yet) on disk as a picture of the chip.
_NOT_IMAGED = ("planned", "pending", "quarantined", "deferred")


@dataclass
class ImageInfo:
    """One analysed image: its run key, the file, and where it was taken (None where nobody says)."""

    key: str
    path: Path
    status: str = "done"
    x_um: float | None = None
    y_um: float | None = None
    pixel_size_um: float | None = None
    warnings: list[str] = field(default_factory=list)
    shape: tuple[int, int] | None = None  # (rows, cols), known once read

    @property
    def positioned(self) -> bool:
        return self.x_um is not None and self.y_um is not None


@dataclass
class RunData:
    """Everything a report needs from one run directory."""

    run: RunDirectory
    manifest: dict[str, Any] | None
    candidates: list[Candidate]
    extras: dict[int, dict[str, Any]]
    images: list[ImageInfo]
    verdicts: dict[int, Verdict]
    transform: PixelTransform | None = None  # the run's calibrated transform (scan); None: per image
    _index: dict[str, ImageInfo] = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str:
        return str((self.manifest or {}).get("kind") or ("scan" if self.run.tiles.is_dir() else "detect"))

    @property
    def ids(self) -> set[int]:
        return {c.id for c in self.candidates}

    def image(self, key: str) -> ImageInfo | None:
        """The analysed image a candidate's ``image`` names, if the run lists it."""
        if len(self._index) != len(self.images):
            self._index = {i.key: i for i in self.images}
        return self._index.get(key)

    def transform_for(self, info: ImageInfo) -> PixelTransform | None:
        """The pixel -> stage transform that localised this image's candidates (as the analysis step chose it)."""
        if self.transform is not None:
            return self.transform
        return PixelTransform(info.pixel_size_um) if info.pixel_size_um else None


def resolve(run_dir: Path, name: str) -> Path:
    """A file named by the run (relative to the run directory, or absolute)."""
    path = Path(name)
    return path if path.is_absolute() else run_dir / path


def read_records(path: Path) -> tuple[list[Candidate], dict[int, dict[str, Any]]]:
    """Candidates of a ``candidates.jsonl`` and, per id, the record's fields that `Candidate` does not have.

    Torn or malformed lines are skipped, as `flakehunter.candidates.read_candidates` does.
    """
    candidates: list[Candidate] = []
    extras: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
                cand = Candidate.from_record(record)
            except (json.JSONDecodeError, TypeError, AttributeError):
                continue
            candidates.append(cand)
            extra = {k: v for k, v in record.items() if k not in _CANDIDATE_FIELDS}
            if extra:
                extras[cand.id] = extra
    return candidates, extras


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory; `InputError` (exit 2) if it holds no candidates file."""
    run = RunDirectory(run_dir)
    if not run.path.is_dir():
        raise InputError(f"{run.path}: no such run directory")
    if not run.candidates_jsonl.exists():
        raise InputError(f"{run.path}: no {run.candidates_jsonl.name}; is this a scan, detect or watch run directory?")
    candidates, extras = read_records(run.candidates_jsonl)
    manifest = _read_manifest(run)
    transform = _run_transform(manifest)
    images = _images(run, manifest, candidates, transform)
    return RunData(run, manifest, candidates, extras, images, read_verdicts(run.review), transform)


def _read_manifest(run: RunDirectory) -> dict[str, Any] | None:
    try:
        data = json.loads(run.manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{run.manifest}: not a readable manifest ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{run.manifest}: not a manifest (expected a JSON object)")
    return data


def _run_transform(manifest: dict[str, Any] | None) -> PixelTransform | None:
    t = ((manifest or {}).get("calibration") or {}).get("transform") or {}
    if not t.get("pixel_size_um"):
        return None
    return PixelTransform(
        float(t["pixel_size_um"]), float(t.get("rotation_deg") or 0.0),
        bool(t.get("flip_rows", False)), bool(t.get("flip_cols", False)),
    )


def _images(
    run: RunDirectory, manifest: dict[str, Any] | None, candidates: list[Candidate], transform: PixelTransform | None
) -> list[ImageInfo]:
    """The images the run took or was given (manifest items, whatever their analysis gave), or, without a
    manifest, those the candidates name. Positions come from the manifest (scan tiles) or the file's own
    metadata."""
    from flakehunter.tiles import read_geometry

    default_pixel = transform.pixel_size_um if transform else None
    out: list[ImageInfo] = []
    if manifest is not None:
        for item in manifest.get("items") or []:
            # Every image that exists belongs on the overview, analysed or not (a tile whose analysis
            # failed is still part of the chip); files not taken yet or refused as unreadable do not.
            if item.get("status") in _NOT_IMAGED:
                continue
            stage = item.get("stage_um") or [item.get("x_um"), item.get("y_um")]
            info = ImageInfo(
                key=str(item["key"]), path=resolve(run.path, str(item.get("file") or item["key"])),
                status=str(item.get("status")),
                x_um=_float(stage[0]), y_um=_float(stage[1]),
                pixel_size_um=_float(item.get("pixel_size_um")) or default_pixel,
                warnings=list(item.get("warnings") or []),
            )
            out.append(info)
    else:
        for key in dict.fromkeys(c.image for c in candidates):
            out.append(ImageInfo(key=key, path=resolve(run.path, key), pixel_size_um=default_pixel))
    for info in out:
        if info.positioned and info.pixel_size_um:
            continue
        found = read_geometry(info.path)  # the header only: what detect/watch read for the position
        if found is None:
            continue
        info.shape, meta = found
        if not info.positioned and meta.x_um is not None and meta.y_um is not None:
            info.x_um, info.y_um = meta.x_um, meta.y_um
        info.pixel_size_um = info.pixel_size_um or meta.pixel_size_um
    return out


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
