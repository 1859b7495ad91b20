"""Every dataset format yields the right image with the right label; splits and subsets are sound."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Point

from flakehunter.errors import InputError
from flakehunter.hardware.simulator.dataset import THICKNESS_CLASSES, image_angle_deg, write_simulator_dataset
from flakehunter.hardware.simulator.generate import generate_chip
from flakehunter.registry import get_registry
from flakehunter.tiles import read_image
from flakehunter.training.datasets import detect_format, limit, open_dataset, split
from flakehunter.training.microstructure import microstructure_image, voronoi_labels, write_microstructure_dataset
from flakehunter.training.torchdata import ImageLoader
from tests.test_training_fixtures import brightness_image, make_imagefolder, write_png


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_imagefolder_labels_come_from_the_folder_names(tmp_path: Path) -> None:
    """Class subfolders -> classes in natural order, each image labelled with its folder."""
    root = make_imagefolder(tmp_path / "data", {"bright": 3, "dark": 2})
    write_png(root / "10L" / "a.png", brightness_image(True, np.random.default_rng(0)))
    write_png(root / "2L" / "nested" / "b.png", brightness_image(True, np.random.default_rng(1)))
    data = open_dataset(root, "classify")
    assert data.format == "imagefolder"
    assert data.classes == ["2L", "10L", "bright", "dark"]
    for s in data.samples:
        assert data.classes[int(s.target)] == s.label
        assert s.label in s.path.parts
    assert data.class_counts() == {"2L": 1, "10L": 1, "bright": 3, "dark": 2}


def test_csv_of_paths_and_labels_with_a_chosen_column(tmp_path: Path) -> None:
    """``path,primary_microconstituent`` CSV: paths relative to the CSV, the named label column used."""
    rng = np.random.default_rng(0)
    rows = [("img/a.png", "pearlite", "x"), ("img/b.png", "martensite", "y"), ("img/c.png", "pearlite", "z")]
    for p, _, _ in rows:
        write_png(tmp_path / p, brightness_image(True, rng))
    table = tmp_path / "steel.csv"
    table.write_text("path,primary_microconstituent,note\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    data = open_dataset(table, "classify")
    assert data.format == "csv"
    assert data.classes == ["martensite", "pearlite"]
    assert [(s.path.name, s.label, int(s.target)) for s in data.samples] == [
        ("a.png", "pearlite", 1), ("b.png", "martensite", 0), ("c.png", "pearlite", 1)]
    by_note = open_dataset(table, "classify", label_column="note")
    assert [s.label for s in by_note.samples] == ["x", "y", "z"]
    with pytest.raises(InputError, match=r"steel.csv: --label-column 'phase' is not a column"):
        open_dataset(table, "classify", label_column="phase")
    table.write_text("path,primary_microconstituent\nimg/missing.png,ferrite\nimg/a.png,pearlite\n")
    with pytest.raises(InputError, match=r"steel.csv: line 2: path 'img/missing.png': no such file"):
        open_dataset(table, "classify")


def test_axis_csv_expands_pre_augmented_copies_and_keeps_them_together(tmp_path: Path) -> None:
    """``basename, axis_angle, count``: every copy ``basename-n`` (0- or 1-based, tif/jpg) gets the row's
    angle modulo the period; a split never separates the copies of one picture."""
    rng = np.random.default_rng(0)
    names = {"flakeA": (0, 3, ".tif"), "flakeB": (1, 2, ".jpg"), "flakeC": (0, 4, ".png"), "flakeD": (1, 3, ".png")}
    for base, (first, count, suffix) in names.items():
        for n in range(first, first + count):
            write_png(tmp_path / "pics" / f"{base}-{n}.png", brightness_image(True, rng))
            if suffix != ".png":
                (tmp_path / "pics" / f"{base}-{n}.png").rename(tmp_path / "pics" / f"{base}-{n}{suffix}")
    (tmp_path / "pics" / "axes.csv").write_text(
        "basename, axis_angle, count\nflakeA, 12.5, 3\nflakeB, 47, 2\nflakeC, -4, 4\nflakeD, 29.9, 3\n"
    )
    assert detect_format(tmp_path / "pics") == "axis"
    data = open_dataset(tmp_path / "pics", "angle")
    assert data.period_deg == 30.0
    got = {(s.group, s.path.name, round(s.target, 6)) for s in data.samples}
    assert got == {
        ("flakeA", "flakeA-0.tif", 12.5), ("flakeA", "flakeA-1.tif", 12.5), ("flakeA", "flakeA-2.tif", 12.5),
        ("flakeB", "flakeB-1.jpg", 17.0), ("flakeB", "flakeB-2.jpg", 17.0),
        *{("flakeC", f"flakeC-{n}.png", 26.0) for n in range(4)},
        *{("flakeD", f"flakeD-{n}.png", 29.9) for n in (1, 2, 3)},
    }
    assert {s.target for s in open_dataset(tmp_path / "pics", "angle", period_deg=60.0).samples} >= {47.0, 56.0}
    train, val = split(data, 0.5, seed=3)
    assert {s.group for s in train.samples}.isdisjoint({s.group for s in val.samples})
    assert len(train.samples) + len(val.samples) == len(data.samples)
    with pytest.raises(InputError, match="holds angles; use --task angle"):
        open_dataset(tmp_path / "pics", "classify")
    (tmp_path / "pics" / "flakeC-3.png").unlink()
    with pytest.raises(InputError, match=r"axes.csv: line 4: flakeC: copy 3 of 4 not found"):
        open_dataset(tmp_path / "pics", "angle")


def test_label_images_give_one_crop_per_region_with_its_layer_count(tmp_path: Path) -> None:
    """Label image pixel = layer count: each region (not 0 = substrate, not 255 = ignore, not smaller than
    min_region_px) becomes a crop centred inside it, labelled "{n}L"; a C-shaped region's crop centre
    still lies on the region."""
    image = np.full((80, 100, 3), 120, np.uint8)
    label = np.zeros((80, 100), np.uint8)
    label[10:30, 10:30] = 1
    label[40:70, 50:90] = 2
    label[45:65, 60:80] = 0  # a hole: the 2L region is a frame whose centre is substrate
    label[5:15, 70:95] = 255
    label[75:78, 5:8] = 3  # 9 px: below min_region_px
    write_png(tmp_path / "ds" / "images" / "chip1.png", image)
    write_png(tmp_path / "ds" / "labels" / "chip1.png", label)
    data = open_dataset(tmp_path / "ds", "classify", label_crop_px=16, min_region_px=20)
    assert data.format == "label-images"
    assert sorted(s.label for s in data.samples) == ["1L", "2L"]
    for s in data.samples:
        r0, c0, r1, c1 = s.box
        assert (r1 - r0, c1 - c0) == (16, 16)
        assert label[(r0 + r1) // 2, (c0 + c1) // 2] == int(s.label[:-1])
    crop = ImageLoader()(data.samples[0])
    assert crop.shape == (16, 16, 3)
    write_png(tmp_path / "ds" / "labels" / "chip1.png", label[:70])
    with pytest.raises(InputError, match="differs from its image"):
        open_dataset(tmp_path / "ds", "classify")


def test_simulator_thickness_dataset_labels_match_the_chip_truth(tmp_path: Path) -> None:
    """``simulate dataset --task thickness``: balanced classes, each crop centred on a flake whose layer class
    is its label (checked against the regenerated chip), darker than the bare substrate for 1-2L graphene."""
    meta = write_simulator_dataset(tmp_path / "sim", "thickness", 12, classes="1L,2L", seed=4)
    assert meta["class_counts"] == {"1L": 6, "2L": 6}
    data = open_dataset(tmp_path / "sim", "classify")
    assert data.format == "simulator" and data.classes == ["1L", "2L"]
    rows = _rows(tmp_path / "sim" / "labels.csv")
    spec_dump = meta["chip_spec"]
    from flakehunter.hardware.simulator.chip import ChipSpec

    material = get_registry().material("graphene")
    chips = {seed: generate_chip(ChipSpec.model_validate(spec_dump), material, 90.0, seed) for seed in meta["chips"]}
    for row, sample in zip(rows, data.samples, strict=True):
        flake = next(f for f in chips[int(row["chip_seed"])].flakes if f.id == int(row["flake_id"]))
        assert flake.layer_class == row["label"] == sample.label
        assert flake.polygon.contains(Point(float(row["x_um"]), float(row["y_um"])))
        image, _ = read_image(sample.path)
        assert image.shape == (32, 32, 3)
        centre = image[14:18, 14:18, 1].mean()
        assert centre < np.median(image[..., 1]) + 1  # graphene darkens green: the centre is on the flake


def test_simulator_axis_dataset_angles_are_the_flakes_theta(tmp_path: Path) -> None:
    """``--task axis``: each label is the flake's θ in the image frame (mod 30° for graphene)."""
    meta = write_simulator_dataset(tmp_path / "ax", "axis", 5, seed=2)
    assert meta["period_deg"] == 30.0 and meta["count"] == 5
    data = open_dataset(tmp_path / "ax", "angle")
    assert data.period_deg == 30.0
    rows = _rows(tmp_path / "ax" / "labels.csv")
    from flakehunter.geometry import PixelTransform
    from flakehunter.hardware.simulator.chip import ChipSpec

    material = get_registry().material("graphene")
    spec = ChipSpec.model_validate(meta["chip_spec"])
    for row, sample in zip(rows, data.samples, strict=True):
        flake = next(f for f in generate_chip(spec, material, 90.0, int(row["chip_seed"])).flakes
                     if f.id == int(row["flake_id"]))
        assert flake.straight_edges
        expected = image_angle_deg(flake.theta_deg, PixelTransform(0.5), 30.0)
        assert sample.target == pytest.approx(expected, abs=1e-3)


