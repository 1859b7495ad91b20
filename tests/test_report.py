"""`flakehunter report`: the overview places candidates on their flakes, the page is self-contained and
holds every candidate; detect runs without positions get a gallery only; Grad-CAM and evaluation plots
are shown where they exist."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from shapely.geometry import Point, Polygon
from typer.testing import CliRunner

from flakehunter.analysis.evaluation import load_truth, match
from flakehunter.candidates import read_candidates
from flakehunter.cli import app
from flakehunter.report import write_report
from flakehunter.report.files import CROPS, INDEX, OVERVIEW_BASE, OVERVIEW_JSON, OVERVIEW_PNG
from flakehunter.run.layout import RunDirectory
from tests.test_report_fixtures import copy_run, page_data, small_scan_run

REPO = Path(__file__).resolve().parents[1]


def scale_benchmark() -> Any:
    """benchmarks/report_scale.py as a module (its synthetic-run writer)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_scale", REPO / "benchmarks" / "report_scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_scan_run(tmp_path_factory)


def overview_polygon(poly: Polygon, georef: dict) -> Polygon:
    """A stage-µm polygon in overview pixels (col, row), by the georeference the report wrote."""
    (x0, y0), s = georef["origin_um"], georef["um_per_px"]
    return Polygon([((x - x0) / s, (y - y0) / s) for x, y in poly.exterior.coords])


def test_every_marker_lies_on_its_flake_in_the_overview(scan_run: Path) -> None:
    """Each candidate matched to a simulator flake has its overview marker within 2 overview pixels of
    that flake's outline (the truth, mapped by the overview's georeference)."""
    run = RunDirectory(scan_run)
    georef = json.loads((run.report / OVERVIEW_JSON).read_text())
    markers = {c["id"]: c["marker"] for c in page_data(run.report / INDEX)["candidates"]}
    candidates = read_candidates(run.candidates_jsonl)
    m = match(candidates, load_truth(run.truth), tolerance_um=3.0)
    checked = 0
    for ci, fi in enumerate(m.candidate_flake):
        if fi is None:
            continue
        row, col = markers[candidates[ci].id]
        flake = m.truth[fi].polygon
        parts = list(flake.geoms) if flake.geom_type == "MultiPolygon" else [flake]
        distance = min(overview_polygon(p, georef).distance(Point(col, row)) for p in parts)
        assert distance <= 2.0, f"candidate {candidates[ci].id} is {distance:.1f} overview px off its flake"
        checked += 1
    assert checked >= 0.8 * len(candidates) and checked >= 10


def test_the_mosaic_shows_the_chip_where_the_georeference_says(scan_run: Path) -> None:
    """The tiles are placed by stage position: inside every large thick flake of the truth the overview is
    far from the substrate's level (thick graphite is bright on 90 nm oxide), as it could not be if the
    tiles were shifted or flipped. Also the flat field was estimated from the tiles."""
    run = RunDirectory(scan_run)
    georef = json.loads((run.report / OVERVIEW_JSON).read_text())
    assert georef["flat_field"].startswith("median of 20 downsampled tiles")
    image = cv2.imread(str(run.report / OVERVIEW_BASE), cv2.IMREAD_GRAYSCALE).astype(float)
    assert image.shape == tuple(georef["shape"])
    substrate = np.median(image)
    truth = json.loads(run.truth.read_text())
    offsets = []
    for flake in truth["flakes"]:
        if flake["kind"] != "thick" or flake["area_um2"] < 3000:
            continue
        poly = overview_polygon(Polygon(flake["polygon_um"][0]), georef).buffer(-3)
        if poly.is_empty:
            continue
        mask = np.zeros(image.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(np.asarray(poly.exterior.coords)).astype(np.int32)], 1)
        offsets.append(abs(image[mask > 0].mean() - substrate))
    assert len(offsets) >= 5
    assert min(offsets) > 25, offsets


