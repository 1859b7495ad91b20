"""The layer ladder learnt from the data (plugins/contrast/ladder.py, ladder_search.py) and the contrast
detector built on it: foreign-like renders (another camera, a gamma tone curve, an oxide far from the
nominal one or not stated), a folder mixing setups, a single image, a resumed run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flakehunter.analysis.detector import DetectionContext
from flakehunter.image_metadata import ImageMeta
from flakehunter.journal import pack_state, unpack_state
from flakehunter.optics import CameraResponse, layer_contrast
from flakehunter.plugins.contrast.detector import ContrastDetector, ContrastOptions
from flakehunter.plugins.contrast.ladder import fit_ladder
from flakehunter.registry import get_registry
from tests.test_contrast_plateaus import Painted, polygon, render_flakes

#: A camera unlike the detector's model: other channel peaks and widths, a warmer lamp.
FOREIGN_CAMERA = CameraResponse.gaussian((625.0, 545.0, 455.0), (70.0, 85.0, 70.0), source_temperature_k=2800.0)
SHAPE = (400, 600)


def linear_contrasts(material: str, oxide_nm: float) -> np.ndarray:
    """(3, 3) linear contrast of 1L, 2L, 3L through the foreign camera."""
    mat = get_registry().material(material)
    return np.array([layer_contrast(mat, n, oxide_nm, FOREIGN_CAMERA) for n in (1, 2, 3)])


def observed(contrast: np.ndarray, gamma: float) -> np.ndarray:
    """Contrast after the camera's tone curve."""
    return (1.0 + contrast) ** (1.0 / gamma) - 1.0


def scene(seed: int, contrasts: np.ndarray, per_layer: int = 2) -> list[Painted]:
    """Thin flakes of each layer count, a thick flake, a residue blob and dust, at seeded places."""
    rng = np.random.default_rng(seed)
    objects: list[Painted] = []
    slots = [(r, c) for r in (70, 200, 330) for c in (80, 230, 380, 520)]
    rng.shuffle(slots)
    k = 0
    for n in (1, 2, 3):
        for _ in range(per_layer):
            centre = (slots[k][0] + rng.uniform(-10, 10), slots[k][1] + rng.uniform(-15, 15))
            objects.append(Painted(polygon(centre, rng.uniform(18, 32), sides=int(rng.choice([3, 4, 6])),
                                           angle_deg=rng.uniform(0, 60)), tuple(contrasts[n - 1]), n))
            k += 1
    objects.append(Painted(polygon(slots[k], 40, sides=5), (0.9, 1.1, 0.5)))  # a thick flake
    objects.append(Painted(polygon(slots[k + 1], 30, sides=24, aspect=0.4), (-0.04, 0.01, 0.03)))  # residue
    for _ in range(6):  # dust specks
        centre = (rng.uniform(10, SHAPE[0] - 10), rng.uniform(10, SHAPE[1] - 10))
        objects.append(Painted(polygon(centre, 2.0, sides=12), (-0.3, -0.3, -0.3)))
    return objects


def detector(material: str, oxide_nm: float, **options) -> ContrastDetector:
    context = DetectionContext(material=get_registry().material(material), oxide_nm=oxide_nm, pixel_size_um=1.0)
    return ContrastDetector(ContrastOptions(**options), context)


def scored(found, objects: list[Painted]) -> tuple[int, int, int]:
    """(flakes found, found with the right layer count, 1-3L detections on no flake)."""
    flakes = [o for o in objects if o.layers]
    hit = right = 0
    for f in flakes:
        on = [d for d in found if f.contains(d.row, d.col)]
        hit += bool(on)
        right += any(d.layers == f.layers for d in on)
    stray = sum(1 for d in found if d.layers in (1, 2, 3) and not any(f.contains(d.row, d.col) for f in flakes))
    return hit, right, stray