def test_simulator_dataset_refuses_bad_input_and_a_used_folder(tmp_path: Path) -> None:
    """Unknown classes and a non-empty --out are one-line input errors; nothing is overwritten."""
    with pytest.raises(InputError, match="--classes"):
        write_simulator_dataset(tmp_path / "a", "thickness", 4, classes="1L,7L")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_simulator_dataset(tmp_path / "b", "thickness", 4)
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"
    assert THICKNESS_CLASSES[-1] == "bulk"


def test_microstructure_classes_differ_in_grain_size_and_are_reproducible(tmp_path: Path) -> None:
    """Coarse images have far fewer grains than fine ones; the same seed gives the same image; the written
    folder is an ImageFolder dataset with both classes."""
    rng = np.random.default_rng(0)
    coarse = len(np.unique(voronoi_labels(128, 0.25 * 128, rng)))
    fine = len(np.unique(voronoi_labels(128, 0.08 * 128, rng)))
    assert fine > 5 * coarse
    a = microstructure_image("fine", 64, np.random.default_rng([1, 2]))
    b = microstructure_image("fine", 64, np.random.default_rng([1, 2]))
    assert np.array_equal(a, b) and a.dtype == np.uint8
    write_microstructure_dataset(tmp_path / "ms", 3, 48, seed=1)
    data = open_dataset(tmp_path / "ms", "classify")
    assert data.class_counts() == {"coarse": 3, "fine": 3}
    assert json.loads((tmp_path / "ms" / "microstructure.json").read_text())["size_px"] == 48


