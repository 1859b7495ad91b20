"""Issue 11: one process per run directory, every good file analysed, bad outputs and full disks named.

Real processes and real file systems: concurrent `flakehunter` processes race for one run directory,
a size-limited tmpfs fills up under a scan (skipped where this machine may not mount one), and bad
images sit among good ones in a `detect` folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from flakehunter.candidates import read_candidates
from flakehunter.journal import ACQUIRED, DONE, FAILED, Journal
from tests.conftest import SMALL_SCAN, deep_update

SLOW_STAGE = {"stage": {"options": {"time_scale": 1, "settle_s": 1.0, "speed_um_s": 0}}}  # ~25 s for the scan


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flakehunter", *args], capture_output=True, text=True,
                          timeout=timeout)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "flakehunter", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def taken_tiles(run_dir: Path) -> int:
    """Tiles on disk so far (the detector may hold the first ones for calibration before any is done)."""
    db = run_dir / "journal.sqlite"
    if not db.exists():
        return 0
    with Journal(db) as journal:
        return len(journal.keys(ACQUIRED) | journal.keys(DONE))


def write(tmp_path: Path, changes: dict, name: str = "scan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(deep_update(SMALL_SCAN, changes)), encoding="utf-8")
    return path


def rows(run_dir: Path) -> list[tuple]:
    return sorted((c.image, round(c.x_um, 3), round(c.y_um, 3), c.layer_class) for c in read_candidates(run_dir))


# -- one process per run directory ------------------------------------------------------------------------


def test_resume_while_the_scan_runs_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    config = write(tmp_path, SLOW_STAGE)
    run_dir = tmp_path / "run"
    first = start("scan", str(config), "--out", str(run_dir), "--no-progress")
    deadline = time.monotonic() + 120
    while taken_tiles(run_dir) < 2:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = cli("scan", "--resume", str(run_dir))
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid}" in second.stderr and "already running" in second.stderr
    others = [start(*other) for other in (
        ["detect", str(run_dir / "tiles"), "--material", "graphene", "--out", str(run_dir)],
        ["watch", str(tmp_path), "--out", str(run_dir), "--material", "graphene"],
    )]  # at once, so that all of them meet the scan still running
    for refused in others:
        _, refused_err = refused.communicate(timeout=60)
        assert refused.returncode == 2 and f"pid {first.pid}" in refused_err, refused_err
    assert first.poll() is None, "the scan ended before every refusal was tried; slow its stage down"
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["summary"]["counts"]["done"] == manifest["summary"]["items_total"]
    assert manifest["summary"]["candidates"] == len(read_candidates(run_dir)) > 0
    assert f"{manifest['summary']['candidates']} candidates" in out


def test_two_scans_into_one_directory_at_once_one_runs(tmp_path: Path) -> None:
    config = write(tmp_path, SLOW_STAGE)
    run_dir = tmp_path / "run"
    procs = [start("scan", str(config), "--out", str(run_dir), "--no-progress") for _ in range(2)]
    results = [(p.returncode, p.communicate(timeout=300)[1]) for p in procs]
    results = [(p.returncode, err) for p, (_, err) in zip(procs, results, strict=True)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "already running" in refused
    ids = {json.loads(line)["id"] for line in (run_dir / "candidates.jsonl").read_text().splitlines()}
    assert len(ids) == len(read_candidates(run_dir)), "one run's records, each once"
    from flakehunter.tiles import read_geometry

    run_ids = {read_geometry(p)[1].provenance["run_id"] for p in (run_dir / "tiles").glob("*.tif")}  # type: ignore[index]
    assert len(run_ids) == 1, "every tile from the one scan that ran"


def test_an_unusable_out_is_exit_2_naming_the_path(tmp_path: Path) -> None:
    config = write(tmp_path, {})
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    result = cli("scan", str(config), "--out", str(a_file))
    assert result.returncode == 2 and str(a_file) in result.stderr and "not a folder" in result.stderr
    missing = cli("scan", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr and len(missing.stderr.splitlines()) == 1


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str) -> Iterator[Path]:
    """A real size-limited (or read-only) file system at ``path``; skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not permitted'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_out_is_exit_2_naming_the_path(tmp_path: Path) -> None:
    config = write(tmp_path, {})
    with tmpfs(tmp_path / "ro", "1m", "ro") as ro:
        result = cli("scan", str(config), "--out", str(ro / "run"))
    assert result.returncode == 2, result.stderr
    assert str(ro / "run") in result.stderr and "Traceback" not in result.stderr