@pytest.mark.parametrize(("material", "oxide_nm", "told_nm"), [
    ("graphene", 285.0, 90.0),  # the user left the oxide at its default
    ("graphene", 285.0, 285.0),  # stated exactly
    ("wse2", 260.0, 90.0),  # a TMD on thick oxide, told the default
])
def test_ladder_recovered_on_a_foreign_like_render(material: str, oxide_nm: float, told_nm: float) -> None:
    """Another camera, a gamma 2.2 tone curve and an oxide far from the stated one: the learnt rungs land on
    the contrasts the camera really records, and the flakes are found with their layer counts; a stated
    oxide gives the same result as a wrong one."""
    truth = observed(linear_contrasts(material, oxide_nm), 2.2)
    det = detector(material, told_nm)
    images = [render_flakes(SHAPE, scene(s, linear_contrasts(material, oxide_nm)), gamma=2.2, seed=s)
              for s in range(4)]
    det.calibrate([(im, ImageMeta(pixel_size_um=1.0)) for im in images])
    report = det.calibration_report()
    assert report["method"] == "self-calibrated" and len(report["setups"]) == 1
    for n in (1, 2, 3):
        rung = np.array(report["ladder"][n - 1]["contrast"])
        assert np.linalg.norm(rung - truth[n - 1]) < 0.1 * np.linalg.norm(truth[n - 1]) + 0.01, (n, rung, truth)
        assert report["ladder"][n - 1]["support"] > 0
    assert report["confidence"] > 0.9
    totals = np.zeros(3, int)
    for s, image in enumerate(images):
        totals += scored(det.detect(image, ImageMeta(pixel_size_um=1.0), []),
                         scene(s, linear_contrasts(material, oxide_nm)))
    flakes = 4 * 6
    assert totals[0] >= 0.9 * flakes and totals[1] >= 0.9 * flakes and totals[2] <= 1, totals


def test_the_nominal_model_fails_where_the_ladder_succeeds() -> None:
    """The same render with the thin-film model trusted at the stated (wrong) oxide finds the flakes with
    the wrong layer counts, or not at all: the ladder's accuracy is earned from the data."""
    contrasts = linear_contrasts("graphene", 150.0)
    det = detector("graphene", 90.0, calibration="nominal")
    image = render_flakes(SHAPE, scene(0, contrasts), gamma=2.2, seed=0)
    _hit, right, _stray = scored(det.detect(image, ImageMeta(pixel_size_um=1.0), []), scene(0, contrasts))
    assert right <= 3


def test_a_single_image_with_three_flakes() -> None:
    """One photo holding a monolayer, a bilayer and a trilayer (and dust) gets a usable ladder by itself."""
    contrasts = observed(linear_contrasts("graphene", 285.0), 1.8)
    objects = [Painted(polygon((120, 150), 35, sides=6), tuple(linear_contrasts("graphene", 285.0)[0]), 1),
               Painted(polygon((250, 380), 30, sides=3), tuple(linear_contrasts("graphene", 285.0)[1]), 2),
               Painted(polygon((300, 130), 28, sides=4), tuple(linear_contrasts("graphene", 285.0)[2]), 3),
               Painted(polygon((80, 480), 2.0, sides=12), (-0.3, -0.3, -0.3))]
    image = render_flakes(SHAPE, objects, gamma=1.8, seed=7)
    det = detector("graphene", 90.0)
    found = det.detect(image, ImageMeta(pixel_size_um=1.0), [])
    assert sorted(d.layers for d in found) == [1, 2, 3], [(d.layer_class, d.contrast_rgb) for d in found]
    ladder = det.calibration_report()["ladder"]
    assert np.allclose(ladder[0]["contrast"], contrasts[0], atol=0.015)


