"""Camera plugins end to end: replay a recorded scan through a real serial driver, the OpenCV camera on a
real video stream, and the Micro-Manager bridge (real adapters when installed, else skipped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from flakehunter.candidates import read_candidates
from flakehunter.errors import HardwareError
from flakehunter.registry import get_registry
from flakehunter.scan import Scan
from flakehunter.testing.emulators import FAST_STAGE_OPTIONS, TangoEmulator
from flakehunter.tiles import read_image
from tests.conftest import SMALL_SCAN, deep_update
from tests.test_hardware_contracts import python_core, write_video

#: Four tiles of the small simulated chip, where it has flakes to find.
RECORDED = deep_update(SMALL_SCAN, {
    "camera": {"options": {"shape": [200, 300]}},
    "region": {"rectangle": {"corner1_um": [400, 400], "corner2_um": [1000, 800]}},
})


def test_replay_camera_reruns_a_recorded_scan_through_a_serial_stage(tmp_path: Path) -> None:
    """Scan once on the simulator; scan again with the Tango driver on its emulator and the replay camera
    reading the recorded tiles by stage position: every tile is served pixel for pixel, and the
    detectors find the same candidates."""
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(RECORDED), encoding="utf-8")
    summary = Scan(first, tmp_path / "recorded").run()
    assert summary["status"] == "completed"
    recorded = sorted((tmp_path / "recorded" / "tiles").glob("*.tif"))
    assert len(recorded) >= 4

    with TangoEmulator() as tango:
        replay = deep_update(RECORDED, {})
        replay["camera"] = {"plugin": "replay", "options": {"source": "recorded"}}
        replay["stage"] = {"plugin": "tango", "options": {"port": tango.port, **FAST_STAGE_OPTIONS},
                           "limits_um": RECORDED["stage"]["limits_um"]}
        second = tmp_path / "replay.yaml"
        second.write_text(yaml.safe_dump(replay), encoding="utf-8")
        summary = Scan(second, tmp_path / "replayed").run()
        assert summary["status"] == "completed"
        assert len(tango.moves) == len(recorded)

    for path in recorded:
        original, _ = read_image(path)
        again, _ = read_image(tmp_path / "replayed" / "tiles" / path.name)
        assert np.array_equal(original, again), path.name
    a = read_candidates(tmp_path / "recorded" / "candidates.jsonl")
    b = read_candidates(tmp_path / "replayed" / "candidates.jsonl")
    assert len(a) > 0 and len(a) == len(b)
    for ca, cb in zip(a, b, strict=True):
        assert (ca.layer_class, ca.image, ca.area_um2) == (cb.layer_class, cb.image, cb.area_um2)
        assert abs(ca.x_um - cb.x_um) < 0.01 and abs(ca.y_um - cb.y_um) < 0.01


def test_replay_camera_refuses_a_position_it_has_no_tile_for(tmp_path: Path) -> None:
    """Away from every recorded tile the replay camera raises instead of serving the nearest one."""
    from flakehunter.devices import DeviceContext
    from flakehunter.geometry import PixelTransform
    from flakehunter.tiles import write_tile

    write_tile(tmp_path / "a.ome.tif", np.zeros((20, 30), np.uint8), pixel_size_um=1.0, x_um=50.0, y_um=60.0,
               z_um=0.0, provenance={})
    stage_factory = get_registry().get("stage", "simulator").obj
    stage = stage_factory(stage_factory.Options(time_scale=0), None)
    factory = get_registry().get("camera", "replay").obj
    camera = factory(factory.Options(source=tmp_path, tolerance_um=1.0),
                     DeviceContext(transform=PixelTransform(1.0), material="graphene", oxide_nm=90, seed=0,
                                   stage=stage))
    camera.connect()
    stage.move_to_um(50.5, 60.0, 0.0)
    assert camera.snap().shape == (20, 30)
    stage.move_to_um(52.0, 60.0, 0.0)
    with pytest.raises(HardwareError, match=r"within 1 µm .* the nearest, a\.ome\.tif, is 2\.00 µm away"):
        camera.snap()


def test_opencv_camera_delivers_rgb_and_checks_the_frame_size(tmp_path: Path) -> None:
    """Frames come out RGB (OpenCV reads BGR); a camera that cannot deliver the configured size, or
    cannot be opened, is a one-line HardwareError naming it."""
    factory = get_registry().get("camera", "opencv").obj
    video = write_video(tmp_path / "stream.avi")
    camera = factory(factory.Options(device=str(video), shape=(48, 64), flush_frames=0), None)
    camera.connect()
    frame = camera.snap()
    camera.close()
    r, g, b = frame[16, 20].astype(int)
    assert r > 200 and g < 40 and b < 40  # the red square is red
    wrong = factory(factory.Options(device=str(video), shape=(480, 640)), None)
    with pytest.raises(HardwareError, match=r"delivers 48x64 .* set camera.options.shape to \[48, 64\]"):
        wrong.connect()
    missing = factory(factory.Options(device=str(tmp_path / "no-such-camera.avi"), shape=(48, 64)), None)
    with pytest.raises(HardwareError, match="cannot open it"):
        missing.connect()


def test_micromanager_stage_drives_a_scan(tmp_path: Path) -> None:
    """The Micro-Manager XY/Z stage (here Python devices in pymmcore-plus's UniMMCore) works as a scan's
    stage; the simulator camera renders what lies under it."""
    from flakehunter.hardware.micromanager.devices import forget_core

    core = python_core("scan")
    config = deep_update(RECORDED, {"focus": {"mode": "plane", "points_um": [[0, 0, 1], [1000, 0, 2], [0, 1000, 3]]},
                                    "region": {"rectangle": {"corner1_um": [400, 400], "corner2_um": [700, 600]}}})
    config["stage"] = {"plugin": "micromanager", "options": {"core": "scan"},
                       "limits_um": RECORDED["stage"]["limits_um"]}
    path = tmp_path / "mm.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    try:
        runner = Scan(path, tmp_path / "run")
        tiles = runner.prepare().tiles
        summary = runner.run()
        assert summary["status"] == "completed"
        last = tiles[-1]
        assert core.getXYPosition("XY") == pytest.approx((last.x_um, last.y_um))
        assert core.getPosition("Z") == pytest.approx(last.z_um)
    finally:
        forget_core("scan")


def _adapters() -> Any:
    pymmcore_plus = pytest.importorskip("pymmcore_plus")
    path = pymmcore_plus.find_micromanager()
    if not path:
        pytest.skip("no Micro-Manager device adapters installed (run 'mmcore install' to enable this test)")
    return path


def test_micromanager_demo_adapters_through_the_bridge() -> None:
    """With Micro-Manager installed: the demo configuration's camera and XY stage work as plugins."""
    _adapters()
    stage_factory = get_registry().get("stage", "micromanager").obj
    camera_factory = get_registry().get("camera", "micromanager").obj
    stage = stage_factory(stage_factory.Options(), None)
    stage.connect()
    stage.move_to_um(100.0, -50.0)
    here = stage.position_um()
    assert (here.x_um, here.y_um) == pytest.approx((100.0, -50.0), abs=1.0)
    core = stage.core
    camera = camera_factory(camera_factory.Options(shape=(core.getImageHeight(), core.getImageWidth())), None)
    camera.connect()
    frame = camera.snap()
    assert frame.shape[:2] == camera.shape
    camera.close()
    stage.close()
