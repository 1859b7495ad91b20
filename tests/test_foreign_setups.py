"""Foreign setups (issue 12): the default render is unchanged, setups are reproducible, every randomised
stage of the imaging chain changes the image the way it should, and the benchmark's scoring is right."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from flakehunter.candidates import Candidate
from flakehunter.hardware.simulator.chip import ChipLayout, ChipSpec
from flakehunter.hardware.simulator.foreign import render_foreign_chip, write_tile_file
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.hardware.simulator.imaging import ForeignOptics, ImagingOptions
from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
from flakehunter.hardware.simulator.setup import ForeignSetup, control_setup, draw_setup
from flakehunter.hardware.simulator.spectra import reflectance_na
from flakehunter.optics import layer_contrast
from flakehunter.registry import get_registry
from flakehunter.tiles import read_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _foreign_scoring import score

# A hand-made chip: 1L and 3L flakes, a thick body, residue, a dust speck with a halo and a scratch.
HAND_LAYOUT = {
    "material": "graphene", "bounds_um": [0, 0, 1000, 1000], "nominal_oxide_nm": 90.0, "oxide_nm": 92.0,
    "oxide_gradient_nm_per_mm": [0.5, -0.3],
    "focus": {"z_at_centre_um": 0.0, "dz_dx_um_per_mm": 0.0, "dz_dy_um_per_mm": 0.0},
    "flakes": [
        {"id": 1, "kind": "thin", "layers": 1, "theta_deg": 10.0, "straight_edges": True,
         "polygon_um": [[[420, 440], [480, 430], [490, 480], [430, 490]]]},
        {"id": 2, "kind": "thin", "layers": 3, "theta_deg": 0.0, "straight_edges": True,
         "polygon_um": [[[520, 520], [570, 520], [570, 560], [520, 560]]]},
        {"id": 3, "kind": "thick", "layers": 300, "theta_deg": 0.0, "straight_edges": True,
         "polygon_um": [[[540, 430], [590, 440], [580, 480]]]},
    ],
    "residue": [{"id": 1, "thickness_nm": 4.0, "polygon_um": [[[410, 530], [470, 540], [460, 560], [405, 550]]]}],
    "dust": [{"id": 1, "x_um": 500, "y_um": 500, "radius_um": 2.0, "gain": 0.5, "halo": True}],
    "scratches": [{"id": 1, "depth_nm": 10.0, "polygon_um": [[[400, 580], [600, 585], [600, 588], [400, 583]]]}],
}
# SHA-256 of frames rendered with the code as it was before foreign setups existed (hard-coded on purpose:
# the default camera must keep rendering bit for bit, so scan_accuracy.py and detection_quality.py keep
# their numbers).
HAND_FRAME_SHA = {
    "default": "ca86edbc21295b23d595725a04093503e48f4028f6f27d266acbe0f681ff3ec9",
    "12bit-2800K": "fd8d81b162dbe03b8bba4c510d1d21e3f9620aecb4916f64a70eac8f15fa10dc",
}
GENERATED_FRAME_SHA = "240f1ccb6781a46bb72bb0ca1890d6ce3ab10397f011c6ce35f7ead123eff7d9"
# The generated layout (its numbers rounded, see `_rounded`).
GENERATED_LAYOUT_SHA = "493bfdf403dfce9ba209ad71a9026525b70426ed73d24e103995324ba5c6f2ef"
SMALL_SPEC = ChipSpec(origin_um=(0, 0), size_um=(600.0, 600.0), edge_margin_um=20, thin_flakes=12, thick_flakes=4,
                      multilayer_flakes=2, residue_blobs=3, dust=15, scratches=1, min_spacing_um=8)
SHAPE = (160, 240)


def _rounded(value):
    """The layout's numbers to 10 significant digits: NumPy's vectorised trigonometry differs in the last bit
    from one CPU to another (AVX-512 or not), which changes no placement and no rendered pixel."""
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _hand_frame(**options) -> np.ndarray:
    scope = SimulatedMicroscope(ChipLayout.from_dict(HAND_LAYOUT), seed=3, shape=SHAPE, **options)
    return scope.snap_at(500.0, 500.0)


# ------------------------------------------------------------------------------------ default unchanged


@pytest.mark.parametrize(("name", "options"), [("default", {}),
                                               ("12bit-2800K", {"bit_depth": 12, "lamp_temperature_k": 2800.0})])
def test_default_render_is_bit_identical_to_before(name, options):
    assert _sha(_hand_frame(**options)) == HAND_FRAME_SHA[name]


def test_generated_chip_and_its_frame_are_unchanged():
    layout = generate_chip(SMALL_SPEC, get_registry().material("graphene"), 90.0, seed=5)
    layout_json = json.dumps(_rounded(layout.to_dict()), sort_keys=True)
    assert hashlib.sha256(layout_json.encode()).hexdigest() == GENERATED_LAYOUT_SHA
    scope = SimulatedMicroscope(layout, seed=3, shape=SHAPE)
    assert _sha(scope.snap_at(300.0, 300.0)) == GENERATED_FRAME_SHA


# ------------------------------------------------------------------------------------ setups


def test_setups_are_reproducible_from_their_seed_and_differ_between_seeds():
    assert draw_setup(7) == draw_setup(7)
    assert draw_setup(7).model_dump() != draw_setup(8).model_dump()
    assert ForeignSetup.model_validate(draw_setup(7).model_dump(mode="json")) == draw_setup(7)


def test_drawn_setups_stay_within_their_ranges():
    setups = [draw_setup(seed) for seed in range(60)]
    for s in setups:
        assert 50.0 <= s.oxide_nm <= 320.0
        assert s.stated_oxide_nm is None or abs(s.stated_oxide_nm - s.oxide_nm) <= 15.0
        assert 0.3 <= s.pixel_size_um <= 2.5
        assert 0.5 <= s.psf_sigma_px <= 2.5
        assert 0.9 <= s.flake_index.n_scale <= 1.1 and 0.9 <= s.flake_index.k_scale <= 1.1
        assert s.file_format != "jpeg" or (s.bit_depth == 8 and 70 <= s.jpeg_quality <= 95)
        assert s.material != "hbn"
    # Every option is drawn somewhere in 60 setups.
    assert any(s.stated_oxide_nm is None for s in setups) and any(s.stated_oxide_nm is not None for s in setups)
    assert {s.tone for s in setups} == {"linear", "gamma", "srgb"}
    assert {s.white_balance for s in setups} == {"grey-world", "preset", "off"}
    assert {s.bit_depth for s in setups} == {8, 12, 16}
    assert {s.file_format for s in setups} == {"ome-tiff", "png", "jpeg"}
    assert len({s.flake_index.source for s in setups if s.material == "mos2"}) >= 2
    assert {s.camera.sensor for s in setups} >= {"gaussian", "nikon-d5100", "sigma-sd-merrill", "sony-icx282aq"}
    assert {s.lamp for s in setups} > {"halogen"}


def test_control_setup_reproduces_the_detectors_model():
    """Written as a setup, the detector's own model gives the detector's contrasts (the chain is the same
    physics; the small rest is the wider wavelength grid)."""
    registry = get_registry()
    for material, oxide in (("graphene", 90.0), ("graphene", 285.0), ("mos2", 90.0), ("wse2", 285.0)):
        optics = ForeignOptics(control_setup(material, oxide), registry.material(material))
        for layers in (1, 2, 3):
            expected = layer_contrast(registry.material(material), layers, oxide)
            assert optics.flake_ratio(layers, oxide) - 1 == pytest.approx(expected, abs=0.01)


def test_finite_aperture_matches_optics_reference():
    # optics.md §1.6: 1L graphene on 285 nm, C at 450/550/600 nm for NA 0.45 and 0.8 (uniform pupil).
    lam = np.array([450.0, 550.0, 600.0])
    n_si = np.array([4.691 + 0.0863j, 4.077 + 0.028j, 3.940 + 0.0199j])
    n_ox = np.array([1.4656, 1.4599, 1.4580], complex)
    graphene = np.full(3, 2.6 + 1.3j)
    for na, expected in ((0.0, (0.006, -0.126, -0.105)), (0.45, (0.001, -0.138, -0.085)),
                         (0.8, (-0.021, -0.097, -0.046))):
        bare = reflectance_na([n_ox], [285.0], n_si, lam, na, angles=24)
        flake = reflectance_na([graphene, n_ox], [0.335, 285.0], n_si, lam, na, angles=24)
        assert flake / bare - 1 == pytest.approx(expected, abs=1.5e-3)


def test_other_index_sources_change_the_contrast():
    registry = get_registry()
    base = control_setup("mos2", 90.0)
    contrasts = {}
    for source in ("catalog", "islam2021", "ermolaev2020", "song2019"):
        setup = base.model_copy(update={"flake_index": base.flake_index.model_copy(update={"source": source})})
        contrasts[source] = ForeignOptics(setup, registry.material("mos2")).flake_ratio(1, 90.0) - 1
    values = np.array(list(contrasts.values()))
    assert np.all(values[:, 0] < -0.1)  # every source: 1L MoS2 on 90 nm is clearly darker in red
    assert np.ptp(values, axis=0).max() > 0.05  # but the sources disagree by several per cent


# ------------------------------------------------------------------------------------ each stage


def _setup(**changes) -> ForeignSetup:
    base = control_setup("graphene", 90.0).model_copy(update={"seed": 11, "vignetting_a": 0.0, "colour_tilt": 0.0,
                                                               "shading_rms": 0.0, "flicker": 0.0})
    return base.model_copy(update=changes)


def _foreign_frame(setup: ForeignSetup, jpeg: bool = True) -> np.ndarray:
    return _hand_frame(imaging=ImagingOptions(setup=setup, jpeg_roundtrip=jpeg))


def test_camera_option_renders_a_foreign_setup_and_validates_it():
    frame = _foreign_frame(_setup())
    assert frame.shape == (*SHAPE, 3) and frame.dtype == np.uint8
    assert _sha(frame) != HAND_FRAME_SHA["default"]
    seeded = _hand_frame(imaging={"foreign_seed": 4})
    assert _sha(seeded) == _sha(_hand_frame(imaging={"foreign_seed": 4}))  # deterministic
    with pytest.raises(ValueError, match="exactly one"):
        ImagingOptions()
    from flakehunter.errors import InputError

    with pytest.raises(InputError, match="mos2"):
        _foreign_frame(_setup(material="mos2"))


def test_gamma_lifts_mid_tones():
    linear = _foreign_frame(_setup(tone="linear", exposure=0.3)).astype(float)
    gamma = _foreign_frame(_setup(tone="gamma", gamma=2.2, exposure=0.3)).astype(float)
    srgb = _foreign_frame(_setup(tone="srgb", exposure=0.3)).astype(float)
    lin_level = np.median(linear[..., 1]) / 255
    assert np.median(gamma[..., 1]) / 255 == pytest.approx(lin_level ** (1 / 2.2), abs=0.02)
    assert np.median(srgb[..., 1]) > np.median(linear[..., 1]) + 40


def test_jpeg_adds_block_artefacts():
    clean = _foreign_frame(_setup(file_format="jpeg", jpeg_quality=70, read_noise_e=0.0), jpeg=False).astype(float)
    coded = _foreign_frame(_setup(file_format="jpeg", jpeg_quality=70, read_noise_e=0.0), jpeg=True).astype(float)
    diff = np.abs(coded - clean).mean(axis=2)
    assert diff.mean() > 0.5

    def boundary_jump(img: np.ndarray) -> float:
        steps = np.abs(np.diff(img[..., 1], axis=1))
        at_block = steps[:, 7::8].mean()
        inside = np.delete(steps, np.s_[7::8], axis=1).mean()
        return at_block / inside

    assert boundary_jump(coded) > boundary_jump(clean) * 1.05


def test_twelve_bit_stays_within_4095():
    frame = _foreign_frame(_setup(bit_depth=12, exposure=0.7))
    assert frame.dtype == np.uint16
    assert frame.max() <= 4095 and frame.max() > 2000


def test_grey_world_white_balance_makes_the_substrate_grey():
    warm = {"lamp_temperature_k": 2700.0}
    off = np.median(_foreign_frame(_setup(white_balance="off", **warm)).reshape(-1, 3), axis=0)
    grey = np.median(_foreign_frame(_setup(white_balance="grey-world", **warm)).reshape(-1, 3), axis=0)
    assert np.ptp(off) > 20  # a 90 nm chip under a 2700 K lamp is far from grey
    assert np.ptp(grey) <= 2


def test_psf_widens_an_edge():
    def edge_width(sigma_px: float) -> float:
        frame = _foreign_frame(_setup(psf_sigma_px=sigma_px, read_noise_e=0.0, full_well_e=1e7)).astype(float)
        row = frame[115, :, 1]  # y = 540 µm, through the 3L square's left edge x = 520 µm (col 137)
        segment = row[120:160]
        lo, hi = segment.min(), segment.max()
        return float(np.sum((segment > lo + 0.1 * (hi - lo)) & (segment < lo + 0.9 * (hi - lo))))

    assert edge_width(2.5) > edge_width(0.5) + 2


# ------------------------------------------------------------------------------------ tiles and scoring


@pytest.fixture(scope="module")
def small_chip():
    setup = draw_setup(3).model_copy(update={"file_format": "png", "bit_depth": 12})
    return render_foreign_chip(setup, tiles=2, shape=(240, 320))


def test_tiles_come_with_truth_in_their_pixels(small_chip, tmp_path):
    tile = small_chip.tiles[0]
    assert tile.image.shape == (240, 320, 3)
    assert tile.flakes, "the chip should put flakes in a tile"
    for f in tile.flakes:
        minc, minr, maxc, maxr = f.polygon_px.bounds
        assert minc >= -0.5 and maxc <= 319.5 and minr >= -0.5 and maxr <= 239.5
        assert 0 < f.visible_fraction <= 1
    path = write_tile_file(tile, tmp_path, small_chip.setup)
    data, _ = read_image(path)
    assert path.suffix == ".png" and data.dtype == np.uint16 and data.max() <= 4095
    assert np.array_equal(data, tile.image)


def _perfect_candidates(chip) -> tuple[list[Candidate], dict]:
    truth, out = {}, []
    for tile in chip.tiles:
        truth[tile.name] = tile.flakes
        for f in tile.flakes:
            point = f.polygon_px.representative_point()
            out.append(Candidate(
                id=len(out) + 1, x_um=0.0, y_um=0.0, material=chip.setup.material, layers=f.layers,
                layer_class=f"{f.layers}L", score=1.0, area_um2=f.area_um2, orientation_deg=f.theta_deg,
                image=f"/data/{tile.name}.png", row=point.y, col=point.x,
            ))
    return out, truth


def test_scoring_is_perfect_on_the_truth_and_drops_when_candidates_go_wrong(small_chip):
    candidates, truth = _perfect_candidates(small_chip)
    p = small_chip.setup.pixel_size_um
    perfect = score(candidates, truth, p, symmetry_deg=60.0)
    assert perfect["truth_flakes"] >= 3
    assert perfect["recall"] == 1.0 and perfect["precision"] == 1.0 and perfect["layer_accuracy"] == 1.0
    assert perfect["orientation_rms_deg"] == pytest.approx(0.0, abs=1e-9)

    thin = [i for i, c in enumerate(candidates) if c.layers <= 3 and c.area_um2 >= 50]
    removed = [c for i, c in enumerate(candidates) if i != thin[0]]
    assert score(removed, truth, p, symmetry_deg=60.0)["recall"] < 1.0

    wrong = [Candidate(**{**vars(c), "layers": 1 if c.layers == 2 else 2}) if i in thin else c
             for i, c in enumerate(candidates)]
    assert score(wrong, truth, p, symmetry_deg=60.0)["layer_accuracy"] < 1.0

    stray = Candidate(id=999, x_um=0, y_um=0, material="x", layers=1, layer_class="1L", score=1.0, area_um2=80.0,
                      orientation_deg=None, image=f"/data/{small_chip.tiles[0].name}.png", row=-50.0, col=-50.0)
    assert score([*candidates, stray], truth, p, symmetry_deg=60.0)["precision"] < 1.0

    turned = [Candidate(**{**vars(c), "orientation_deg": (c.orientation_deg or 0) + 5}) for c in candidates]
    assert score(turned, truth, p, symmetry_deg=60.0)["orientation_rms_deg"] == pytest.approx(5.0)


def test_the_benchmark_can_tell_every_setup_its_oxide_or_none():
    """`--oxide stated|unstated` changes only what the user states: the drawn value where there is one, the
    true oxide to 5 nm where there is none, or nothing at all."""
    from foreign_setups import detect_command

    setups = [draw_setup(i) for i in range(20)]
    drawn = next(s for s in setups if s.stated_oxide_nm is not None)
    silent = next(s for s in setups if s.stated_oxide_nm is None)

    def told(setup: ForeignSetup, oxide: str) -> float | None:
        cmd = detect_command(Path("images"), Path("run"), setup, [], oxide)
        return float(cmd[cmd.index("--oxide-nm") + 1]) if "--oxide-nm" in cmd else None

    assert told(drawn, "as-drawn") == told(drawn, "stated") == pytest.approx(drawn.stated_oxide_nm)
    assert told(silent, "as-drawn") is None and told(drawn, "unstated") is None
    assert told(silent, "stated") == 5.0 * round(silent.oxide_nm / 5.0)
