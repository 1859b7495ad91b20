"""`flakehunter detect` on images written by other programs: positions from OME and Micro-Manager metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from flakehunter.analysis.evaluation import TruthFlake, match, summarize
from flakehunter.candidates import read_candidates
from flakehunter.geometry import PixelTransform
from flakehunter.hardware.simulator.chip import ChipSpec
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
from flakehunter.registry import get_registry

PIXEL_UM = 1.15
SHAPE = (400, 600)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flakehunter", *args], capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):
    """Frames of a dense 1.2 x 1.2 mm chip on a 3 x 3 overlapping grid, with their truth."""
    material = get_registry().material("graphene")
    spec = ChipSpec(
        origin_um=(0, 0), size_um=(1200, 1200), thin_flakes=30, thick_flakes=10, multilayer_flakes=3,
        residue_blobs=3, dust=15, min_spacing_um=12,
    )
    layout = generate_chip(spec, material, 90.0, seed=5)
    scope = SimulatedMicroscope(layout, seed=5, transform=PixelTransform(PIXEL_UM), shape=SHAPE)
    step_x, step_y = SHAPE[1] * PIXEL_UM * 0.85, SHAPE[0] * PIXEL_UM * 0.85
    positions = [(345 + j * step_x, 230 + i * step_y) for i in range(3) for j in range(3)]
    frames = [(x, y, scope.snap_at(x, y)) for x, y in positions]
    truth = [
        TruthFlake(f.id, f.layers, f.theta_deg, f.area_um2, f.polygon, f.straight_edges) for f in layout.flakes
    ]
    covered = [_footprint(x, y) for x, y, _ in frames]
    return frames, truth, covered, tmp_path_factory.mktemp("frames")


def _footprint(x: float, y: float):
    return PixelTransform(PIXEL_UM).footprint((x, y), SHAPE)


def _visible_truth(truth: list[TruthFlake], covered) -> list[TruthFlake]:
    """Flakes that lie wholly inside at least one frame (the others cannot be expected)."""
    return [f for f in truth if any(f.polygon.buffer(3).within(fp) for fp in covered)]


def _check(out: Path, truth: list[TruthFlake]) -> None:
    candidates = read_candidates(out)
    assert candidates and all(c.positioned for c in candidates)
    m = match(candidates, truth, tolerance_um=3.0)
    s12 = summarize(m, layers=(1, 2), min_area_um2=50)
    s13 = summarize(m, layers=(1, 2, 3), min_area_um2=50)
    assert s12["truth_flakes"] >= 8
    assert s12["recall"] >= 0.9, s12
    assert s13["precision"] >= 0.8, s13
    assert s13["duplicates"] == 0, s13


def test_detect_reads_positions_from_foreign_ome_tiffs(rendered) -> None:
    """Acceptance: OME-TIFFs written by another program (pixel size in nm) give the right stage µm."""
    frames, truth, covered, folder = rendered
    src = folder / "ome"
    src.mkdir()
    for k, (x, y, image) in enumerate(frames):
        tifffile.imwrite(
            src / f"Pos{k:03d}.ome.tif",
            image,
            photometric="rgb",
            metadata={
                "axes": "YXS",
                "PhysicalSizeX": PIXEL_UM * 1000, "PhysicalSizeXUnit": "nm",
                "PhysicalSizeY": PIXEL_UM * 1000, "PhysicalSizeYUnit": "nm",
                "Plane": {"PositionX": [x], "PositionXUnit": ["µm"], "PositionY": [y], "PositionYUnit": ["µm"]},
            },
        )
    out = folder / "out-ome"
    result = run_cli("detect", str(src), "--material", "graphene", "--oxide-nm", "90", "--out", str(out))
    assert result.returncode == 0, result.stderr
    _check(out, _visible_truth(truth, covered))
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["position_source"] for f in manifest["items"]} == {"ome"}


def test_detect_reads_micromanager_positions(rendered) -> None:
    """Micro-Manager's per-image JSON tag (XPositionUm, PixelSizeUm) places candidates too."""
    frames, truth, covered, folder = rendered
    src = folder / "mm"
    src.mkdir()
    for k, (x, y, image) in enumerate(frames):
        tag = json.dumps({"XPositionUm": x, "YPositionUm": y, "ZPositionUm": 0.0, "PixelSizeUm": PIXEL_UM})
        tifffile.imwrite(src / f"img_{k:03d}.tif", image, photometric="rgb", extratags=[(51123, "s", 0, tag, True)])
    out = folder / "out-mm"
    result = run_cli("detect", str(src), "--material", "graphene", "--out", str(out))
    assert result.returncode == 0, result.stderr
    _check(out, _visible_truth(truth, covered))


def test_detect_without_positions_uses_the_pixel_size_argument(rendered) -> None:
    """PNG files with no metadata need --pixel-size-um; candidates are then relative to each image centre."""
    frames, _, _, folder = rendered
    src = folder / "png"
    src.mkdir()
    _x, _y, image = frames[4]
    cv2.imwrite(str(src / "frame.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    missing = run_cli("detect", str(src), "--material", "graphene", "--out", str(folder / "no-px"))
    assert missing.returncode == 2
    assert "frame.png" in missing.stderr and "--pixel-size-um" in missing.stderr
    out = folder / "out-png"
    result = run_cli("detect", str(src), "--material", "graphene", "--pixel-size-um", str(PIXEL_UM), "--out", str(out))
    assert result.returncode == 0, result.stderr
    candidates = read_candidates(out)
    assert candidates and not any(c.positioned for c in candidates)
    for c in candidates:
        assert c.x_um == pytest.approx((c.col - SHAPE[1] / 2) * PIXEL_UM, abs=1e-3)


def test_detect_reports_bad_files_and_keeps_the_good(rendered) -> None:
    """A truncated TIFF among good ones: the good are analysed, the bad named, exit 2; rerun skips done files."""
    frames, _, _, folder = rendered
    src = folder / "mixed"
    src.mkdir()
    for k in (0, 1):
        x, y, image = frames[k]
        tifffile.imwrite(src / f"good{k}.tif", image, photometric="rgb",
                         extratags=[(51123, "s", 0, json.dumps({"XPositionUm": x, "YPositionUm": y,
                                                                 "PixelSizeUm": PIXEL_UM}), True)])
    data = (src / "good0.tif").read_bytes()
    (src / "broken.tif").write_bytes(data[: len(data) // 2])
    out = folder / "out-mixed"
    result = run_cli("detect", str(src), "--material", "graphene", "--out", str(out))
    assert result.returncode == 2
    assert "broken.tif" in result.stderr and "Traceback" not in result.stderr
    before = (out / "candidates.jsonl").read_text()
    assert before
    again = run_cli("detect", str(src), "--material", "graphene", "--out", str(out))
    assert again.returncode == 2
    assert (out / "candidates.jsonl").read_text() == before, "finished files are not analysed twice"


def test_detect_rejects_an_unknown_material(tmp_path: Path) -> None:
    """--material that no plugin provides is exit 2 with the list of known materials."""
    image = np.full((50, 50, 3), 120, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    result = run_cli("detect", str(tmp_path / "a.png"), "--material", "unobtainium", "--pixel-size-um", "1",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "unobtainium" in result.stderr and "graphene" in result.stderr
