"""`flakehunter export` (Micro-Manager .pos, useq-schema, GeoJSON, CSV) and the filters it shares with `goto`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Point, shape
from typer.testing import CliRunner

from flakehunter.analysis.evaluation import load_truth, match
from flakehunter.candidates import Candidate, read_candidates
from flakehunter.cli import app
from flakehunter.report.exports import export
from flakehunter.report.filters import CandidateFilter
from flakehunter.report.verdicts import Verdict, append_verdict
from flakehunter.run.layout import RunDirectory
from tests.test_report_fixtures import copy_run, small_scan_run


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_scan_run(tmp_path_factory)


# What Micro-Manager 2.0 writes for a position list of one position: an XY stage "XY" at (1200.5, 850.25) µm,
# a focus drive "Z" at 3.0 µm, label "cand7_1L", string properties. Spelled out from Micro-Manager's own
# source (github.com/micro-manager/micro-manager, mmstudio/src/main/java/org/micromanager/):
#   PositionList.save -> toPropertyMap().saveJSON: the list under "StagePositions" (PropertyKey.STAGE_POSITIONS);
#   MultiStagePosition.toPropertyMap: Label, DefaultXYStage, DefaultZStage (strings), GridRow, GridCol
#     (integers; PropertyKey names "GridRow", "GridCol"), Properties (a property map of strings) and
#     DevicePositions (a list of property maps);
#   StagePosition.toPropertyMap: Device (string) and Position_um (a double list whose length, 1 or 2, is the
#     number of axes; fromPropertyMap rejects any other length);
#   data/internal/PropertyMapJSONSerializer: the file wrapper {"encoding": "UTF-8", "format": "Micro-Manager
#     Property Map", "major_version": 2, "minor_version": 0, "map": ...} (VersionedMap's field order), every
#     value as {"type": "STRING"|"INTEGER"|"DOUBLE"|"PROPERTY_MAP", "scalar"|"array": ...}, keys sorted
#     alphabetically, pretty-printed by Gson with two-space indentation.
MM_POS_ONE_POSITION = """{
  "encoding": "UTF-8",
  "format": "Micro-Manager Property Map",
  "major_version": 2,
  "minor_version": 0,
  "map": {
    "StagePositions": {
      "type": "PROPERTY_MAP",
      "array": [
        {
          "DefaultXYStage": {
            "type": "STRING",
            "scalar": "XY"
          },
          "DefaultZStage": {
            "type": "STRING",
            "scalar": "Z"
          },
          "DevicePositions": {
            "type": "PROPERTY_MAP",
            "array": [
              {
                "Device": {
                  "type": "STRING",
                  "scalar": "XY"
                },
                "Position_um": {
                  "type": "DOUBLE",
                  "array": [
                    1200.5,
                    850.25
                  ]
                }
              },
              {
                "Device": {
                  "type": "STRING",
                  "scalar": "Z"
                },
                "Position_um": {
                  "type": "DOUBLE",
                  "array": [
                    3.0
                  ]
                }
              }
            ]
          },
          "GridCol": {
            "type": "INTEGER",
            "scalar": 0
          },
          "GridRow": {
            "type": "INTEGER",
            "scalar": 0
          },
          "Label": {
            "type": "STRING",
            "scalar": "cand7_1L"
          },
          "Properties": {
            "type": "PROPERTY_MAP",
            "scalar": {
              "area_um2": {
                "type": "STRING",
                "scalar": "150.0"
              },
              "candidate_id": {
                "type": "STRING",
                "scalar": "7"
              },
              "layer_class": {
                "type": "STRING",
                "scalar": "1L"
              },
              "run_id": {
                "type": "STRING",
                "scalar": ""
              },
              "score": {
                "type": "STRING",
                "scalar": "0.900"
              }
            }
          }
        }
      ]
    }
  }
}
"""


def one_candidate_run(path: Path) -> Path:
    path.mkdir()
    c = Candidate(id=7, x_um=1200.5, y_um=850.25, material="graphene", layers=1, layer_class="1L", score=0.9,
                  area_um2=150.0, orientation_deg=None, image="elsewhere.tif", row=10, col=20, z_um=3.0)
    (path / "candidates.jsonl").write_text(json.dumps(c.to_record()) + "\n")
    return path


def test_mm_pos_is_what_micro_manager_writes_field_by_field(tmp_path: Path) -> None:
    run = one_candidate_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["export", str(run), "--format", "mm-pos", "--xy-stage", "XY", "--z-stage", "Z"])
    assert result.exit_code == 0, result.output
    written = (run / "exports" / "candidates.pos").read_text(encoding="utf-8")
    assert json.loads(written) == json.loads(MM_POS_ONE_POSITION)  # every field and value
    assert written == MM_POS_ONE_POSITION  # and Micro-Manager's key order and layout


def test_mm_pos_of_a_scan_lists_its_candidates_best_first(scan_run: Path, tmp_path: Path) -> None:
    run = copy_run(scan_run, tmp_path / "run")
    path, written, left_out = export(run, "mm-pos", xy_stage="XYStage", z_stage="")
    candidates = sorted(read_candidates(run), key=lambda c: (-c.score, c.id))
    assert (written, left_out) == (len(candidates), 0)
    positions = json.loads(path.read_text())["map"]["StagePositions"]["array"]
    assert len(positions) == len(candidates)
    for pos, c in zip(positions, candidates, strict=True):
        assert list(pos) == ["DefaultXYStage", "DefaultZStage", "DevicePositions", "GridCol", "GridRow", "Label",
                             "Properties"]
        assert pos["DefaultZStage"] == {"type": "STRING", "scalar": ""}  # no focus drive asked for
        (xy,) = pos["DevicePositions"]["array"]
        assert xy["Position_um"] == {"type": "DOUBLE", "array": [c.x_um, c.y_um]}
        assert pos["Label"]["scalar"] == f"cand{c.id}_{c.layer_class}"


def test_useq_list_validates_with_useq_schema(scan_run: Path, tmp_path: Path) -> None:
    import useq

    run = copy_run(scan_run, tmp_path / "run")
    path, written, _ = export(run, "useq", flt=CandidateFilter(min_score=0.5))
    sequence = useq.MDASequence.from_file(path)
    assert useq.MDASequence.model_validate_json(path.read_text()) == sequence
    chosen = sorted((c for c in read_candidates(run) if c.score >= 0.5), key=lambda c: (-c.score, c.id))
    assert written == len(chosen) > 0
    assert [(p.x, p.y, p.z, p.name) for p in sequence.stage_positions] == [
        (c.x_um, c.y_um, c.z_um, f"cand{c.id}_{c.layer_class}") for c in chosen]


def test_geojson_outlines_are_valid_and_hold_their_candidates(scan_run: Path, tmp_path: Path) -> None:
    """A valid FeatureCollection; each outline contains its candidate's position; outlines recovered from
    the tiles overlap the simulator's flake (median IoU >= 0.5); a detector's bbox is used when present."""
    geojson = pytest.importorskip("geojson", reason="needs the geojson package (pip install geojson)")
    run = copy_run(scan_run, tmp_path / "run")
    path, written, _ = export(run, "geojson")
    collection = geojson.loads(path.read_text())
    assert isinstance(collection, geojson.FeatureCollection) and collection.is_valid, collection.errors()
    candidates = {c.id: c for c in read_candidates(run)}
    assert written == len(collection["features"]) == len(candidates)
    m = match(list(candidates.values()), load_truth(run / "truth.json"), tolerance_um=3.0)
    truth_of = {m.candidates[ci].id: m.truth[fi].polygon for ci, fi in enumerate(m.candidate_flake) if fi is not None}
    ious = []
    for feature in collection["features"]:
        c = candidates[feature["id"]]
        outline = shape(feature["geometry"])
        assert outline.is_valid and outline.contains(Point(c.x_um, c.y_um))
        assert feature["properties"]["layer_class"] == c.layer_class
        if feature["properties"]["outline_source"].startswith("segmented") and c.id in truth_of:
            flake = truth_of[c.id]
            ious.append(outline.intersection(flake).area / outline.union(flake).area)
    assert len(ious) >= 0.8 * len(candidates)
    assert np.median(ious) >= 0.5 and min(ious) > 0.2, ious

    # A detector that records its pixel bounding box gets exactly that box, in stage µm.
    lines = (run / "candidates.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    r, c = round(first["row"]), round(first["col"])
    first["bbox"] = [r - 5, c - 8, r + 5, c + 8]
    (run / "candidates.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    path, _, _ = export(run, "geojson", tmp_path / "box.geojson")
    feature = next(f for f in json.loads(path.read_text())["features"] if f["id"] == first["id"])
    assert feature["properties"]["outline_source"] == "bbox"
    box = shape(feature["geometry"])
    assert box.area == pytest.approx((10 * 1.15) * (16 * 1.15), rel=1e-6)


def test_csv_and_filters_with_review(scan_run: Path, tmp_path: Path) -> None:
    run = copy_run(scan_run, tmp_path / "run")
    candidates = sorted(read_candidates(run), key=lambda c: (-c.score, c.id))
    append_verdict(RunDirectory(run).review, Verdict(candidates[1].id, "good", note="nice, 100x"))
    append_verdict(RunDirectory(run).review, Verdict(candidates[2].id, "bad"))
    path, written, _ = export(run, "csv", flt=CandidateFilter(reviewed="good"))
    lines = path.read_text().splitlines()
    assert written == 1 and lines[0].endswith(",verdict,favourite,note")
    assert lines[1].startswith(f"{candidates[1].id},") and lines[1].endswith(",good,,\"nice, 100x\"")
    result = CliRunner().invoke(app, ["export", str(run), "--format", "csv", "--out", str(tmp_path / "all.csv"),
                                      "--layer-class", candidates[0].layer_class, "--min-area-um2", "0"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "all.csv").read_text().splitlines()[1:]
    assert len(rows) == sum(c.layer_class == candidates[0].layer_class for c in candidates)
    for bad in (["--format", "kml"], ["--format", "csv", "--min-score", "2"], ["--format", "csv", "--reviewed", "ok"]):
        result = CliRunner().invoke(app, ["export", str(run), *bad])
        assert result.exit_code == 2, result.output


def test_goto_takes_the_same_filters(scan_run: Path, tmp_path: Path) -> None:
    """Without an id, goto drives to the best candidate passing the filters (--rank N for the N-th); an id
    that does not pass them is refused; --list shows the ranking."""
    run = copy_run(scan_run, tmp_path / "run")
    candidates = read_candidates(run)
    cls = max({c.layer_class for c in candidates}, key=lambda k: sum(c.layer_class == k for c in candidates))
    ranked = sorted((c for c in candidates if c.layer_class == cls), key=lambda c: (-c.score, c.id))
    assert len(ranked) >= 2
    cli = CliRunner()
    best = cli.invoke(app, ["goto", str(run), "--layer-class", cls, "--dry-run"])
    assert best.exit_code == 0, best.output
    assert best.output.startswith(f"Would move to candidate {ranked[0].id} ({cls} ")
    second = cli.invoke(app, ["goto", str(run), "--layer-class", cls, "--rank", "2", "--dry-run"])
    assert second.output.startswith(f"Would move to candidate {ranked[1].id} ")
    listed = cli.invoke(app, ["goto", str(run), "--layer-class", cls, "--list"])
    assert listed.exit_code == 0 and f"{len(ranked)} candidates" in listed.output
    append_verdict(RunDirectory(run).review, Verdict(ranked[1].id, "good"))
    good = cli.invoke(app, ["goto", str(run), "--reviewed", "good", "--dry-run"])
    assert good.output.startswith(f"Would move to candidate {ranked[1].id} ")
    refused = cli.invoke(app, ["goto", str(run), str(ranked[0].id), "--reviewed", "good", "--dry-run"])
    assert refused.exit_code == 2 and "does not pass the filters (reviewed good)" in refused.output
    none = cli.invoke(app, ["goto", str(run), "--layer-class", "no-such-class", "--dry-run"])
    assert none.exit_code == 2 and "0 candidates" in none.output