def test_a_full_disk_names_the_file_and_a_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    """The disk fills while the first tiles are taken (before calibration is done); the manifest says failed,
    the error names a file; after making room, --resume reproduces the uninterrupted run exactly."""
    config = write(tmp_path, {})
    reference = tmp_path / "reference"
    assert cli("scan", str(config), "--out", str(reference)).returncode == 0
    with tmpfs(tmp_path / "disk", "2500k") as disk:
        run_dir = disk / "run"
        failed = cli("scan", str(config), "--out", str(run_dir))
        assert failed.returncode == 1, failed.stderr
        [line] = failed.stderr.strip().splitlines()
        assert str(run_dir) in line and ("disk is full" in line or "No space left" in line), line
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "failed" and manifest["pid"] is None
        status = json.loads(cli("status", str(run_dir), "--json").stdout)
        assert status["running"] is False and status["state"] == "failed"
        subprocess.run(["mount", "-o", "remount,size=200m", str(disk)], check=True)
        resumed = cli("scan", "--resume", str(run_dir))
        assert resumed.returncode == 0, resumed.stderr
        assert rows(run_dir) == rows(reference)
        ours = json.loads((run_dir / "manifest.json").read_text())["calibration"]["detectors"]
        assert ours == json.loads((reference / "manifest.json").read_text())["calibration"]["detectors"]


