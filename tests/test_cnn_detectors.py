"""cnn-thickness and cnn-axis on small simulated images, on the CPU, alone and after the contrast detector;
and ``flakehunter explain`` writing a Grad-CAM overlay of a candidate."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import flakehunter.plugins.cnn as cnn_plugin
from flakehunter.analysis.detector import Detection
from flakehunter.analysis.pipeline import PipelineSpec, build_pipeline
from flakehunter.config import DetectorSection
from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.chip import ChipSpec
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
from flakehunter.registry import Registry, add_plugin, get_registry
from flakehunter.tiles import ImageMeta, write_tile

PIXEL_UM = 1.0
SHAPE = (240, 320)


@pytest.fixture
def registry() -> Registry:
    found = get_registry()
    if "cnn-thickness" in found.names("detector"):
        return found  # installed through the entry point
    return add_plugin(cnn_plugin, name="cnn", package="flakehunter")


@pytest.fixture(scope="module")
def tiles() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two frames of a dense graphene chip (90 nm oxide, 1 µm/px) and their label images (layer counts)."""
    from flakehunter.registry import get_registry as fresh

    spec = ChipSpec(origin_um=(0, 0), size_um=(700.0, 300.0), edge_margin_um=10.0, thin_flakes=40,
                    thin_median_diameter_um=20.0, thin_min_diameter_um=10.0, thick_flakes=6, multilayer_flakes=3,
                    residue_blobs=3, dust=20, min_spacing_um=10.0)
    layout = generate_chip(spec, fresh().material("graphene"), 90.0, seed=4)
    scope = SimulatedMicroscope(layout, seed=4, transform=PixelTransform(PIXEL_UM), shape=SHAPE)
    centres = [(170.0, 150.0), (500.0, 150.0)]
    return [scope.snap_at(x, y) for x, y in centres], [scope.label_image_at(x, y) for x, y in centres]


def _pipeline(registry: Registry, names: str):
    spec = PipelineSpec(material="graphene", oxide_nm=90.0, pixel_size_um=PIXEL_UM, device="cpu",
                        detectors=tuple(DetectorSection(name=n) for n in names.split(",")))
    return build_pipeline(spec, registry)


def _on_thin_flake(d: Detection, labels: np.ndarray) -> bool:
    r, c = round(d.row), round(d.col)
    window = labels[max(r - 3, 0) : r + 4, max(c - 3, 0) : c + 4]
    return bool(np.isin(window, [1, 2, 3]).any())


def test_cnn_thickness_alone_finds_thin_flakes_on_a_small_image(registry: Registry, tiles) -> None:
    images, labels = tiles
    pipeline = _pipeline(registry, "cnn-thickness")
    found = pipeline.run(images[0], ImageMeta(pixel_size_um=PIXEL_UM))
    assert found, "no candidate at all"
    for d in found:
        assert d.detector == "cnn-thickness" and d.layer_class in ("1L", "2L", "3L") and d.layers in (1, 2, 3)
        assert 0.0 <= d.score <= 1.0 and d.area_px >= 25 and d.extra["cnn_only"]
        r0, c0, r1, c1 = d.bbox
        assert 0 <= r0 < r1 <= SHAPE[0] and 0 <= c0 < c1 <= SHAPE[1]
    on_flakes = sum(_on_thin_flake(d, labels[0]) for d in found)
    assert on_flakes >= 0.8 * len(found)
    # Batched (two images in one pass) gives what one at a time gives.
    one = [pipeline.run(im, ImageMeta(pixel_size_um=PIXEL_UM)) for im in images]
    both = pipeline.run_batch(images, [ImageMeta(pixel_size_um=PIXEL_UM) for _ in images])
    assert [[(round(d.row, 3), d.layer_class) for d in x] for x in one] == \
        [[(round(d.row, 3), d.layer_class) for d in x] for x in both]


def test_the_cnn_chain_after_the_contrast_detector(registry: Registry, tiles) -> None:
    images, labels = tiles
    pipeline = _pipeline(registry, "contrast,cnn-thickness,cnn-axis")
    metas = [ImageMeta(pixel_size_um=PIXEL_UM) for _ in images]
    pipeline.calibrate(list(zip(images, metas, strict=True)))
    per_image = [pipeline.run(im, m) for im, m in zip(images, metas, strict=True)]
    found = [d for dets in per_image for d in dets]
    reviewed = [d for d in found if d.detector == "contrast"]
    assert reviewed and all("cnn_class" in d.extra for d in reviewed)
    axes = [d for d in found if "axis_cnn_deg" in d.extra]
    assert axes, "cnn-axis looked at no candidate"
    for d in axes:
        assert 0.0 <= d.extra["axis_cnn_deg"] < 30.0
        if d.orientation_deg is not None:
            assert 0.0 <= d.orientation_deg < 30.0
    # The network sees a thin flake where the contrast detector reports one (its own layer count, without a
    # ladder, is a weak opinion: the ladder's count is kept and a disagreement only lowers the score).
    on_flakes = [d for dets, lab in zip(per_image, labels, strict=True) for d in dets
                 if d.detector == "contrast" and _on_thin_flake(d, lab)]
    thin = [d for d in on_flakes if d.extra["cnn_class"] in ("1L", "2L", "3L")]
    assert on_flakes and len(thin) >= 0.8 * len(on_flakes)
    for d in reviewed:
        assert d.layers in (1, 2, 3) and 0.0 <= d.score <= 1.0


def test_explain_writes_a_grad_cam_overlay_of_a_candidate(registry: Registry, tiles, tmp_path) -> None:
    from flakehunter.cli import app
    from flakehunter.plugins.cnn.explain import explain_path, write_explanation

    images, _ = tiles
    folder = tmp_path / "images"
    folder.mkdir()
    write_tile(folder / "a.ome.tif", images[0], pixel_size_um=PIXEL_UM, x_um=0.0, y_um=0.0, z_um=None, provenance={})
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["detect", str(folder), "--material", "graphene", "--oxide-nm", "90",
                                      "--detectors", "cnn-thickness", "--out", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    path = write_explanation(run, 1, device="cpu")
    assert path == explain_path(run, 1) and path.stat().st_size > 1000
    from flakehunter.errors import InputError

    with pytest.raises(InputError, match="no candidate 999"):
        write_explanation(run, 999, device="cpu")
