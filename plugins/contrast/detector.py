"""The classical contrast detector: plateaus found without a model, layer counts from a learnt ladder.

Steps per image:

1. the image's setup (`setups`): the images taken the same way share a flat field, a ladder and a focus
   history; a folder of photos from several microscopes or chips gets one per setup;
2. background per channel (robust surface fit, then the setup's flat field) and contrast
   C = I / background − 1;
3. plateaus (`plateaus`): uniform regions that differ from the substrate, found from edges and interior
   uniformity in units of the image's own noise; scratches, lines, rims of thick flakes, textured residue
   and hazy halos are rejected by shape and texture;
4. focus (`focus`): the image's edge sharpness against the sharpest images of its setup; a clearly softer
   image is flagged ``out_of_focus`` (a scan retakes it once);
5. the ladder (`ladder`): the setup's plateaus so far, clustered, and the ladder 1L, 2L, 3L ... that fits
   them, with the thin-film model as a prior on direction and spacing only; or a ladder pinned by a
   measured profile (``profile``) or by the model at the nominal oxide (``calibration: nominal``);
6. each plateau on a reported rung becomes a detection, with its crystal axis from straight edges.

Where no ladder can be found, thin-looking plateaus are reported as ``layer_class="thin"`` with
``layers=None`` (unclassified) rather than dropped. An image that is out of focus still reports its
plateaus: those whose layer count the blur cannot have changed (wide interiors) keep it, the others are
reported as ``thin``; all of them with half the score and ``extra["soft"] = True``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flakehunter.analysis.detector import Detection, DetectionContext
from flakehunter.errors import InputError
from flakehunter.plugins.contrast.axis import AxisEstimate, region_orientation
from flakehunter.plugins.contrast.background import block_means, expand
from flakehunter.plugins.contrast.blas import one_blas_thread
from flakehunter.plugins.contrast.blur import corrected, edge_blur_px
from flakehunter.plugins.contrast.focus import image_sharpness
from flakehunter.plugins.contrast.ladder import LadderFit, model_rungs, no_ladder, pinned_ladder
from flakehunter.plugins.contrast.ladder_search import rung_spread
from flakehunter.plugins.contrast.options import ContrastOptions
from flakehunter.plugins.contrast.plateaus import (
    Plateau,
    PlateauImage,
    PlateauParams,
    RejectRules,
    find_plateaus,
    reject_reason,
    touching_groups,
)
from flakehunter.plugins.contrast.profile import MaterialProfile, load_profile
from flakehunter.plugins.contrast.saturation import saturation_mask
from flakehunter.plugins.contrast.setups import Setup, SetupBook
from flakehunter.tiles import ImageMeta

log = logging.getLogger(__name__)

#: A plateau further than this from its rung (in rung spreads) is not given that layer count.
MAX_RUNG_DISTANCE = 3.0
#: In a soft image, a plateau keeps its layer count only if its inscribed width is at least this many
#: pixels (blur pulls the contrast of narrower plateaus towards the substrate) and it sits close to its rung.
SOFT_MIN_WIDTH_PX = 8.0
SOFT_MAX_RUNG_DISTANCE = 2.0
#: A plateau whose step stands this many noise σ high counts fully towards the ladder; fainter ones less.
SALIENT_STEP_Z = 8.0
#: Plateaus smaller than this count little towards the ladder (dust specks reach ~50 µm²).
LADDER_MIN_AREA_UM2 = 80.0
#: After this many images, a setup's pool examines only plateaus on its ladder's rungs for straight edges.
MATURE_POOL_IMAGES = 8
#: Weight factor of a plateau without any straight edge (residue, dust) as ladder evidence.
ROUND_WEIGHT = 0.3
#: A straight-edged plateau counts fully only with at least this solidity (area over convex hull): a crystal
#: is a compact polygon, while dust clumps and residue rings found a straight stretch of rim are ragged.
MIN_SOLIDITY = 0.75
#: Without a ladder, a plateau is "thin" when its contrast is within this factor of the largest 3L contrast
#: the thin-film model gives on any oxide.
THIN_ENVELOPE = 1.5


class ContrastDetector:
    """Finds thin flakes as plateaus of uniform contrast and counts their layers on a learnt ladder."""

    Options = ContrastOptions
    name = "contrast"

    def __init__(self, options: ContrastOptions, context: DetectionContext) -> None:
        self.options = options
        self.context = context
        self.material = context.material
        self.report_layers = tuple(options.report_layers or self.material.target_layers)
        self.max_rungs = max(options.max_model_layers, *self.report_layers)
        flat = _mean_image(context.flatfield) if context.flatfield else None
        self.setups = SetupBook(self.material, context.oxide_nm, self.max_rungs, flat)
        self.params = PlateauParams()
        self._thin_limit: dict[int, float] = {}
        self.profile: MaterialProfile | None = None
        self._pinned: dict[int, LadderFit] = {}
        self._pinned_method: str | None = None
        if options.profile:
            self.profile = load_profile(options.profile, context.config_dir)
            if self.profile.material != self.material.name:
                raise InputError(
                    f"profile {options.profile!r} is for {self.profile.material}, not {self.material.name}"
                )
            self._pinned_method = "profile"
        elif options.calibration == "nominal":
            self._pinned_method = "nominal"
        self._calibrated = self._pinned_method is not None
        #: What calibration found in each image it examined, for the detection pass over the same images.
        self._examined: dict[str, tuple[float, PlateauImage]] = {}
        self.batch_size = options.threads
        self._pool: ThreadPoolExecutor | None = None

    # -- ladders ------------------------------------------------------------------------------------
    def pinned_ladder(self, channels: int) -> LadderFit | None:
        """The ladder a profile or the nominal model fixes, or None when the ladder is learnt."""
        if self._pinned_method is None:
            return None
        if channels not in self._pinned:
            if self.profile is not None:
                self._pinned[channels] = _profile_ladder(self.profile, self.material, self.context.oxide_nm,
                                                         self.max_rungs, channels)
            else:
                rungs = model_rungs(self.material, self.context.oxide_nm, self.max_rungs, channels)
                self._pinned[channels] = pinned_ladder(
                    "nominal", rungs, rung_spread(rungs), "self-calibration switched off", self.context.oxide_nm)
        return self._pinned[channels]

    def ladder(self, setup: Setup) -> LadderFit:
        pinned = self.pinned_ladder(setup.key.channels)
        if pinned is not None:
            return pinned
        return setup.ladder.fit or no_ladder(setup.key.channels, "not learnt yet")

    # -- the CalibratingDetector contract -----------------------------------------------------------
    def calibration_needed(self) -> bool:
        return not self._calibrated

    @property
    def calibration_images(self) -> int:
        return self.options.calibration_images

    def calibrate(self, samples: Iterable[tuple[np.ndarray, ImageMeta]]) -> dict[str, Any]:
        """Learn the ladder (and the focus reference) of each setup from ``samples`` before detecting.

        The flat fields learn from the samples while they are examined and are then put back, so the images
        are analysed afterwards exactly as if calibration had not looked at them.
        """
        with one_blas_thread():
            return self._calibrate(samples)

    def _calibrate(self, samples: Iterable[tuple[np.ndarray, ImageMeta]]) -> dict[str, Any]:
        saved: dict[int, dict[str, Any]] = {}
        self._examined.clear()
        ahead: deque[_Prepared] = deque()  # images whose plateaus are being segmented on other threads

        def examine(job: _Prepared) -> None:
            contrast, found = self._segmented(job)
            self._examine(job.image, contrast, job.setup, learn=True, pixel_um=job.pixel_um, found=found)
            self._examined[_analysis_key(job.image, job.surface)] = (job.limit, found)

        for image, meta in samples:
            ahead.append(self._submit(image, meta, saved))
            while len(ahead) > self.batch_size:
                examine(ahead.popleft())
        while ahead:
            examine(ahead.popleft())
        for index, state in saved.items():
            self.setups.setups[index].background.load_state(state)
        for setup in self.setups.setups:
            setup.ladder.update()
        self._calibrated = True
        return self.calibration_report()

    def calibration_report(self) -> dict[str, Any]:
        """The ladder of each setup (contrast, spread and support per rung, confidence), for the manifest."""
        setups = []
        for i, setup in enumerate(self.setups.setups):
            fit = self.ladder(setup)
            setups.append({"setup": i, **setup.key.describe(), "images": setup.ladder.images,
                           **fit.describe(self.report_layers)})
        main = max(self.setups.setups, key=lambda s: s.ladder.images, default=None)
        if main is not None:
            fit = self.ladder(main)
        else:
            pinned = self.pinned_ladder(3)
            fit = pinned if pinned is not None else no_ladder(3, "no images seen yet")
        out: dict[str, Any] = {
            "detector": self.name,
            "material": self.material.name,
            "nominal_oxide_nm": self.context.oxide_nm,
            **fit.describe(self.report_layers),
            "setups": setups,
        }
        out.setdefault("oxide_nm", self.context.oxide_nm)
        if self.profile is not None:
            out["profile"] = str(self.options.profile)
            out["profile_layers"] = sorted(self.profile.classes)
        lost = [s["setup"] for s in setups if s["method"] == "none"]
        if lost:
            out["note"] = (f"no layer ladder found for setup(s) {', '.join(map(str, lost))}: thin plateaus there are "
                           "reported unclassified (layer_class 'thin')")
        return out

    # -- the StatefulDetector contract --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"calibrated": self._calibrated, **self.setups.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.setups.load_state(state)
        self._calibrated = bool(state.get("calibrated", self._calibrated))

    # -- detection ------------------------------------------------------------------------------
    def contrast_image(self, image: np.ndarray, setup: Setup | None = None, blocks: np.ndarray | None = None,
                       learn: bool = True) -> np.ndarray:
        """C = I / background − 1 per channel, float32 (rows, cols, channels), with ``setup``'s flat field
        (which learns from the image unless ``learn`` is False)."""
        img = image if image.ndim == 3 else image[..., None]
        if blocks is None:
            blocks = block_means(img)
        if setup is None:
            _, setup, learn = self.setups.place(img, self.context.pixel_size_um, blocks)
        return _contrast(img, self._surface(setup, img, blocks, learn))

    def _surface(self, setup: Setup, image: np.ndarray, blocks: np.ndarray, learn: bool) -> np.ndarray:
        """The image's background on the block grid, from (and teaching, unless ``learn`` is False) its setup's
        flat field."""
        expected = np.asarray(setup.key.substrate) if setup.background.tiles_learnt else None
        return setup.background.surface(image.shape, blocks, learn=learn, expected=expected)

    def _prepare(
        self, image: np.ndarray, meta: ImageMeta, saved: dict[int, dict[str, Any]] | None = None
    ) -> tuple[int, Setup, np.ndarray]:
        """The image's setup (its index) and background on the block grid; ``saved`` keeps each setup's flat
        field as it was before the first image that touched it."""
        pixel_um = meta.pixel_size_um or self.context.pixel_size_um
        img = image if image.ndim == 3 else image[..., None]
        blocks = block_means(img)
        index, setup, typical = self.setups.place(image, pixel_um, blocks)
        if saved is not None and index not in saved:
            saved[index] = setup.background.state()
        return index, setup, self._surface(setup, img, blocks, learn=typical)

    # -- segmentation, on several threads --------------------------------------------------------------
    def _submit(self, image: np.ndarray, meta: ImageMeta, saved: dict[int, dict[str, Any]] | None = None
                ) -> _Prepared:
        """Prepare an image (image after image, in order: its setup's flat field learns from each) and start
        computing its contrast and segmenting it on another thread."""
        index, setup, surface = self._prepare(image, meta, saved)
        job = _Prepared(image, meta, index, setup, surface, meta.pixel_size_um or self.context.pixel_size_um or 1.0,
                        self._describe_limit(setup))
        # The detection pass over an image calibration examined has the very same background (the flat field
        # is put back and learns again in the same order): its plateaus are not segmented twice.
        if self._examined:
            limit, found = self._examined.pop(_analysis_key(image, surface), (None, None))
            job.found = found if limit == job.limit else None
        if self.batch_size > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.batch_size, thread_name_prefix="contrast")
            job.future = self._pool.submit(self._segment, job)
        return job

    def _segmented(self, job: _Prepared) -> tuple[np.ndarray, PlateauImage]:
        """The contrast and plateaus of ``job``: segmented on a thread, unless the limit on described contrasts
        has moved since (it follows the ladder, which the images before this one may have moved), when it is
        segmented again, as one image at a time would have been."""
        contrast, found = job.future.result() if job.future is not None else self._segment(job)
        limit = self._describe_limit(job.setup)
        return contrast, (found if limit == job.limit else self._find(job, contrast, limit))

    def _segment(self, job: _Prepared) -> tuple[np.ndarray, PlateauImage]:
        """Contrast and plateaus of one prepared image; on a thread of its own, also the straight edges that
        weighting and orientation will ask for (pure functions of the image: safe on any thread, and no
        different from computing them when asked)."""
        contrast = _contrast(job.image if job.image.ndim == 3 else job.image[..., None], job.surface)
        found = job.found or self._find(job, contrast, job.limit)
        if self.batch_size == 1:
            return contrast, found  # on this thread the edges are computed when asked, no sooner
        fit = job.setup.ladder.fit
        rules = RejectRules(min_area_px=self._min_area_px(job.pixel_um), min_step_z=self.options.min_step_z)
        for p in found.plateaus:
            if "edges" in p.extra or reject_reason(p, rules) is not None or not self._thin(p.contrast):
                continue
            evidence = p.area_px * job.pixel_um**2 >= LADDER_MIN_AREA_UM2 and p.solidity >= MIN_SOLIDITY
            if fit is not None and fit.usable:
                (rung,), _ = fit.classify(p.contrast[None, :], MAX_RUNG_DISTANCE, p.uncertainty)
                wanted = rung != 0 and (self.options.orientation or evidence)
            else:
                wanted = evidence
            if wanted:
                self._edges(contrast, p)
        return contrast, found

    def _find(self, job: _Prepared, contrast: np.ndarray, limit: float) -> PlateauImage:
        return find_plateaus(contrast, self.params, min_area_px=self._min_area_px(job.pixel_um),
                             saturated=saturation_mask(job.image), max_contrast=limit)

    def _min_area_px(self, pixel_um: float) -> float:
        return max(self.options.min_area_um2 / pixel_um**2, 8.0)

    def _examine(self, image: np.ndarray, contrast: np.ndarray, setup: Setup, learn: bool, pixel_um: float,
                 found: PlateauImage) -> tuple[list[Plateau], float | None, bool, float | None]:
        """The image's plateaus (``found``) that may be flakes, its sharpness and focus verdict; pools them
        into the setup."""
        min_area_px = self._min_area_px(pixel_um)
        sharpness = image_sharpness(found.plateaus)
        soft, reference = setup.focus.judge(sharpness)
        rules = RejectRules(min_area_px=min_area_px, min_step_z=self.options.min_step_z)
        halo_reference = sharpness if sharpness is not None else setup.focus.reference()
        kept = [p for p in found.plateaus if reject_reason(p, rules, halo_reference) is None]
        if learn and setup.first_look(_fingerprint(image)):
            setup.focus.observe(sharpness)
            if self.pinned_ladder(setup.key.channels) is None:
                points = np.array([p.contrast for p in kept]).reshape(-1, setup.key.channels)
                mature = setup.ladder.images > MATURE_POOL_IMAGES and setup.ladder.fit is not None
                weights = np.array([self._weight(contrast, p, pixel_um, setup.ladder.fit if mature else None)
                                    for p in kept])
                floor = float(np.sqrt(np.mean(found.noise**2)))
                setup.ladder.add(points, weights, floor)
        return kept, sharpness, soft, reference

    def detect(self, image: np.ndarray, meta: ImageMeta, detections: list[Detection]) -> list[Detection]:
        return self.detect_batch([image], [meta], [detections])[0]

    def detect_batch(self, images: Sequence[np.ndarray], metas: Sequence[ImageMeta],
                     detections: Sequence[list[Detection]]) -> list[list[Detection]]:
        """`detect` for each image in order; their plateaus are segmented on ``batch_size`` threads at once."""
        with one_blas_thread():
            jobs = [self._submit(image, meta) for image, meta in zip(images, metas, strict=True)]
            return [self._detect_prepared(job, found) for job, found in zip(jobs, detections, strict=True)]

    def _detect_prepared(self, job: _Prepared, detections: list[Detection]) -> list[Detection]:
        image, meta, index, setup = job.image, job.meta, job.index, job.setup
        contrast, found = self._segmented(job)
        plateaus, sharpness, soft, reference = self._examine(image, contrast, setup, learn=True, pixel_um=job.pixel_um,
                                                             found=found)
        if self.pinned_ladder(setup.key.channels) is None:
            setup.ladder.update()
            self._calibrated = True
        fit = self.ladder(setup)
        if soft:
            assert sharpness is not None and reference is not None
            flags = getattr(meta, "flags", None)
            if flags is not None:
                flags.add("out_of_focus")
            warning = (f"out of focus: edges rise {sharpness:.3f}/px against {reference:.3f}/px on the sharpest "
                       f"images of this run; layer counts kept only on wide plateaus")
            meta.warnings.append(warning)
            log.warning("%s: %s", meta.provenance.get("tile_index", "image") if meta.provenance else "image", warning)
        blur = edge_blur_px(contrast, found.plateaus)
        found = [(p, d) for p in plateaus if (d := self._detection(p, fit, contrast, soft, index, blur)) is not None]
        return [*detections, *merge_touching(found)]

    def _weight(self, contrast: np.ndarray, p: Plateau, pixel_um: float, fit: LadderFit | None = None) -> float:
        """A plateau's weight as ladder evidence (`plateau_weight`), a third of it without a straight edge or
        when ragged (solidity below ``MIN_SOLIDITY``).

        Crystals cleave along straight edges; residue blobs and dust specks are round. Both come in a
        continuum of shades that could pass for a ladder, so the round ones count little. Plateaus far beyond
        any few-layer contrast are not examined (they count as round), and once a setup's ladder rests on
        several images (``fit`` given) only plateaus on its rungs are (they need their edges for the crystal
        axis anyway).
        """
        weight = plateau_weight(p, pixel_um)
        if p.area_px * pixel_um**2 < LADDER_MIN_AREA_UM2:
            return weight
        if not self._thin(p.contrast):
            return ROUND_WEIGHT * weight  # far beyond any few-layer contrast: its edges cannot help the ladder
        if fit is not None and fit.usable:
            (rung,), _ = fit.classify(p.contrast[None, :], MAX_RUNG_DISTANCE, p.uncertainty)
            if rung == 0:
                return ROUND_WEIGHT * weight
        if p.solidity < MIN_SOLIDITY:
            return ROUND_WEIGHT * weight  # ragged: a straight stretch of rim does not make it a crystal
        edges = self._edges(contrast, p)
        return weight if edges is not None and edges.edges else ROUND_WEIGHT * weight

    def _detection(self, p: Plateau, fit: LadderFit, contrast: np.ndarray, soft: bool, setup_index: int,
                   blur_px: float | None = None) -> Detection | None:
        """The detection a plateau makes under ``fit`` (None when it is on no reported rung); a small plateau
        is placed on the ladder with the dimming of the image's blur (``blur_px``) undone."""
        layers: int | None
        level, uncertainty, share = corrected(p, blur_px)
        if fit.usable:
            (n,), (distance,) = fit.classify(level[None, :], MAX_RUNG_DISTANCE, uncertainty)
            if n == 0 or int(n) not in self.report_layers:
                return None
            layers = int(n)
            if soft and (p.width_px < SOFT_MIN_WIDTH_PX or distance > SOFT_MAX_RUNG_DISTANCE):
                layers = None
            fit_score = float(np.exp(-0.5 * (distance / 1.5) ** 2)) * (0.5 + 0.5 * fit.confidence)
        else:
            if not self._thin(level):
                return None
            layers, distance, fit_score = None, float("nan"), 0.3
        size_score = p.area_px / (p.area_px + 50.0)
        score = fit_score * (0.5 + 0.5 * size_score) * (0.5 if soft else 1.0)
        axis = self._orientation(contrast, p)
        extra: dict[str, Any] = {
            "setup": setup_index,
            "ladder_distance": None if np.isnan(distance) else round(float(distance), 3),
            "step_z": round(p.step_z, 1),
            "edge_sharpness": round(p.sharpness, 3),
            "orientation_error_deg": None if axis is None else round(axis.error_deg, 3),
            "straight_edges": 0 if axis is None else len(axis.edges),
        }
        if soft:
            extra["soft"] = True
        if share < 1.0:
            extra["blur_share"] = round(share, 3)
        return Detection(
            row=p.centroid[0],
            col=p.centroid[1],
            area_px=float(p.area_px),
            layers=layers,
            layer_class=f"{layers}L" if layers is not None else "thin",
            score=float(score),
            orientation_deg=None if axis is None else axis.orientation_deg,
            bbox=p.bbox,
            touches_border=p.touches_border,
            contrast_rgb=_as_rgb(p.contrast),
            detector=self.name,
            extra=extra,
        )

    def _describe_limit(self, setup: Setup) -> float:
        """The strongest contrast worth describing in full: well beyond any few-layer flake on any oxide,
        and beyond the setup's own third rung."""
        probe = np.zeros(setup.key.channels)
        self._thin(probe)  # fills the cache
        limit = 1.5 * self._thin_limit[setup.key.channels]
        fit = self.ladder(setup)
        if fit.usable and len(fit.rungs) >= 3:
            limit = max(limit, 1.5 * float(np.linalg.norm(fit.rungs[2])))
        return limit

    def _thin(self, contrast: np.ndarray) -> bool:
        """Whether a plateau's contrast is within reach of a few-layer flake on some oxide (no ladder known)."""
        channels = len(contrast)
        if channels not in self._thin_limit:
            from flakehunter.plugins.contrast.ladder import _model_table

            _, table = _model_table(self.material, channels, self.max_rungs)
            top = min(3, table.shape[1]) - 1
            self._thin_limit[channels] = THIN_ENVELOPE * float(np.linalg.norm(table[:, top], axis=1).max())
        return float(np.linalg.norm(contrast)) <= self._thin_limit[channels]

    def _edges(self, contrast: np.ndarray, p: Plateau) -> AxisEstimate | None:
        """Straight edges of one plateau (on a window around its bounding box), computed once and kept."""
        if "edges" in p.extra:
            return p.extra["edges"]
        pad = 6
        r0, c0, r1, c1 = p.bbox
        rows, cols = contrast.shape[:2]
        wr0, wc0, wr1, wc1 = max(r0 - pad, 0), max(c0 - pad, 0), min(r1 + pad, rows), min(c1 + pad, cols)
        region = np.zeros((wr1 - wr0, wc1 - wc0), bool)
        region[r0 - wr0 : r1 - wr0, c0 - wc0 : c1 - wc0] = p.mask
        p.extra["edges"] = region_orientation(
            contrast[wr0:wr1, wc0:wc1] - p.surround.astype(np.float32),
            region,
            p.contrast - p.surround,
            self.material.edge_symmetry_deg,
            min_length_px=self.options.min_edge_px,
        )
        return p.extra["edges"]

    def _orientation(self, contrast: np.ndarray, p: Plateau) -> AxisEstimate | None:
        """Crystal axis of one plateau from its straight edges, modulo the material's symmetry, when trusted."""
        if not self.options.orientation:
            return None
        estimate = self._edges(contrast, p)
        if estimate is None or estimate.error_deg > self.options.max_orientation_error_deg:
            return None  # no straight edge long enough to trust
        if len(estimate.edges) < 2 and estimate.edges[0].length_px < self.options.single_edge_px:
            return None  # one short edge may be a straight-looking piece of a torn one
        return estimate


@dataclass
class _Prepared:
    """An image with its setup and background (block grid), the limit on described contrasts it is segmented
    with, plateaus calibration found in it, and the thread computing its contrast and plateaus (None:
    computed when needed)."""

    image: np.ndarray
    meta: ImageMeta
    index: int
    setup: Setup
    surface: np.ndarray
    pixel_um: float
    limit: float
    found: PlateauImage | None = None
    future: Future[tuple[np.ndarray, PlateauImage]] | None = None


def _contrast(image: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """C = I / background − 1 (float32, rows x cols x channels) from the background's block grid."""
    background = expand(surface, image.shape[:2])
    # Linear interpolation stays within the grid's range: with the grid clear of the floor, every pixel is.
    if not surface.min() >= 2e-3:
        np.maximum(background, 1e-3, out=background)
    # In place, the pixels converted to float32 as they are divided: tiles are large.
    contrast = np.divide(image, background, out=background, dtype=np.float32)
    contrast -= 1.0
    return contrast


def merge_touching(found: list[tuple[Plateau, Detection]], gap_px: int = 4) -> list[Detection]:
    """One detection per flake: plateaus of the same layer class that touch (within ``gap_px``) are one flake
    seen in pieces (a seed split by noise, a small flake's peak beside its flat part)."""
    def same_class(i: int, j: int) -> bool:
        return found[i][1].layer_class == found[j][1].layer_class

    out = []
    for members in touching_groups([p for p, _ in found], same_class, gap_px):
        if len(members) == 1:
            out.append(found[members[0]][1])
            continue
        dets = [found[i][1] for i in members]
        main = max(dets, key=lambda d: d.area_px)
        area = sum(d.area_px for d in dets)
        main.row = sum(d.row * d.area_px for d in dets) / area
        main.col = sum(d.col * d.area_px for d in dets) / area
        main.bbox = (min(d.bbox[0] for d in dets), min(d.bbox[1] for d in dets),
                     max(d.bbox[2] for d in dets), max(d.bbox[3] for d in dets))
        main.area_px = area
        main.touches_border = any(d.touches_border for d in dets)
        main.score = max(d.score for d in dets)
        main.extra["pieces"] = len(dets)
        out.append(main)
    return out


def plateau_weight(p: Plateau, pixel_um: float) -> float:
    """How much one plateau counts as evidence for the ladder: its interior, in units of 100 px, capped at 1
    (a big thick flake is no better evidence than a fair-sized thin one), scaled down for a step less than
    ``SALIENT_STEP_Z`` noise σ high (the faint specks and haze of a real photo), and a fifth of that below
    ``LADDER_MIN_AREA_UM2``.

    Real images hold many small specks (dust, residue crumbs, fragments of debris) for every flake, and dust
    comes in a continuum of shades that a ladder could be fitted to; a flake's plateau is larger, and its
    median more trustworthy.
    """
    weight = float(np.clip(p.interior_px / 100.0, 0.05, 1.0)) * float(np.clip(p.step_z / SALIENT_STEP_Z, 0.25, 1.0))
    return weight if p.area_px * pixel_um**2 >= LADDER_MIN_AREA_UM2 else 0.2 * weight


def _profile_ladder(profile: MaterialProfile, material: Any, nominal_oxide_nm: float, rungs: int,
                    channels: int) -> LadderFit:
    """A ladder pinned by a measured profile: its means where measured, the model scaled to them elsewhere."""
    from flakehunter.plugins.contrast.layers import profile_rungs

    centroids, oxide_nm = profile_rungs(profile, material, nominal_oxide_nm, rungs, channels=channels)
    spread = rung_spread(centroids)
    for n, stats in profile.classes.items():
        if 1 <= n <= len(spread):
            spread[n - 1] = max(float(np.sqrt(np.trace(stats.cov) / channels)), 0.5 * spread[n - 1])
    return pinned_ladder("profile", centroids, spread, f"profile {profile.name}", oxide_nm)


def _analysis_key(image: np.ndarray, surface: np.ndarray) -> str:
    """An image's fingerprint with its background's: equal only for the same pixels under the same background."""
    return _fingerprint(image) + hashlib.blake2b(np.ascontiguousarray(surface).tobytes(), digest_size=8).hexdigest()


def _fingerprint(image: np.ndarray) -> str:
    """A short hash of an image's pixels (so an image seen in calibration is not pooled twice)."""
    sample = np.ascontiguousarray(image[::7, ::7])
    return hashlib.blake2b(sample.tobytes() + str(image.shape).encode(), digest_size=8).hexdigest()


def _mean_image(paths: tuple[Path, ...]) -> np.ndarray:
    """The average of one or more flat-field images (bare substrate), as float32."""
    from flakehunter.tiles import read_image

    images = [read_image(p)[0].astype(np.float32) for p in paths]
    if any(i.shape != images[0].shape for i in images):
        raise InputError(f"flat field: images {', '.join(map(str, paths))} differ in size")
    return np.mean(images, axis=0)


def _as_rgb(median: np.ndarray) -> tuple[float, float, float]:
    values = [float(v) for v in np.ravel(median)]
    return (values[0], values[0], values[0]) if len(values) == 1 else (values[0], values[1], values[2])