# -- detect: every good file is analysed -----------------------------------------------------------------


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Four good RGB tiles of a small scan, plus a grayscale TIFF, a NaN-holding float TIFF and a text file."""
    config = write(tmp_path, {"camera": {"options": {"shape": [200, 300]}},
                              "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [600, 400]}}})
    scan = tmp_path / "scan"
    assert cli("scan", str(config), "--out", str(scan)).returncode == 0
    folder = tmp_path / "images"
    folder.mkdir()
    tiles = sorted((scan / "tiles").glob("*.ome.tif"))
    for tile in tiles:
        (folder / tile.name).write_bytes(tile.read_bytes())
    rgb = tifffile.imread(tiles[0])
    tifffile.imwrite(folder / "b_gray.tif", rgb.mean(axis=2).astype(np.uint8))
    with_nan = rgb.astype(np.float32)
    with_nan[10:30, 10:30] = np.nan
    with_nan[40, 40] = np.inf
    tifffile.imwrite(folder / "c_nan.tif", with_nan, photometric="rgb")
    (folder / "d_notes.tif").write_text("exposure=20ms")
    return folder


def test_detect_analyses_every_good_file_and_exits_2_for_the_bad(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["detect", str(mixed_folder), "--material", "graphene", "--oxide-nm", "90", "--pixel-size-um", "1.15",
            "--out", str(out)]
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert "d_notes.tif" in result.stderr and "not TIFF, PNG or JPEG" in result.stderr
    with Journal(out / "journal.sqlite") as journal:
        done = {Path(k).name for k in journal.keys(DONE)}
        failed = {Path(k).name for k in journal.keys(FAILED)}
    assert failed == {"d_notes.tif"}
    assert {"b_gray.tif", "c_nan.tif"} <= done, "grayscale among RGB and NaN pixels are analysed"
    assert len(done) == len(list(mixed_folder.iterdir())) - 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["summary"]["bad_inputs"]) == [str((mixed_folder / "d_notes.tif").resolve())]
    nan_item = next(i for i in manifest["items"] if i["file"].endswith("c_nan.tif"))
    assert any("NaN/inf" in w for w in nan_item["warnings"])
    # A rerun does not stop at the bad file either: the good ones are done, the bad one is tried again.
    again = cli(*args)
    assert again.returncode == 2 and "d_notes.tif" in again.stderr
    assert len(read_candidates(out)) == json.loads((out / "manifest.json").read_text())["summary"]["candidates"]


def test_a_large_image_is_analysed_in_windows_in_bounded_memory(tmp_path: Path) -> None:
    """An image larger than the analysis window is cut into overlapping windows; each flake is reported
    once, where it lies, as if the image had been analysed whole."""
    from flakehunter.analysis.pipeline import PipelineSpec, build_pipeline
    from flakehunter.analysis.step import AnalysisInput, AnalysisStep
    from flakehunter.geometry import PixelTransform
    from flakehunter.hardware.simulator.chip import ChipSpec
    from flakehunter.hardware.simulator.generate import generate_chip
    from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
    from flakehunter.registry import get_registry
    from flakehunter.run.candidate_writer import CandidateWriter

    spec = ChipSpec(origin_um=(0, 0), size_um=(1000, 700), thin_flakes=25, thick_flakes=6, dust=0,
                    residue_blobs=0, min_spacing_um=15)
    layout = generate_chip(spec, get_registry().material("graphene"), 90.0, seed=4)
    scope = SimulatedMicroscope(layout, seed=4, transform=PixelTransform(1.15), shape=(600, 860))
    image = scope.snap_at(500, 350)
    results = {}
    for name, window in (("whole", 4096), ("windows", 256)):
        out = tmp_path / name
        out.mkdir()
        pipeline = build_pipeline(PipelineSpec(material="graphene", oxide_nm=90.0, pixel_size_um=1.15),
                                  get_registry(), out)
        with Journal(out / "journal.sqlite") as journal, CandidateWriter(out) as writer:
            step = AnalysisStep(pipeline, journal, writer, pixel_size_um=1.15, window_px=window, window_overlap_px=96)
            [result] = step.analyse([AnalysisInput("img", image=image)])
        results[name] = sorted((round(c.row), round(c.col), c.layer_class) for c in result.candidates)
    assert len(results["whole"]) >= 5
    matched = [w for w in results["windows"] if any(abs(w[0] - h[0]) <= 3 and abs(w[1] - h[1]) <= 3 and w[2] == h[2]
                                                    for h in results["whole"])]
    assert len(matched) >= 0.8 * len(results["whole"]), results
    assert len(results["windows"]) == len({(r, c) for r, c, _ in results["windows"]}), "each flake once"


def _windowed_step(out: Path, window_px: int, **options: object) -> tuple[object, object]:
    from flakehunter.analysis.pipeline import PipelineSpec, build_pipeline
    from flakehunter.analysis.step import AnalysisStep
    from flakehunter.registry import get_registry
    from flakehunter.run.candidate_writer import CandidateWriter

    out.mkdir()
    pipeline = build_pipeline(PipelineSpec(material="graphene", oxide_nm=90.0, pixel_size_um=1.15), get_registry(), out)
    journal, writer = Journal(out / "journal.sqlite"), CandidateWriter(out)
    step = AnalysisStep(pipeline, journal, writer, pixel_size_um=1.15, window_px=window_px, window_overlap_px=96,
                        **options)  # type: ignore[arg-type]
    return step, (journal, writer)


def test_a_large_tiff_is_read_a_window_at_a_time_with_the_same_result(tmp_path: Path, monkeypatch) -> None:
    """A TIFF larger than the analysis window is never read whole: the windows are read from the file one at
    a time, and the candidates are those of the same windows of the image held in memory."""
    import cv2

    import flakehunter.tiles
    from flakehunter.analysis.step import AnalysisInput
    from flakehunter.geometry import PixelTransform
    from flakehunter.hardware.simulator.chip import ChipSpec
    from flakehunter.hardware.simulator.generate import generate_chip
    from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
    from flakehunter.registry import get_registry

    spec = ChipSpec(origin_um=(0, 0), size_um=(1000, 700), thin_flakes=25, thick_flakes=6, dust=0,
                    residue_blobs=0, min_spacing_um=15)
    layout = generate_chip(spec, get_registry().material("graphene"), 90.0, seed=4)
    scope = SimulatedMicroscope(layout, seed=4, transform=PixelTransform(1.15), shape=(600, 860))
    image = np.asarray(scope.snap_at(500, 350))
    path = tmp_path / "large.tif"
    tifffile.imwrite(path, image, photometric="rgb", rowsperstrip=50, compression="zlib")

    step, (journal, writer) = _windowed_step(tmp_path / "memory", 256)
    with journal, writer:
        [held] = step.analyse([AnalysisInput("img", image=image)])  # type: ignore[attr-defined]

    def no_whole_reads(p: object) -> object:
        raise AssertionError(f"{p} read whole")

    monkeypatch.setattr(flakehunter.tiles, "read_image", no_whole_reads)  # a spy: the real reader must not run
    step, (journal, writer) = _windowed_step(tmp_path / "file", 256, overlays=tmp_path / "overlays")
    with journal, writer:
        [read] = step.analyse([AnalysisInput(str(path), path=path)])  # type: ignore[attr-defined]
    assert read.status == "done" and len(held.candidates) >= 5
    assert [(c.row, c.col, c.layer_class) for c in read.candidates] == \
        [(c.row, c.col, c.layer_class) for c in held.candidates]
    overlay = cv2.imread(str(tmp_path / "overlays" / "large.png"))
    assert overlay is not None and overlay.shape[:2] == (600, 860)


def test_a_large_float_tiff_with_nan_windows_is_analysed_where_it_is_finite(tmp_path: Path) -> None:
    from flakehunter.analysis.step import AnalysisInput

    image = np.full((600, 900, 3), 0.5, np.float32)
    image[:, :300] = np.nan  # the left windows hold no finite pixel
    image[400, 500] = np.inf
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    step, (journal, writer) = _windowed_step(tmp_path / "run", 256)
    with journal, writer:
        [result] = step.analyse([AnalysisInput(str(path), path=path)])  # type: ignore[attr-defined]
        assert result.status == "done"
        assert any("NaN/inf pixel value(s)" in w for w in result.warnings)
        image[:] = np.nan
        tifffile.imwrite(path, image, photometric="rgb")
        [result] = step.analyse([AnalysisInput(str(path) + "#2", path=path)])  # type: ignore[attr-defined]
    assert result.status == "failed" and "no finite pixel" in (result.error or "")


def test_an_image_over_the_size_limit_is_refused_with_its_size(tmp_path: Path) -> None:
    from flakehunter.analysis.pipeline import PipelineSpec, build_pipeline
    from flakehunter.analysis.step import AnalysisInput, AnalysisStep
    from flakehunter.registry import get_registry
    from flakehunter.run.candidate_writer import CandidateWriter

    pipeline = build_pipeline(PipelineSpec(material="graphene", oxide_nm=90.0), get_registry(), tmp_path)
    with Journal(tmp_path / "journal.sqlite") as journal, CandidateWriter(tmp_path) as writer:
        step = AnalysisStep(pipeline, journal, writer, pixel_size_um=1.0, max_image_megapixels=0.5)
        [result] = step.analyse([AnalysisInput("big", image=np.zeros((1000, 1000, 3), np.uint8))])
    assert result.status == "failed" and "1 MP" in (result.error or "") and "0.5 MP" in (result.error or "")


def test_the_size_limit_is_set_by_the_environment_and_a_bad_value_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flakehunter.analysis.pipeline import PipelineSpec, build_pipeline
    from flakehunter.analysis.step import AnalysisInput, AnalysisStep
    from flakehunter.registry import get_registry
    from flakehunter.run.candidate_writer import CandidateWriter

    monkeypatch.setenv("FLAKEHUNTER_MAX_IMAGE_MP", "0.25")
    pipeline = build_pipeline(PipelineSpec(material="graphene", oxide_nm=90.0), get_registry(), tmp_path)
    with Journal(tmp_path / "journal.sqlite") as journal, CandidateWriter(tmp_path) as writer:
        step = AnalysisStep(pipeline, journal, writer, pixel_size_um=1.0)
        [result] = step.analyse([AnalysisInput("big", image=np.zeros((600, 600, 3), np.uint8))])
    assert result.status == "failed" and "0.25 MP" in (result.error or "")
    assert "FLAKEHUNTER_MAX_IMAGE_MP=MEGAPIXELS" in (result.error or "")
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.full((40, 50, 3), 120, np.uint8), photometric="rgb")
    monkeypatch.setenv("FLAKEHUNTER_MAX_IMAGE_MP", "lots")
    done = cli("detect", str(image), "-m", "graphene", "--pixel-size-um", "1", "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: FLAKEHUNTER_MAX_IMAGE_MP: expected a positive number of megapixels, got 'lots'"]
    assert not (tmp_path / "run").exists()


def test_a_text_file_named_tif_is_quarantined_within_settle_plus_2_s(tmp_path: Path) -> None:
    import threading

    from flakehunter.config import DetectConfig, MaterialConfig, WatchOptions
    from flakehunter.journal import QUARANTINED
    from flakehunter.watch import Watcher

    settle = 0.5
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    config = DetectConfig(material=MaterialConfig(name="graphene", oxide_nm=90), pixel_size_um=1.0,
                          watch=WatchOptions(settle_s=settle, retry_initial_s=1, max_attempts=8))
    watcher = Watcher(inbox, out, config)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    assert watcher.started.wait(30)
    written = time.monotonic()
    (inbox / "notes.tif").write_text("exposure=20ms\ngain=1\n")
    key = str((inbox / "notes.tif").resolve())
    quarantined_at = None
    while time.monotonic() - written < settle + 10:
        item = watcher.journal.get(key)
        if item is not None and item.status == QUARANTINED:
            quarantined_at = time.monotonic()
            break
        time.sleep(0.05)
    # A quarantined file that changes is examined again: rewritten as an image, it is analysed.
    if quarantined_at is not None:
        tifffile.imwrite(inbox / "notes.tif", np.full((64, 64, 3), 120, np.uint8), photometric="rgb")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (watcher.journal.get(key) or None).status != DONE:  # type: ignore[union-attr]
            time.sleep(0.1)
    watcher.request_stop()
    thread.join(30)
    assert quarantined_at is not None, "never quarantined"
    assert quarantined_at - written <= settle + 2
    with Journal(out / "journal.sqlite") as journal:
        assert journal.get(key).status == DONE  # type: ignore[union-attr]
    assert os.path.exists(inbox / "notes.tif"), "the user's file stays where it is"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_gives_the_image_as_viewers_show_it(tmp_path: Path, orientation: int) -> None:
    """A camera held sideways writes EXIF orientation; the pixels read are the ones every viewer shows
    (checked against Pillow's own exif_transpose)."""
    import io

    from PIL import Image, ImageOps

    from flakehunter.tiles import read_image

    pixels = (np.random.default_rng(orientation).random((30, 50, 3)) * 255).astype(np.uint8)
    pixels[:8, :12] = 255  # a corner marker, so that a wrong turn cannot pass
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100, exif=exif.tobytes())
    (tmp_path / "photo.jpg").write_bytes(buffer.getvalue())
    image, _ = read_image(tmp_path / "photo.jpg")
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))))
    assert image.shape == expected.shape == ((30, 50, 3) if orientation <= 4 else (50, 30, 3))
    assert np.array_equal(image, expected)


