"""Reviewed candidates as labels, so that a lab's own verdicts improve its detectors.

* `review_classification_dataset` (``flakehunter train --from-review RUN_DIR``): a crop around every
  reviewed candidate, in the ``imagefolder`` layout of docs/training.md (``OUT/<class>/<name>.png``).
  With ``labels="layer-class"`` a good candidate is labelled with its layer class (the reviewer
  confirmed it) and a bad one ``reject``; with ``labels="verdict"`` the classes are ``good`` and ``bad``
  (a "worth the trip" classifier). Undecided and favourite-only candidates are not labels.
* `review_label_images` (for ``flakehunter calibrate``): every image holding good candidates with a layer
  count, copied, and a label image of its size, pixel = layer count on each flake's recovered region, 0
  on clearly bare substrate around it, 255 (ignore) elsewhere: DESIGN.md's label-image contract and the
  ``label-images`` dataset layout (``OUT/images/NAME.*`` + ``OUT/labels/NAME.png``).

Crops keep the image's own type (8 or 16 bits) and are written losslessly (PNG).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from flakehunter.candidates import Candidate
from flakehunter.errors import InputError
from flakehunter.report.crops import cut
from flakehunter.report.rundata import ImageInfo, RunData, load_run, resolve

LABEL_MODES = ("layer-class", "verdict")
REJECT = "reject"
IGNORE = 255
SOURCE_FILE = "review-source.json"


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if img.dtype not in (np.uint8, np.uint16):
        img = np.clip(img, 0, 65535).astype(np.uint16)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: cannot write the PNG")


def _reviewed(data: RunData, wanted: tuple[str, ...]) -> dict[str, list[tuple[Candidate, str]]]:
    """(candidate, verdict) per image key, for the candidates whose latest verdict is in ``wanted``."""
    out: dict[str, list[tuple[Candidate, str]]] = defaultdict(list)
    for c in data.candidates:
        v = data.verdicts.get(c.id)
        if v is not None and v.verdict in wanted:
            out[c.image].append((c, v.verdict))
    return out


def _images(data: RunData, keys: Sequence[str]) -> list[tuple[str, ImageInfo]]:
    return [(k, data.image(k) or ImageInfo(key=k, path=resolve(data.run.path, k))) for k in keys]


def _run_name(data: RunData) -> str:
    return str((data.manifest or {}).get("run_id") or data.run.path.name)


def review_classification_dataset(
    run_dirs: Sequence[str | Path], out: str | Path, *, labels: str = "layer-class", crop_px: int = 64,
) -> Path:
    """Write the reviewed candidates of ``run_dirs`` as an imagefolder dataset into ``out``; returns ``out``.

    `InputError` when a run has no candidates file, ``labels`` is unknown, or no run holds a good or bad
    verdict.
    """
    from flakehunter.tiles import read_image

    if labels not in LABEL_MODES:
        raise InputError(f"--review-labels: expected one of {', '.join(LABEL_MODES)}, got {labels!r}")
    if crop_px < 8:
        raise InputError(f"crop size: expected at least 8 pixels, got {crop_px}")
    out = Path(out)
    counts: Counter[str] = Counter()
    unreadable: dict[str, str] = {}
    runs = []
    for run_dir in run_dirs:
        data = load_run(run_dir)
        runs.append(str(data.run.path))
        reviewed = _reviewed(data, ("good", "bad"))
        for key, info in _images(data, list(reviewed)):
            try:
                image, _ = read_image(info.path)
            except InputError as exc:
                unreadable[key] = str(exc)
                continue
            for c, verdict in reviewed[key]:
                name = verdict if labels == "verdict" else (c.layer_class or "unknown") if verdict == "good" else REJECT
                _png(out / name / f"{_run_name(data)}_{c.id}.png", cut(image, c.row, c.col, crop_px))
                counts[name] += 1
    if not counts:
        raise InputError(f"{', '.join(str(r) for r in run_dirs)}: no reviewed candidates (review.jsonl holds no good "
                         "or bad verdict; run flakehunter review RUN_DIR first)")
    (out / SOURCE_FILE).write_text(json.dumps({"runs": runs, "labels": labels, "crop_px": crop_px,
                                               "classes": dict(sorted(counts.items())), "unreadable": unreadable},
                                              indent=2), encoding="utf-8")
    return out


def review_label_images(run_dirs: Sequence[str | Path], out: str | Path) -> list[tuple[Path, Path]]:
    """Write (image, label image) pairs for the good candidates with a layer count; returns the pairs.

    One pair per image holding such candidates: the image itself, copied byte for byte (its metadata
    stays), and a label image of its size: each candidate's recovered region carries its layer count, the
    clearly bare substrate around it 0, everything else 255 (ignore). Whole images, so that a detector
    estimates its background as it does on a scan. A candidate whose region cannot be recovered
    (`flakehunter.report.segment`) is left out; `InputError` when no pair could be made.
    """
    import shutil

    from flakehunter.report.segment import candidate_region
    from flakehunter.tiles import read_image

    out = Path(out)
    pairs: list[tuple[Path, Path]] = []
    for run_dir in run_dirs:
        data = load_run(run_dir)
        reviewed = _reviewed(data, ("good",))
        for key, info in _images(data, list(reviewed)):
            try:
                image, meta = read_image(info.path)
            except InputError:
                continue
            pixel = info.pixel_size_um or meta.pixel_size_um
            label = np.full(image.shape[:2], IGNORE, np.uint8)
            labelled = 0
            for c, _ in reviewed[key]:
                if c.layers is None or not 0 < c.layers < IGNORE:
                    continue
                region = candidate_region(image, c, pixel)
                if region is None:
                    continue
                _paint(label, region.bare, region.row0, region.col0, 0, only_over=IGNORE)
                _paint(label, region.mask, region.row0, region.col0, c.layers)
                labelled += 1
            if not labelled:
                continue
            name = f"{_run_name(data)}_{Path(key).name}"
            image_out = out / "images" / name
            image_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(info.path, image_out)
            label_out = out / "labels" / (name.split(".")[0] + ".png")
            _png(label_out, label)
            pairs.append((image_out, label_out))
    if not pairs:
        raise InputError(f"{', '.join(str(r) for r in run_dirs)}: no good candidate with a layer count whose flake "
                         "could be found in its image")
    return pairs


def _paint(label: np.ndarray, mask: np.ndarray, row0: int, col0: int, value: int, only_over: int | None = None) -> None:
    """Set ``label`` to ``value`` where ``mask`` (placed with its top-left pixel at row0, col0) is true and
    the window lies inside the label; with ``only_over``, only where the label still holds that value."""
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + mask.shape[0], label.shape[0]), min(col0 + mask.shape[1], label.shape[1])
    if r1 <= r0 or c1 <= c0:
        return
    target = label[r0:r1, c0:c1]
    m = mask[r0 - row0:r1 - row0, c0 - col0:c1 - col0]
    if only_over is not None:
        m = m & (target == only_over)
    target[m] = value