def test_a_folder_of_two_setups_gets_a_ladder_each() -> None:
    """Photos of two chips (90 nm and 285 nm oxide: another substrate colour, other contrasts) taken in turn
    are not averaged into one ladder: each setup's first rung is its own monolayer."""
    chips = {90.0: (150.0, 125.0, 160.0), 285.0: (120.0, 150.0, 130.0)}
    det = detector("graphene", 90.0)
    images = []
    for s in range(6):
        oxide = 90.0 if s % 2 == 0 else 285.0
        contrasts = linear_contrasts("graphene", oxide)
        images.append((oxide, render_flakes(SHAPE, scene(s, contrasts), substrate=chips[oxide], seed=s)))
    det.calibrate([(im, ImageMeta(pixel_size_um=1.0)) for _, im in images])
    setups = det.calibration_report()["setups"]
    assert len(setups) == 2, [s["substrate"] for s in setups]
    for setup in setups:
        oxide = 90.0 if setup["substrate"][0] > setup["substrate"][1] else 285.0  # red above green: 90 nm chip
        truth = linear_contrasts("graphene", oxide)[0]
        assert np.allclose(setup["ladder"][0]["contrast"], truth, atol=0.015), (oxide, setup["ladder"][0], truth)
        assert setup["images"] == 3


def test_a_resumed_run_reproduces_an_uninterrupted_one(tmp_path: Path) -> None:
    """The state after any image (plain arrays and JSON, through the journal's packing) restores a detector
    that reports exactly what the uninterrupted one reports for the remaining images."""
    contrasts = linear_contrasts("wse2", 200.0)
    images = [render_flakes(SHAPE, scene(s, contrasts), gamma=2.2, seed=s) for s in range(6)]

    def run(det: ContrastDetector, frames: list[np.ndarray]) -> list[list[tuple]]:
        out = []
        for image in frames:
            found = det.detect(image, ImageMeta(pixel_size_um=1.0), [])
            out.append([(d.layer_class, round(d.row, 3), round(d.col, 3), round(d.score, 6)) for d in found])
        return out

    whole = run(detector("wse2", 90.0), images)  # watch mode: learns as the images come
    first = detector("wse2", 90.0)
    head = run(first, images[:3])
    blob = pack_state(first.state())
    (tmp_path / "state.bin").write_bytes(blob)
    resumed = detector("wse2", 90.0)
    resumed.load_state(unpack_state((tmp_path / "state.bin").read_bytes()))
    assert head + run(resumed, images[3:]) == whole
    json.dumps(resumed.calibration_report())  # the manifest's report is JSON


def test_fit_ladder_says_when_there_is_no_ladder() -> None:
    """No plateaus, or only specks at the noise floor: no ladder, said in a note."""
    graphene = get_registry().material("graphene")
    empty = fit_ladder(np.zeros((0, 3)), np.zeros(0), graphene, 90.0)
    assert empty.method == "none" and empty.note
    faint = fit_ladder(np.full((5, 3), 0.002), np.ones(5), graphene, 90.0)
    assert faint.method == "none"


def test_a_ladder_may_not_count_one_shade_twice() -> None:
    """Residue in a band of shades (clusters of a cluttered WSe2 render): a bent ladder with rungs 2 and 3 on
    one shade and rung 4 turned back would earn on three rungs from it; rungs that cannot be told apart make no
    ladder, and a linear ladder must grow. The fit then rests on the flakes (1L, 2L, 3L)."""
    from flakehunter.plugins.contrast.ladder_search import rung_spread, score

    residue = np.array([[0.040, -0.010, -0.098], [0.050, -0.014, -0.133], [0.061, -0.019, -0.169],
                        [0.051, -0.006, -0.116]])
    weights = np.array([4.25, 3.7, 3.6, 1.3])
    bent = np.array([[0.043, -0.009, -0.102], [0.063, -0.016, -0.158], [0.062, -0.019, -0.169],
                     [0.049, -0.014, -0.134], [0.03, -0.01, -0.09], [0.0, 0.0, -0.03]])
    cost, _ = score(residue, weights, bent[None], 0.0093)
    assert np.isinf(cost[0])
    spaced = np.array([n * np.array([0.045, -0.011, -0.105]) for n in range(1, 7)])
    cost, _ = score(residue, weights, spaced[None], 0.0093)
    assert np.isfinite(cost[0])

    flakes = np.array([[0.091, 0.014, -0.112], [0.167, 0.028, -0.255], [0.261, 0.082, -0.451]])
    points = np.vstack([flakes, residue])
    fit = fit_ladder(points, np.r_[[4.0, 6.9, 1.9], weights], get_registry().material("wse2"), 166.0,
                     floor=0.0093)
    steps = np.linalg.norm(np.diff(fit.rungs[:4], axis=0), axis=1)
    assert np.all(steps >= 1.5 * np.maximum(rung_spread(fit.rungs[1:4], 0.0093), rung_spread(fit.rungs[:3], 0.0093)))


