"""`flakehunter evaluate` against annotations as people have them (issue 12): YOLO boxes, COCO polygons / RLE /
boxes, instance masks, label images; found / annotated, missed and strays per image, matched in pixels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from flakehunter.analysis.annotations import (
    detect_format,
    layers_from_name,
    load_annotations,
    parse_class_layers,
    rle_counts_from_string,
    rle_decode,
)
from flakehunter.candidates import Candidate
from flakehunter.cli import app

TMD = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "tmd-monolayers-karolync"


def evaluate(*args: str):
    return CliRunner().invoke(app, ["evaluate", *args])


def write_candidates(path: Path, rows: list[tuple[str, int | None, float, float]], score: float = 0.5) -> Path:
    """candidates.jsonl of (image path, layers, row, col), none with a stage position."""
    lines = []
    for i, (image, layers, row, col) in enumerate(rows, 1):
        c = Candidate(
            id=i, x_um=0.0, y_um=0.0, material="wse2", layers=layers,
            layer_class=f"{layers}L" if layers else "bulk", score=score - i * 0.01, area_um2=40.0,
            orientation_deg=None, image=image, row=row, col=col, positioned=False,
        )
        lines.append(json.dumps(c.to_record()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def per_image_csv(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "per_image.csv", newline="", encoding="utf-8") as fh:
        return {r["image"]: r for r in csv.DictReader(fh)}


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE (pycocotools ``rleToString``), to write test files with."""
    out = []
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def rle_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a mask in column-major order, starting with background."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], edges])).tolist()


# --- reading --------------------------------------------------------------------------------------------------


def test_rle_strings_and_orientation() -> None:
    """Hand-encoded COCO strings decode; runs are column-major; random masks survive a round trip."""
    assert rle_counts_from_string("534O") == [5, 3, 4, 2]  # from the fourth run on: difference to two before
    assert rle_counts_from_string("T3") == [100]  # two 5-bit groups
    mask = np.array([[0, 1, 1], [0, 0, 1]], bool)
    assert np.array_equal(rle_decode([2, 1, 1, 2], (2, 3)), mask)
    rng = np.random.default_rng(5)
    for _ in range(20):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
        mask = rng.random(shape) < rng.random()
        counts = rle_counts(mask)
        assert np.array_equal(rle_decode(counts, shape), mask)
        assert np.array_equal(rle_decode(rle_string(counts), shape), mask)
    with pytest.raises(ValueError, match="cover"):
        rle_decode([2, 1], (2, 3))


def test_class_names_to_layer_counts() -> None:
    expected = {
        "monolayer": 1, "Monolayer": 1, "1L": 1, "1-layer": 1, "mono": 1, "single layer": 1, "bilayer": 2,
        "WSe2_2L": 2, "2": 2, "trilayer": 3, "graphene 3 layers": 3, "few-layer": None, "bulk": None,
        "multilayer": None, "flake": None, "ML": None,
    }
    assert {name: layers_from_name(name) for name in expected} == expected
    assert parse_class_layers("0=1, 1=2,bulk=none") == {"0": 1, "1": 2, "bulk": None}


# --- YOLO -----------------------------------------------------------------------------------------------------


