"""The ``cnn-thickness`` detector: a U-Net labels every pixel substrate, 1L, 2L, 3L, few, bulk or junk.

Per image (several at once, `segment`): the contrast on the analysis grid (`training.segment_input`), the
network's class probabilities, and its regions (`segmentation.regions`). Then:

* **after another detector** (``contrast,cnn-thickness``), each candidate before it is looked at where it
  lies: junk (residue, dust, scratch, a thick flake's rim) with probability ≥ ``reject_junk`` is rejected; an
  unclassified ("thin") candidate takes the network's layer class; where the network's class and the ladder's
  layer count disagree, the candidate says so (``extra["cnn_agrees"] = False``, ``extra["cnn_class"]``) and
  its score drops by ``disagree_factor``;
* thin regions that no candidate before it covers, with probability ≥ ``add_threshold``, become candidates of
  their own (``extra["cnn_only"] = True``) where the scan's ladder, as the detectors before it report it
  (`ladder.RungBook`: the contrast of the candidates they classified, per setup), puts them within
  ``add_max_distance`` spreads of the rung the network names too;
* alone (or on images where no detector before it classified anything), the ladder is the one it learns
  itself from the network's thin regions (`own_ladder`, on the first ``calibration_images`` images before
  detecting, then as images come), and thin regions with probability ≥ ``alone_threshold`` are candidates;
  without any ladder the network's own class is used.

Runs on the GPU with mixed precision when there is one (``device: auto``), the CPU otherwise; the model is
loaded once per process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

from flakehunter.analysis.detector import Detection, DetectionContext
from flakehunter.plugins.cnn.ladder import RungBook
from flakehunter.plugins.cnn.model_store import choose_device, load_model, resolve_weights
from flakehunter.plugins.cnn.options import ThicknessOptions
from flakehunter.plugins.cnn.own_ladder import OwnLadders
from flakehunter.plugins.cnn.segmentation import (
    FEW,
    JUNK,
    THIN,
    Region,
    fingerprint,
    regions,
    segment,
    shared_grid,
)
from flakehunter.tiles import ImageMeta
from flakehunter.training.segment_input import CLASSES, GridContrast


class CnnThicknessDetector:
    """Segmentation network as a detector, alone or after the contrast detector (see the module docstring)."""

    Options = ThicknessOptions
    name = "cnn-thickness"

    def __init__(self, options: ThicknessOptions, context: DetectionContext) -> None:
        self.options = options
        self.context = context
        self.device = choose_device(context.device, self.name)
        self.model = load_model(resolve_weights(options.weights, "thickness", context.config_dir), self.device,
                                "segment")
        if list(self.model.classes) != list(CLASSES):
            raise ValueError(f"weights: classes {self.model.classes} are not {list(CLASSES)}")
        self.batch_size = options.batch_size or (16 if self.device == "cuda" else 1)
        self.targets = tuple(context.material.target_layers)
        self.rungs = RungBook()
        self.own = OwnLadders(context.material, context.oxide_nm)
        self._calibrated = False
        self._pooled: set[str] = set()  # images already pooled into the own ladders
        self._held: dict[str, np.ndarray] = {}  # probabilities of calibration images, until they are detected

    # -- the StatefulDetector contract -------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"calibrated": self._calibrated, "pooled": sorted(self._pooled), **self.rungs.state(),
                **self.own.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.rungs.load_state(state)
        self.own.load_state(state)
        self._calibrated = bool(state.get("calibrated", self._calibrated))
        self._pooled = set(state.get("pooled") or [])

    # -- the CalibratingDetector contract ----------------------------------------------------------
    @property
    def calibration_images(self) -> int:
        return self.options.calibration_images

    def calibration_needed(self) -> bool:
        return not self._calibrated

    def calibrate(self, samples: Iterable[tuple[np.ndarray, ImageMeta]]) -> dict[str, Any]:
        """Learn the own ladders from the network's thin regions on ``samples`` (kept for their detection)."""
        pairs = list(samples)
        grids = [shared_grid(im, m.pixel_size_um or self.context.pixel_size_um) for im, m in pairs]
        probs = segment(self.model, grids, max_batch=max(self.batch_size, 1))
        for (image, meta), grid, p in zip(pairs, grids, probs, strict=True):
            key = fingerprint(image)
            self._held[key] = p.astype(np.float16)
            self._learn(key, grid, p, image, meta)
        self._calibrated = True
        return self.calibration_report()

    def calibration_report(self) -> dict[str, Any]:
        setups = []
        for i, key in enumerate(self.own.keys):
            fit = self.own.fit(i)
            setups.append({"setup": i, "shape": key["shape"], "images": self.own.learners[i].images,
                           **fit.describe(self.targets)})
        return {"detector": self.name, "own_ladders": setups,
                "upstream_setups": sorted(self.rungs.points)}

    def _learn(self, key: str, grid: GridContrast, probs: np.ndarray, image: np.ndarray, meta: ImageMeta) -> int:
        """Pool an image's thin regions into its setup's own ladder (once per image); returns the setup index."""
        pixel_um = meta.pixel_size_um or self.context.pixel_size_um
        setup = self.own.setup_of(grid, 1 if image.ndim == 2 else image.shape[2], pixel_um)
        if key in self._pooled:
            return setup
        self._pooled.add(key)
        found, _ = regions(probs, min_area=2)
        thin = [r for r in found if r.kind == "thin"]
        area_um2 = (pixel_um or 1.0) ** 2 * grid.factor**2
        points = np.array([_interior_median(grid, r) for r in thin]).reshape(-1, 3)
        weights = np.array([r.confidence() * float(np.clip(r.area * area_um2 / 200.0, 0.05, 1.0)) for r in thin])
        floor = max(0.004, float(np.sqrt(np.mean(grid.noise**2))))
        self.own.add(setup, points, weights, floor)
        return setup

    # -- detection ------------------------------------------------------------------------------
    def detect(self, image: np.ndarray, meta: ImageMeta, detections: list[Detection]) -> list[Detection]:
        return self.detect_batch([image], [meta], [detections])[0]

    def detect_batch(self, images: Sequence[np.ndarray], metas: Sequence[ImageMeta],
                     detections: Sequence[list[Detection]]) -> list[list[Detection]]:
        grids = [shared_grid(im, m.pixel_size_um or self.context.pixel_size_um) for im, m in zip(images, metas,
                                                                                                 strict=True)]
        keys = [fingerprint(im) for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self._held]
        fresh = segment(self.model, [grids[i] for i in todo], max_batch=max(self.batch_size, 1))
        probs = dict(zip(todo, fresh, strict=True))
        out = []
        for i, (image, meta, before) in enumerate(zip(images, metas, detections, strict=True)):
            p = probs[i] if i in probs else self._held.pop(keys[i]).astype(np.float32)
            own = self._learn(keys[i], grids[i], p, image, meta)
            out.append(self._one(grids[i], p, meta, list(before), own))
        self._calibrated = True
        return out

    def _one(self, grid: GridContrast, probs: np.ndarray, meta: ImageMeta, before: list[Detection], own: int
             ) -> list[Detection]:
        pixel_um = meta.pixel_size_um or self.context.pixel_size_um or 1.0
        f = grid.factor
        upstream = self.rungs.add(before) or self._only_setup()
        min_area = max(1, math.ceil(self.options.min_area_um2 / (pixel_um * f) ** 2))
        found, _ = regions(probs, min_area=1)
        owner = np.full(probs.shape[1:], -1, np.int32)
        for i, r in enumerate(found):
            owner[r.pixels] = i
        covered: set[int] = set()
        out: list[Detection] = []
        for d in before:
            kept = self._review(d, probs, owner, covered, f)
            if kept is not None:
                out.append(kept)
        # After another detector (it has classified something in this run) additions are held to add_threshold.
        threshold = self.options.add_threshold if self.rungs.points else self.options.alone_threshold
        for i, r in enumerate(found):
            if i in covered or r.area < min_area or r.confidence() < threshold:
                continue
            if r.kind == "junk" or (r.kind != "thin" and CLASSES[r.best_class()] not in self.options.report_classes):
                continue
            made = self._region_detection(r, grid, upstream, own, f)
            if made is not None:
                out.append(made)
        return out

    def _only_setup(self) -> str | None:
        return next(iter(self.rungs.points)) if len(self.rungs.points) == 1 else None

    def _review(self, d: Detection, probs: np.ndarray, owner: np.ndarray, covered: set[int], f: int
                ) -> Detection | None:
        """Confirm, relabel or reject one earlier candidate by what the network sees where it lies."""
        rows, cols = probs.shape[1:]
        radius = max(1.0, 0.4 * math.sqrt(max(d.area_px, 1.0) / math.pi) / f)
        r0, c0 = (d.row + 0.5) / f - 0.5, (d.col + 0.5) / f - 0.5
        rr, cc = np.mgrid[max(0, int(r0 - radius)) : min(rows, int(r0 + radius) + 2),
                          max(0, int(c0 - radius)) : min(cols, int(c0 + radius) + 2)]
        inside = (rr - r0) ** 2 + (cc - c0) ** 2 <= radius**2
        if not inside.any():
            return d
        rr, cc = rr[inside], cc[inside]
        covered.update(int(v) for v in np.unique(owner[rr, cc]) if v >= 0)
        # Regions the candidate's box covers are its own, not new flakes.
        b0, b1 = max(0, d.bbox[0] // f), max(0, d.bbox[1] // f)
        b2, b3 = min(rows, -(-d.bbox[2] // f)), min(cols, -(-d.bbox[3] // f))
        if d.bbox != (0, 0, 0, 0) and b2 > b0 and b3 > b1:
            hits, counts = np.unique(owner[b0:b2, b1:b3], return_counts=True)
            covered.update(int(h) for h, n in zip(hits, counts, strict=True) if h >= 0 and n >= 1)
        mean = probs[:, rr, cc].mean(axis=1)
        p_thin = float(mean[list(THIN)].sum())
        cnn = int(np.argmax(mean))
        thin_class = int(THIN[int(np.argmax(mean[list(THIN)]))])
        d.extra["cnn_class"] = CLASSES[cnn]
        d.extra["cnn_probability"] = round(float(mean[cnn]), 3)
        if mean[JUNK] >= self.options.reject_junk:
            return None
        if d.layers is None and d.layer_class == "thin" and p_thin >= 0.5:
            d.layers, d.layer_class = thin_class, CLASSES[thin_class]
            d.extra["relabelled_by"] = self.name
            d.score = float(min(1.0, 0.5 * d.score + 0.5 * p_thin))
            return d
        if d.layers is not None:
            agrees = p_thin >= 0.5 and thin_class == d.layers if d.layers <= 3 else cnn == FEW
            d.extra["cnn_agrees"] = bool(agrees)
            if not agrees:
                d.score = float(d.score * self.options.disagree_factor)
        return d

    def _region_detection(self, r: Region, grid: GridContrast, upstream: str | None, own: int, f: int
                          ) -> Detection | None:
        """A candidate of a region no earlier detector reported; its layer count from the scan's ladder."""
        contrast = _interior_median(grid, r)
        cnn_class = r.best_class()
        layers: int | None = cnn_class if cnn_class in THIN else None
        extra: dict[str, Any] = {"cnn_only": True, "cnn_class": CLASSES[cnn_class],
                                 "cnn_probability": round(r.confidence(), 3)}
        score = r.confidence()
        if r.kind == "thin":
            if upstream is not None and self.rungs.rungs(upstream) is not None:
                ladder, distance = self.rungs.classify(upstream, contrast)
                extra["ladder"] = "upstream"
                if (self.options.add_needs_agreement and ladder != cnn_class) or \
                        distance > self.options.add_max_distance:
                    return None
            else:
                fit = self.own.fit(own)
                if fit.usable:
                    spread = float(np.sqrt(np.mean(grid.noise**2)) / math.sqrt(max(r.area, 1)))
                    (n,), (d,) = fit.classify(contrast[None, :], self.options.max_rung_distance, spread)
                    ladder, distance = (int(n) if n > 0 else None), float(d)
                    extra["ladder"] = "own"
                    score *= 0.5 + 0.5 * float(fit.confidence)
                else:
                    ladder, distance = None, float("nan")
                    extra["ladder"] = "none"
            if extra["ladder"] != "none":
                if ladder is None:
                    return None  # the ladder puts this contrast on no thin rung
                extra["ladder_distance"] = round(distance, 2)
                extra["cnn_agrees"] = ladder == cnn_class
                if ladder != cnn_class:
                    score *= self.options.disagree_factor
                layers = ladder
            if layers is None or layers not in self.targets:
                return None
        area_px = float(r.area * f * f)
        score *= area_px / (area_px + 50.0)
        row, col = r.centroid
        rows, cols = grid.shape
        b = r.bbox
        return Detection(
            row=(row + 0.5) * f - 0.5, col=(col + 0.5) * f - 0.5, area_px=area_px, layers=layers,
            layer_class=f"{layers}L" if layers is not None else CLASSES[cnn_class], score=float(min(1.0, score)),
            bbox=(b[0] * f, b[1] * f, min(rows, b[2] * f), min(cols, b[3] * f)), touches_border=r.touches_border,
            contrast_rgb=(float(contrast[0]), float(contrast[1]), float(contrast[2])), detector=self.name,
            extra=extra,
        )


def _interior_median(grid: GridContrast, r: Region) -> np.ndarray:
    """Median contrast of a region's interior (its edge pixels, blurred towards the substrate, left out)."""
    if r.area >= 9:
        r0, c0, r1, c1 = r.bbox
        mask = np.zeros((r1 - r0 + 2, c1 - c0 + 2), np.uint8)
        mask[r.pixels[0] - r0 + 1, r.pixels[1] - c0 + 1] = 1
        inner = cv2.erode(mask, np.ones((3, 3), np.uint8))
        rr, cc = np.nonzero(inner)
        if len(rr) >= 3:
            median: np.ndarray = np.median(grid.contrast[rr + r0 - 1, cc + c0 - 1], axis=0)
            return median
    full: np.ndarray = np.median(grid.contrast[r.pixels], axis=0)
    return full