def test_split_and_limit_are_stratified_and_seeded(tmp_path: Path) -> None:
    """A validation split keeps every class on both sides; --limit N keeps class proportions; both depend
    only on the seed."""
    data = open_dataset(make_imagefolder(tmp_path / "d", {"bright": 30, "dark": 10}), "classify")
    train, val = split(data, 0.2, seed=1)
    assert train.class_counts() == {"bright": 24, "dark": 8} and val.class_counts() == {"bright": 6, "dark": 2}
    assert [s.path for s in split(data, 0.2, seed=1)[1].samples] == [s.path for s in val.samples]
    small = limit(data, 8, seed=5)
    assert small.class_counts() == {"bright": 6, "dark": 2}
    tiny = limit(data, 2, seed=5)
    assert tiny.class_counts() == {"bright": 1, "dark": 1}


def test_unrecognised_or_bad_datasets_are_input_errors(tmp_path: Path) -> None:
    """A folder in no known format, or a single-class dataset, is a one-line InputError naming it."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: not a dataset"):
        open_dataset(tmp_path / "empty", "classify")
    make_imagefolder(tmp_path / "one", {"bright": 3})
    with pytest.raises(InputError, match="at least 2 classes"):
        open_dataset(tmp_path / "one", "classify")
    with pytest.raises(InputError, match="no such dataset"):
        open_dataset(tmp_path / "nope", "classify")