def test_the_page_is_self_contained_and_holds_every_candidate(scan_run: Path) -> None:
    run = RunDirectory(scan_run)
    index = run.report / INDEX
    text = index.read_text(encoding="utf-8")
    # Nothing is fetched from a network: every src/href is relative, a data: URI or a fragment.
    for ref in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert not re.match(r"^[a-z]+://", ref) and not ref.startswith("//"), ref
        if not ref.startswith(("data:", "#")):
            assert (run.report / ref).is_file(), ref
    assert "default-src 'none'" in text  # and the browser is told so (Content-Security-Policy)
    candidates = read_candidates(run.candidates_jsonl)
    entries = page_data(index)["candidates"]
    assert sorted(e["id"] for e in entries) == sorted(c.id for c in candidates)
    for e in entries:
        assert (run.report / e["crop"]).is_file() and e["crop"] == f"{CROPS}/{e['id']}.jpg"
    crop = cv2.imread(str(run.report / entries[0]["crop"]))
    assert crop.shape == (192, 192, 3)
    assert (run.report / OVERVIEW_PNG).stat().st_size > 100_000
    # The summary: tiles, area, duration, the detector's layer ladder, candidates per class.
    assert "20 (5 rows x 4 columns)" in text and "4.00 mm² region" in text and "duration" in text
    assert "self-calibrated" in text and "<th>layers</th><th>contrast</th>" in text
    for cls in {c.layer_class for c in candidates}:
        assert f"{cls} (" in text  # a filter box per class, with its count