def test_without_a_ladder_thin_plateaus_are_reported_unclassified() -> None:
    """A detector whose setup has no ladder reports thin-looking plateaus as 'thin' with no layer count."""
    from flakehunter.plugins.contrast.ladder import no_ladder

    contrasts = linear_contrasts("graphene", 90.0)
    image = render_flakes(SHAPE, scene(1, contrasts), seed=1)
    det = detector("graphene", 90.0)
    det.detect(image, ImageMeta(pixel_size_um=1.0), [])  # creates the setup
    det.setups.setups[0].ladder.fit = no_ladder(3, "test")
    det.setups.setups[0].ladder.fitted_weight = float("inf")  # no refit
    found = det.detect(image, ImageMeta(pixel_size_um=1.0), [])
    assert found and all(d.layer_class == "thin" and d.layers is None for d in found)
    assert "no layer ladder" in det.calibration_report()["note"]


def test_images_segmented_on_threads_give_what_one_at_a_time_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration, then detection in batches on three threads, reports exactly what one thread and one image
    at a time reports (the flat field still learns image after image, the ladder moves between images), and an
    image calibration examined is not segmented a second time."""
    from flakehunter.plugins.contrast import detector as contrast_detector

    contrasts = linear_contrasts("wse2", 200.0)
    images = [render_flakes(SHAPE, scene(s, contrasts), gamma=2.2, seed=s) for s in range(9)]
    metas = [ImageMeta(pixel_size_um=1.0) for _ in images]
    segmented: list[int] = []
    real = contrast_detector.find_plateaus

    def counted(contrast: np.ndarray, *args, **kwargs):
        segmented.append(contrast.shape[0])
        return real(contrast, *args, **kwargs)

    monkeypatch.setattr(contrast_detector, "find_plateaus", counted)

    def run(det: ContrastDetector, batch: int) -> list[list[tuple]]:
        det.calibrate(list(zip(images[:4], metas[:4], strict=True)))
        out = []
        for k in range(0, len(images), batch):
            found = det.detect_batch(images[k : k + batch], metas[k : k + batch], [[] for _ in images[k : k + batch]])
            out += [[(d.layer_class, d.row, d.col, d.score, d.orientation_deg) for d in f] for f in found]
        return out

    one = run(detector("wse2", 90.0, threads=1), 1)
    assert len(segmented) == len(images)  # 4 in calibration, the 5 others in detection
    segmented.clear()
    threaded = detector("wse2", 90.0, threads=3)
    assert threaded.batch_size == 3
    assert run(threaded, 3) == one
    assert len(segmented) == len(images)
    assert sum(map(len, one)) >= 9 and any(d[0] == "1L" for f in one for d in f)


#: The 16 heaviest plateau clusters of foreign setup 12 (WS2 on 254 nm, oxide not stated, an sRGB camera whose
#: index data bend the ladder unlike the model's), with the medians of the true 1L, 2L, 3L plateaus.
BENT_CLUSTERS = np.array([
    [0.254, 1.224, 0.933], [-0.066, -0.233, -0.04], [-0.231, -0.534, 0.074], [0.222, 0.741, 0.633],
    [-0.149, -0.431, 0.003], [0.086, 1.133, 0.902], [-0.091, 1.011, 0.855], [-0.107, 0.81, 0.697],
    [0.333, 0.647, 0.63], [0.375, 0.441, 0.526], [0.288, 1.213, 0.752], [0.105, 0.822, 0.636],
    [0.155, 0.731, 0.644], [-0.045, -0.09, 0.051], [0.218, 1.005, 0.636], [0.196, 0.844, 0.614]])
BENT_WEIGHTS = np.array([13.0, 12.6, 7.9, 7.3, 6.1, 6.0, 6.0, 5.0, 3.0, 3.0, 3.0, 3.0, 2.8, 2.5, 2.3, 2.0])
BENT_TRUTH = np.array([[-0.066, -0.232, -0.044], [-0.148, -0.433, 0.001], [-0.233, -0.531, 0.074]])


def test_a_ladder_bent_unlike_the_model_keeps_its_rungs() -> None:
    """Where the model at the true oxide puts its 2L where the data have 3L (index data 20-30 % off), the
    ladder neither skips a rung nor leaves one empty between occupied ones: 1L, 2L, 3L land on rungs 1, 2, 3."""
    fit = fit_ladder(BENT_CLUSTERS, BENT_WEIGHTS, get_registry().material("ws2"), 90.0, floor=0.0054)
    layers, _ = fit.classify(BENT_TRUTH)
    assert layers.tolist() == [1, 2, 3], (fit.family, fit.oxide_nm, fit.thickness_scale, fit.rungs[:4].round(3))


def test_an_empty_rung_between_occupied_ones_costs() -> None:
    """The same clusters on a ladder with a hole (rungs 1, 3, 4 occupied) cost more than on one without, all
    else equal: the hole is what the score holds against it."""
    from flakehunter.plugins.contrast import ladder_search

    step = np.array([0.04, 0.03, -0.05])
    rungs = np.array([n * step for n in range(1, 7)])
    x = rungs[[0, 2, 3]]
    w = np.array([5.0, 5.0, 5.0])
    holed, _ = ladder_search.score(x, w, rungs[None], 0.004)
    packed, _ = ladder_search.score(x, w, np.vstack([rungs[[0, 2, 3]], rungs[4:], 7 * step[None]])[None], 0.004)
    expected = ladder_search.HOLE_COST * ladder_search.saturated_weight(np.array(15.0))
    assert holed[0] > packed[0]
    assert holed[0] - packed[0] == pytest.approx(float(expected), rel=1e-6)


def test_a_setup_whose_monolayer_is_invisible_gets_its_ladder_from_2l_up() -> None:
    """Foreign setup 1 (WS2 on 182 nm, oxide not stated, gamma 2.1 and JPEG): its monolayer is +2 % and
    hardly a plateau, while 2L, 3L, 4L are plain. A ladder may leave its first rung empty (at a cost), so
    they are not taken for 1L-3L, nor is the grey residue taken for a ladder."""
    clusters = np.array([
        [0.101, 0.082, 0.123], [0.044, 0.025, -0.046], [0.089, 0.044, -0.06], [0.063, 0.034, -0.051],
        [0.073, 0.029, -0.063], [0.132, 0.086, 0.125], [0.044, 0.026, -0.055], [0.073, 0.034, -0.05],
        [0.052, 0.019, -0.047], [0.141, 0.078, -0.042], [0.099, 0.032, 0.081], [0.19, 0.132, 0.154],
        [0.134, 0.118, 0.145], [0.014, 0.052, 0.12], [0.102, 0.031, 0.106], [0.185, 0.108, 0.006]])
    weights = np.array([6.6, 6.3, 3.3, 2.9, 2.1, 2.0, 2.0, 2.0, 2.0, 1.6, 1.3, 1.3, 1.0, 1.0, 1.0, 1.0])
    truth = np.array([[0.044, 0.026, -0.046], [0.065, 0.034, -0.053], [0.089, 0.044, -0.06]])  # 2L, 3L, 4L
    fit = fit_ladder(clusters, weights, get_registry().material("ws2"), 90.0, floor=0.004)
    layers, _ = fit.classify(truth)
    assert layers.tolist() == [2, 3, 4], (fit.family, fit.oxide_nm, fit.rungs[:4].round(3))