def test_a_scan_killed_before_its_first_tile_is_simply_run_again(tmp_path: Path) -> None:
    """Killed while starting (a plan in the journal, no manifest yet): --resume says so, the same command
    runs, and the leftovers of the dead start are not mixed in."""
    config = write(tmp_path, {"camera": {"options": {"shape": [200, 300]}},
                              "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [600, 400]}}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with Journal(run_dir / "journal.sqlite") as journal:
        journal.set("tiles/tile_99999_r999_c999.ome.tif", "planned", index=99999)  # another config's plan
    (run_dir / "candidates.jsonl").write_text('{"id": 1, "x_um": 0')
    resume = cli("scan", "--resume", str(run_dir))
    assert resume.returncode == 2 and "run again" in resume.stderr, resume.stderr
    again = cli("scan", str(config), "--out", str(run_dir))
    assert again.returncode == 0, again.stderr
    status = json.loads(cli("status", str(run_dir), "--json").stdout)
    assert status["pending"] == 0 and status["processed"] == json.loads(
        (run_dir / "manifest.json").read_text())["summary"]["items_total"]


def test_the_owner_of_a_run_directory_removes_writes_a_killed_process_left_unfinished(tmp_path: Path) -> None:
    """kill -9 in the middle of an atomic write leaves its temporary file; whoever takes the lock next (a
    resume) deletes it, and nothing else."""
    from flakehunter.run.layout import RunDirectory

    run = tmp_path / "run"
    (run / "tiles").mkdir(parents=True)
    abandoned = [run / "tiles" / ".tile_00012_r003_c003.ome.tif.tmp-15727-6d99ae89",
                 run / ".candidates.csv.tmp-4242-0badcafe"]
    for path in abandoned:
        path.write_bytes(b"half a file")
    (run / ".report.tmp-4242-deadbeef" / "crops").mkdir(parents=True)
    kept = [run / "tiles" / "tile_00012_r003_c003.ome.tif", run / ".hidden-notes.txt"]
    for path in kept:
        path.write_bytes(b"whole")
    with RunDirectory(run).open("scan"):
        assert not any(p.exists() for p in abandoned)
        assert not (run / ".report.tmp-4242-deadbeef").exists()
        assert all(p.read_bytes() == b"whole" for p in kept)