def test_detect_run_without_positions_gets_a_gallery_and_says_why(scan_run: Path, tmp_path: Path) -> None:
    """PNG copies carry no stage position: the report has no overview, says so, and still shows every
    candidate."""
    images = tmp_path / "images"
    images.mkdir()
    for tif in sorted((scan_run / "tiles").glob("*.tif"))[:3]:
        from flakehunter.tiles import read_image

        image, _ = read_image(tif)
        cv2.imwrite(str(images / (tif.name.split(".")[0] + ".png")), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "detect"
    result = CliRunner().invoke(app, ["detect", str(images), "--material", "graphene", "--pixel-size-um", "1.15",
                                      "--out", str(out)])
    # Exit 2 is detect's "some files could not be analysed": the report must show such a run as well.
    assert result.exit_code in (0, 2) and (out / "candidates.jsonl").exists(), result.output
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    report = RunDirectory(out).report
    assert not (report / OVERVIEW_PNG).exists()
    text = (report / INDEX).read_text(encoding="utf-8")
    assert "carry no stage positions" in text
    candidates = read_candidates(out)
    assert candidates and not any(c.positioned for c in candidates)
    entries = page_data(report / INDEX)["candidates"]
    assert sorted(e["id"] for e in entries) == sorted(c.id for c in candidates)
    assert all(e["marker"] is None and (report / e["crop"]).is_file() for e in entries)


def test_gradcam_and_evaluation_plots_are_shown_where_they_exist(scan_run: Path, tmp_path: Path) -> None:
    """A candidate record with a ``gradcam`` picture gets it beside its crop; `evaluate`'s plots appear."""
    run = RunDirectory(copy_run(scan_run, tmp_path / "run"))
    picture = tmp_path / "gradcam.png"
    cv2.imwrite(str(picture), np.full((40, 60, 3), 200, np.uint8))
    lines = run.candidates_jsonl.read_text().splitlines()
    first = json.loads(lines[0])
    first["gradcam"] = str(picture)
    run.candidates_jsonl.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    result = CliRunner().invoke(app, ["evaluate", str(run.path)])
    assert result.exit_code == 0, result.output
    write_report(run.path)
    entries = {e["id"]: e for e in page_data(run.report / INDEX)["candidates"]}
    assert entries[first["id"]]["gradcam"] == f"gradcam/{first['id']}.jpg"
    assert (run.report / entries[first["id"]]["gradcam"]).is_file()
    assert sum(e["gradcam"] is not None for e in entries.values()) == 1
    plots = sorted(p.name for p in (run.report / "evaluation").glob("*.png"))
    assert "confusion.png" in plots
    assert 'src="evaluation/confusion.png"' in (run.report / INDEX).read_text(encoding="utf-8")


def test_a_report_is_replaced_whole_and_bad_input_is_exit_2(scan_run: Path, tmp_path: Path) -> None:
    run = RunDirectory(copy_run(scan_run, tmp_path / "run"))
    (run.report / "stale.txt").write_text("from an old report")
    result = CliRunner().invoke(app, ["report", str(run.path), "--overview-px", "500"])
    assert result.exit_code == 0, result.output
    assert not (run.report / "stale.txt").exists()
    assert max(json.loads((run.report / OVERVIEW_JSON).read_text())["shape"]) <= 500
    assert not [p for p in run.path.iterdir() if p.name.startswith(".report.")]
    shutil.rmtree(tmp_path / "empty", ignore_errors=True)
    (tmp_path / "empty").mkdir()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert missing.exit_code == 2 and "no candidates.jsonl" in missing.output


def test_a_synthetic_run_of_many_tiles_is_reported_quickly_and_small(tmp_path: Path) -> None:
    """The scale benchmark's run, shrunk (benchmarks/report_scale.py measures 1,000 tiles): every candidate
    gets a crop, the overview spans the grid, warnings are listed, and the report stays small."""
    import time

    bench = scale_benchmark()
    made = bench.make_run(tmp_path / "run", tiles=60, shape=(96, 128), per_tile=3)
    t0 = time.perf_counter()
    index = write_report(tmp_path / "run")
    elapsed = time.perf_counter() - t0
    report = index.parent
    assert len(list((report / CROPS).glob("*.jpg"))) == made["candidates"] == 180
    georef = json.loads((report / OVERVIEW_JSON).read_text())
    assert georef["um_per_px"] == pytest.approx(1.15) and georef["flat_field"] == "median of 60 downsampled tiles"
    assert "out of focus" in index.read_text(encoding="utf-8")
    assert bench.folder_bytes(report) < 5e6 and elapsed < 20


def test_only_the_best_candidates_get_crops_beyond_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flakehunter.report import builder

    bench = scale_benchmark()
    bench.make_run(tmp_path / "run", tiles=10, shape=(64, 96), per_tile=4)
    monkeypatch.setattr(builder, "MAX_CROPS", 15)
    entries = page_data(write_report(tmp_path / "run"))["candidates"]
    assert len(entries) == 40
    cropped = sorted((e for e in entries if e["crop"]), key=lambda e: -e["score"])
    assert len(cropped) == 15 and min(e["score"] for e in cropped) >= max(e["score"] for e in entries if not e["crop"])


def test_a_watch_run_is_reported_with_its_files_positions(scan_run: Path, tmp_path: Path) -> None:
    """A watch folder's run: the overview is built from the positions the files carry, and every candidate
    the watcher found is in the gallery with a marker."""
    import threading
    import time

    from flakehunter.config import DetectConfig, MaterialConfig, WatchOptions
    from flakehunter.journal import DONE, Journal
    from flakehunter.watch.watcher import Watcher

    inbox, out = tmp_path / "inbox", tmp_path / "watch"
    inbox.mkdir()
    tiles = sorted((scan_run / "tiles").glob("*.ome.tif"))[:6]
    for tile in tiles:
        shutil.copyfile(tile, inbox / tile.name)
    options = WatchOptions(settle_s=0.2, poll_interval_s=0.2, retry_initial_s=0.2, status_interval_s=1)
    watcher = Watcher(inbox, out, DetectConfig(material=MaterialConfig(name="graphene", oxide_nm=90), watch=options))
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (out / "journal.sqlite").exists():
            with Journal(out / "journal.sqlite") as journal:
                if len(journal.keys(DONE)) + len(journal.keys("failed")) + len(journal.keys("quarantined")) == 6:
                    break
        time.sleep(0.2)
    watcher.request_stop()
    thread.join(30)
    index = write_report(out)
    assert json.loads((index.parent / OVERVIEW_JSON).read_text())["flat_field"].startswith("not corrected (6 tiles")
    entries = page_data(index)["candidates"]
    found = read_candidates(out)
    assert found and sorted(e["id"] for e in entries) == sorted(c.id for c in found)
    assert all(e["marker"] is not None for e in entries)
    assert "flakehunter watch" in index.read_text(encoding="utf-8")


def test_detect_writes_its_report_at_the_end_unless_told_not_to(
    scan_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run command ends with its report (the suite switches that off through FLAKEHUNTER_REPORT=0);
    --no-report, or the variable, leaves it out."""
    monkeypatch.delenv("FLAKEHUNTER_REPORT")
    tiles = sorted((scan_run / "tiles").glob("*.ome.tif"))[:2]
    args = ["detect", *map(str, tiles), "--material", "graphene", "--oxide-nm", "90"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "with")])
    assert result.exit_code == 0, result.output
    index = tmp_path / "with" / "report" / INDEX
    assert index.is_file() and f"report:     {index}" in result.output
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "without"), "--no-report"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "without" / "report").exists()