def yolo_export(root: Path) -> Path:
    """A Roboflow-like split: images 100 rows x 200 cols (not square, so width and height cannot be swapped
    unnoticed), a.txt with a monolayer box and a bilayer box, b.txt empty, no txt for c and d."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in "abcd":
        Image.fromarray(np.full((100, 200, 3), 120, np.uint8)).save(root / "images" / f"{name}.png")
    # box 1: cols 39.5-59.5, rows 39.5-59.5; box 2: cols 139.5-159.5, rows 14.5-34.5 (pixel centres at integers)
    (root / "labels" / "a.txt").write_text("0 0.25 0.5 0.1 0.2\n1 0.75 0.25 0.1 0.2\n")
    (root / "labels" / "b.txt").write_text("")
    (root / "data.yaml").write_text("train: ../train/images\nnc: 2\nnames: ['monolayer', 'bilayer']\n")
    return root


def yolo_candidates(root: Path, path: Path) -> Path:
    img = {k: str(root / "images" / f"{k}.png") for k in "abcd"}
    return write_candidates(path, [
        (img["a"], 1, 50, 45),  # 1: in box 1
        (img["a"], 1, 52, 55),  # 2: in box 1 too: the flake counts once, and this one is no stray
        (img["a"], 2, 25, 150),  # 3: in box 2, found as 2L
        (img["a"], 1, 90, 100),  # 4: outside every box: stray
        (img["b"], 1, 10, 10),  # 5: on an image annotated with no flake: stray
        (img["c"], 3, 50, 50),  # 6: 3L, not annotated anywhere in the set: no stray by default
        (img["c"], 2, 60, 60),  # 7: 2L outside every box: stray
        (img["a"], 1, 61.5, 50),  # 8: 2 px below box 1, within the 3 px tolerance
        (img["a"], None, 30, 100),  # 9: bulk: never a stray
    ])


def test_yolo_boxes_found_missed_strays(tmp_path: Path) -> None:
    root = yolo_export(tmp_path / "export")
    cands = yolo_candidates(root, tmp_path / "cands" / "candidates.jsonl")
    assert detect_format([root / "labels"]) == "yolo" and detect_format([root]) == "yolo"
    out = tmp_path / "ev"
    result = evaluate(str(cands), "--truth", str(root / "labels"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "found      2/2" in result.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["format"] == "yolo" and m["images"] == 4  # no manifest: every annotated image, d too
    assert (m["annotated"], m["found"], m["missed"]) == (2, 2, 0)
    assert m["found_as"] == {"1L": 1, "2L": 1}
    assert m["stray_layers"] == [1, 2]  # the layer counts the boxes annotate
    assert m["strays"] == 3 and m["strays_per_image_max"] == 1
    assert m["layer_accuracy"] == 1.0 and m["duplicates"] == 0
    assert m["candidates"] == 9 and m["reported"] == 7 and m["precision"] == pytest.approx(4 / 7)
    rows = per_image_csv(out)
    assert rows["a"] == {
        "image": "a", "annotated": "2", "found": "2", "missed": "0", "found_as_1L": "1", "found_as_2L": "1",
        "strays": "1", "duplicates": "0", "candidates": "6", "layer_checked": "2", "layer_correct": "2",
    }
    assert [rows[k]["strays"] for k in "bcd"] == ["1", "1", "0"]

    result = evaluate(str(cands), "--truth", str(root), "--out", str(out), "--stray-layers", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["strays"] == 2  # the 2L one on c is no longer judged
    result = evaluate(str(cands), "--truth", str(root), "--out", str(out), "--tolerance-px", "1")
    assert json.loads((out / "metrics.json").read_text())["strays"] == 4  # candidate 8 is now off box 1
    # bilayer boxes said to be no layer count: they are context, and only 1L candidates are judged
    result = evaluate(str(cands), "--truth", str(root), "--out", str(out), "--class-layers", "0=1,1=none")
    m = json.loads((out / "metrics.json").read_text())
    assert (m["annotated"], m["found"], m["stray_layers"], m["strays"]) == (1, 1, [1], 2)


def test_yolo_with_a_run_manifest_and_without_names(tmp_path: Path) -> None:
    """With a run's manifest only the analysed images count; class ids without names give no layer counts
    (every box a target, strays judged for all --layers) until --class-layers says."""
    root = yolo_export(tmp_path / "export")
    (root / "data.yaml").unlink()
    run = tmp_path / "run"
    yolo_candidates(root, run / "candidates.jsonl")
    files = [{"file": str(root / "images" / f"{k}.png"), "pixel_size_um": 1.0} for k in "abc"]
    (run / "manifest.json").write_text(json.dumps({"files": files}))
    result = evaluate(str(run), "--truth", str(root / "labels"))
    assert result.exit_code == 0, result.output
    m = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert m["images"] == 3 and m["images_annotated_not_analysed"] == 1
    assert m["stray_layers"] == [1, 2, 3] and m["strays"] == 4 and m["layer_checked"] == 0
    result = evaluate(str(run), "--truth", str(root / "labels"), "--class-layers", "0=1,1=2")
    m = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert m["stray_layers"] == [1, 2] and m["strays"] == 3 and m["layer_accuracy"] == 1.0


def test_two_candidates_in_two_overlapping_boxes_find_both() -> None:
    """A point in the overlap of two boxes goes to the one no candidate has claimed, so each box is found;
    a box holding several candidates counts once and none of them is a stray."""
    import shapely

    from flakehunter.analysis.evaluation import TruthFlake, match_pixels, summarize_annotations

    boxes = [TruthFlake(i + 1, 1, None, 1.0, shapely.box(*b), False, "img", "box")
             for i, b in enumerate([(0, 0, 20, 20), (10, 10, 30, 30)])]
    rows = [(15, 15), (16, 16), (5, 5)]  # two in the overlap, one only in the first box
    cands = [Candidate(i, 0, 0, "wse2", 1, "1L", 0.9 - i / 10, 10, None, "/a/img.jpg", r, c, positioned=False)
             for i, (r, c) in enumerate(rows)]
    m = match_pixels(cands[:2], boxes)
    assert sorted(m.flake_candidates) == [0, 1]
    s = summarize_annotations(match_pixels(cands, boxes), ["img"], layers=(1,))
    assert (s["found"], s["strays"], s["duplicates"]) == (2, 0, 0)


# --- COCO -----------------------------------------------------------------------------------------------------


def test_coco_polygon_rle_and_box(tmp_path: Path) -> None:
    rows, cols = 80, 120
    ell = np.zeros((rows, cols), bool)
    ell[40:71, 60:71] = True  # an L: a vertical arm ...
    ell[60:71, 60:101] = True  # ... and a horizontal one
    bulk = np.zeros((rows, cols), bool)
    bulk[50:71, 10:31] = True
    coco = {
        "images": [{"id": 1, "file_name": "p.png", "height": rows, "width": cols},
                   {"id": 2, "file_name": "q.png", "height": rows, "width": cols}],
        "categories": [{"id": 1, "name": "1L"}, {"id": 2, "name": "2L"}, {"id": 3, "name": "bulk"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
            {"id": 12, "image_id": 1, "category_id": 2,
             "segmentation": {"size": [rows, cols], "counts": rle_string(rle_counts(ell))}},
            {"id": 13, "image_id": 2, "category_id": 1, "segmentation": [], "bbox": [50, 20, 20, 10]},
            {"id": 14, "image_id": 2, "category_id": 3, "iscrowd": 1,
             "segmentation": {"size": [rows, cols], "counts": rle_counts(bulk)}},
        ],
    }
    path = tmp_path / "ann" / "_annotations.coco.json"
    path.parent.mkdir()
    path.write_text(json.dumps(coco))
    assert detect_format([path]) == "coco" and detect_format([path.parent]) == "coco"
    cands = write_candidates(tmp_path / "c.jsonl", [
        ("/x/p.png", 1, 20, 20),  # on the polygon
        ("/x/p.png", 1, 20, 31.5),  # 2 px off the polygon's edge: a duplicate
        ("/x/p.png", 1, 45, 65),  # on the L's vertical arm: found, but as 1L (annotated 2L)
        ("/x/p.png", 1, 45, 90),  # inside the L's bounding box, off the mask: stray
        ("/x/q.png", 1, 25, 60),  # in the box
        ("/x/q.png", 2, 25, 55),  # in the box too (a box: no duplicate, no stray)
        ("/x/q.png", 1, 60, 20),  # on the bulk region: context, no stray
        ("/x/q.png", 1, 5, 110),  # stray
    ])
    out = tmp_path / "ev"
    result = evaluate(str(cands), "--truth", str(path), "--out", str(out))
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert (m["annotated"], m["found"], m["missed"], m["found_as"]) == (3, 3, 0, {"1L": 3})
    assert m["layer_checked"] == 3 and m["layer_accuracy"] == pytest.approx(2 / 3)
    assert m["strays"] == 2 and m["duplicates"] == 1 and m["stray_layers"] == [1, 2]
    rows = per_image_csv(out)
    assert (rows["p"]["annotated"], rows["p"]["strays"], rows["p"]["duplicates"]) == ("2", "1", "1")
    assert (rows["q"]["annotated"], rows["q"]["strays"], rows["q"]["duplicates"]) == ("1", "1", "0")
    assert (out / "confusion.png").stat().st_size > 0


# --- instance masks -------------------------------------------------------------------------------------------


def test_instance_masks_with_a_map(tmp_path: Path) -> None:
    mask = np.zeros((60, 90), np.uint16)
    mask[5:16, 5:26] = 1
    mask[30:51, 40:61] = 2
    mask[5:21, 60:86] = 3
    mask[40:56, 5:21] = 300  # ids are not layer counts, and may pass 255
    folder = tmp_path / "masks"
    folder.mkdir()
    tifffile.imwrite(folder / "m_instances.tif", mask)
    (folder / "m_instances.json").write_text(json.dumps({"1": 1, "2": "bilayer", "3": None, "300": "1L"}))
    assert detect_format([folder]) == "instance-mask"
    cands = write_candidates(tmp_path / "c.jsonl", [
        ("/x/m.jpg", 1, 10, 15),  # instance 1: found as 1L
        ("/x/m.jpg", 1, 40, 50),  # instance 2 (bilayer): found as 1L
        ("/x/m.jpg", 3, 10, 70),  # instance 3 has no layer count: context
        ("/x/m.jpg", 1, 57, 88),  # stray
        ("/x/m.jpg", 3, 25, 30),  # 3L: nothing annotated is 3L, no stray
    ])
    out = tmp_path / "ev"
    result = evaluate(str(cands), "--truth", str(folder), "--out", str(out))
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert (m["annotated"], m["found"], m["missed"], m["found_as"]) == (3, 2, 1, {"1L": 2})
    assert m["layer_accuracy"] == 0.5 and m["strays"] == 1 and m["stray_layers"] == [1, 2]


def test_instance_masks_with_a_folder_csv(tmp_path: Path) -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 2:6] = 1
    mask[10:15, 10:15] = 2
    Image.fromarray(mask).save(tmp_path / "n.png")
    (tmp_path / "instances.csv").write_text("image,instance,layers\nn.png,1,1\nn.png,2,2L\nother.png,1,3\n")
    flakes = load_annotations([tmp_path], detect_format([tmp_path])).flakes
    assert sorted((f.image, f.layers, f.polygon.area) for f in flakes) == [("n", 1, 16.0), ("n", 2, 25.0)]
    (tmp_path / "instances.csv").write_text("image,instance,layers\nn.png,1,1\n")
    result = evaluate(str(write_candidates(tmp_path / "c.jsonl", [("n.png", 1, 3, 3)])), "--truth", str(tmp_path))
    assert result.exit_code == 2 and "no entry for instance 2" in result.stderr


# --- label images (backward compatible, with per-image strays added) -----------------------------------------


def test_label_images_keep_their_metrics_and_gain_per_image(tmp_path: Path) -> None:
    label = np.zeros((50, 60), np.uint8)
    label[5:16, 5:16] = 1
    label[30:41, 30:46] = 2
    tifffile.imwrite(tmp_path / "lab_label.tif", label)
    cands = write_candidates(tmp_path / "c.jsonl", [("/x/lab.png", 1, 10, 10), ("/x/lab.png", 1, 45, 55)])
    out = tmp_path / "ev"
    result = evaluate(str(cands), "--truth", str(tmp_path / "lab_label.tif"), "--pixel-size-um", "1", "--out",
                      str(out), "--json")
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert (m["truth_flakes"], m["found"], m["reported"], m["on_target"]) == (2, 1, 2, 1)
    assert set(m["per_layer"]) == {"1L", "2L", "3L"} and "recall_by_area" in m
    assert m["strays"] == 1 and m["per_image"][0]["missed"] == 1
    assert "per_image" not in json.loads(result.stdout)  # the printed headline stays a summary


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["folder", "json", "yolo-line"])
def test_unrecognised_annotations_are_exit_2_in_one_line(tmp_path: Path, what: str) -> None:
    cands = write_candidates(tmp_path / "c.jsonl", [("/x/a.png", 1, 3, 3)])
    if what == "folder":
        truth = tmp_path / "notes"
        truth.mkdir()
        (truth / "README.md").write_text("boxes are in my head\n")
        expected = "notes: no annotations found"
    elif what == "json":
        truth = tmp_path / "boxes.json"
        truth.write_text(json.dumps({"shapes": []}))
        expected = "boxes.json"
    else:
        yolo_export(tmp_path / "export")
        (tmp_path / "export" / "labels" / "a.txt").write_text("0 0.5 0.5\n")
        truth = tmp_path / "export" / "labels"
        expected = "a.txt:1: expected 'class cx cy w h'"
    result = evaluate(str(cands), "--truth", str(truth))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- the real TMD dev set -------------------------------------------------------------------------------------


@pytest.mark.skipif(not TMD.is_dir(), reason="../shared/data/real is not available")
def test_all_boxes_of_the_tmd_dev_set_are_read() -> None:
    """113 label files (17 empty), 130 boxes, every one inside its 640 x 640 frame, all monolayers with 0=1."""
    labels = TMD / "labels"
    assert len(list(labels.glob("*.txt"))) == 113
    ann = load_annotations([labels], detect_format([labels]), explicit=parse_class_layers("0=1"))
    assert len(ann.images) == 113 and len(ann.flakes) == 130
    assert sum(1 for key in ann.images if not any(f.image == key for f in ann.flakes)) == 17
    assert {f.kind for f in ann.flakes} == {"box"} and {f.layers for f in ann.flakes} == {1}
    bounds = np.array([f.polygon.bounds for f in ann.flakes])
    assert bounds[:, :2].min() >= -0.5 - 1e-6 and bounds[:, 2:].max() <= 639.5 + 1e-6
    assert all(f.polygon.area >= 16 for f in ann.flakes)
