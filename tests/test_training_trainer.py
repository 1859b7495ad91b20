"""The supervised trainer: it learns, its checkpoints reload and resume exactly, it stops early, it
balances classes, it fine-tunes from local weights files, and evaluate-model reports correct numbers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from typer.testing import CliRunner

from flakehunter.cli import app
from flakehunter.errors import InputError
from flakehunter.tiles import read_image
from flakehunter.training.checkpoint import load_checkpoint, save_checkpoint
from flakehunter.training.datasets import open_dataset
from flakehunter.training.evaluate import evaluate_model, load_trained_model
from flakehunter.training.predict import Predictor
from flakehunter.training.sampling import EpochSampler, balance_report
from flakehunter.training.torchdata import ImageDataset, ImageLoader
from flakehunter.training.trainer import Trainer, predict
from tests.test_training_fixtures import edge_image, make_imagefolder, tiny_recipe, write_png

runner = CliRunner()


def _log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_training_loss_falls_and_the_checkpoint_reloads_with_the_same_predictions(tmp_path: Path) -> None:
    """A tiny CNN on bright-vs-dark patches: the training loss falls, validation accuracy ends high, and
    best.pt/last.pt reload into a network that predicts exactly what the trained one predicts."""
    data = make_imagefolder(tmp_path / "data", {"bright": 16, "dark": 16})
    recipe = tiny_recipe(tmp_path, data, epochs=6, val_fraction=0.25)
    trainer = Trainer(recipe)
    summary = trainer.run()
    rows = _log(recipe.out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.6 * losses[0]
    assert summary["best"]["metric"] == "accuracy" and summary["best"]["value"] >= 0.875
    assert {"best.pt", "last.pt", "log.csv", "curves.png", "recipe.yaml", "summary.json"} <= {
        p.name for p in recipe.out.iterdir()}

    expected, _ = predict(trainer.model, trainer.val_loader, "cpu")
    reloaded, ckpt = load_trained_model(recipe.out / "last.pt")
    got, _ = predict(reloaded, trainer.val_loader, "cpu")
    assert torch.equal(expected, got)
    assert ckpt["epoch"] == 6 and ckpt["classes"] == ["bright", "dark"]
    _, best_ckpt = load_trained_model(recipe.out / "best.pt")
    assert best_ckpt["epoch"] == summary["best"]["epoch"]

    # The in-memory Predictor (what detector plugins use) answers like the trained network.
    predictor = Predictor.load(recipe.out / "last.pt", device="cpu")
    arrays = [read_image(s.path)[0] for s in trainer.val_data.samples]
    answers = predictor.predict(arrays)
    assert [a.label for a in answers] == [ckpt["classes"][int(i)] for i in expected.argmax(1)]
    assert answers[0].probabilities is not None and sum(answers[0].probabilities.values()) == pytest.approx(1.0)


def test_resume_continues_at_the_next_epoch_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """Interrupted after epoch 2 of 4 (Ctrl-C raised from the progress callback, after that epoch's
    checkpoint), --resume starts at epoch 3 and ends with weights identical to an uninterrupted run:
    data order, augmentation and dropout RNG are all restored."""
    data = make_imagefolder(tmp_path / "data", {"bright": 10, "dark": 10})
    straight = tiny_recipe(tmp_path, data, epochs=4, dropout=0.3, out=tmp_path / "straight")
    Trainer(straight).run()

    broken = tiny_recipe(tmp_path, data, epochs=4, dropout=0.3, out=tmp_path / "broken")

    def interrupt(message: str) -> None:
        if message.startswith("epoch 2/4"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(broken, echo=interrupt).run()
    assert load_checkpoint(broken.out / "last.pt")["epoch"] == 2
    with pytest.raises(InputError, match="already holds a training run"):
        Trainer(broken).run()
    messages: list[str] = []
    Trainer(broken, resume=True, echo=messages.append).run()
    assert messages[0] == f"resuming {broken.out} after epoch 2/4"
    assert [m.split()[1] for m in messages[1:3]] == ["3/4", "4/4"]
    assert [int(r["epoch"]) for r in _log(broken.out)] == [1, 2, 3, 4]
    a = load_checkpoint(straight.out / "last.pt")["state_dict"]
    b = load_checkpoint(broken.out / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_stops_when_the_validation_metric_stalls(tmp_path: Path) -> None:
    """With lr ~ 0 nothing improves by more than min_delta after epoch 1 (neither the accuracy nor, at equal
    accuracy, the validation loss), so early_stopping=2 stops after epoch 3 of 10."""
    data = make_imagefolder(tmp_path / "data")
    recipe = tiny_recipe(tmp_path, data, epochs=10, lr=1e-12, schedule="constant", early_stopping=2,
                         min_delta=0.01)
    summary = Trainer(recipe).run()
    assert summary["stopped_early"] and summary["epochs_run"] == 3
    assert summary["best"]["epoch"] == 1


def test_oversampling_and_weighted_sampling_balance_classes(tmp_path: Path) -> None:
    """30:5 imbalance: oversampling draws each class 30 times per epoch (every minority image 6 times,
    each copy differently augmented); weighted sampling draws the classes about equally; both reported."""
    labels = [0] * 30 + [1] * 5
    over = EpochSampler(labels, 35, "oversample", seed=1)
    idx = over.indices()
    assert len(over) == len(idx) == 60
    assert np.bincount(np.asarray(labels)[idx]).tolist() == [30, 30]
    assert np.bincount(idx[idx >= 30] - 30).tolist() == [6] * 5
    drawn = []
    for epoch in range(40):
        weighted = EpochSampler(labels, 35, "weighted", seed=2)
        weighted.set_epoch(epoch)
        drawn.extend(np.asarray(labels)[weighted.indices()])
    share = np.mean(drawn)
    assert 0.45 < share < 0.55
    report = balance_report(labels, ["major", "minor"], "oversample")
    assert report["counts"] == {"major": 30, "minor": 5} and report["imbalance_ratio"] == 6.0
    assert report["expected_draws_per_epoch"] == {"major": 30.0, "minor": 30.0}

    data = open_dataset(make_imagefolder(tmp_path / "d", {"bright": 4, "dark": 1}), "classify")
    from flakehunter.training.augment import Augmenter, AugmentSpec

    ds = ImageDataset(data.samples, ImageLoader(), Augmenter(AugmentSpec(), None), mean=[0.5] * 3, std=[0.2] * 3,
                      seed=0, train=True)
    keys = [k for k in EpochSampler([int(s.target) for s in data.samples], 5, "oversample", 0) if k % 5 == 4]
    assert len(keys) == 4  # the single dark image is drawn 4 times ...
    copies = [ds[k][0] for k in keys]
    assert not any(torch.equal(copies[0], c) for c in copies[1:])  # ... each time augmented differently


def test_balanced_training_run_reports_its_balance(tmp_path: Path) -> None:
    """--balance oversample on an imbalanced set is reported in summary.json with counts and draws."""
    data = make_imagefolder(tmp_path / "data", {"bright": 18, "dark": 4})
    summary = Trainer(tiny_recipe(tmp_path, data, epochs=1, val_fraction=0, balance="oversample")).run()
    assert summary["balance"]["counts"] == {"bright": 18, "dark": 4}
    assert summary["balance"]["expected_draws_per_epoch"] == {"bright": 18.0, "dark": 18.0}


def test_angle_regression_trains_on_edge_images(tmp_path: Path) -> None:
    """The angle task (CSV of path,angle) learns: on straight edges of random direction (period 180°, with
    dihedral augmentation mapping the labels) the unit-circle loss falls and the validation RMS ends far
    below the 52° of a random guess."""
    rng = np.random.default_rng(0)
    lines = ["path,theta"]
    for i in range(48):
        theta = float(rng.uniform(0, 180))
        write_png(tmp_path / "edges" / f"e{i}.png", edge_image(theta, size=24))
        lines.append(f"edges/e{i}.png,{theta:.3f}")
    (tmp_path / "angles.csv").write_text("\n".join(lines) + "\n")
    recipe = tiny_recipe(tmp_path, tmp_path / "angles.csv", task="angle", epochs=12, crop=20, width=8,
                         period_deg=180.0)
    summary = Trainer(recipe).run()
    rows = _log(recipe.out)
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    assert summary["best"]["metric"] == "rms_deg" and summary["period_deg"] == 180.0
    assert summary["best"]["value"] < 20.0


def _resnet_weights(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, path)
    return state


def test_transfer_learning_from_a_local_torchvision_file_with_a_frozen_backbone(tmp_path: Path) -> None:
    """--pretrained-weights loads a real torchvision resnet18 state dict (made here, saved to a file) into
    the backbone; --freeze-backbone trains the head only, leaving every backbone weight as in the file."""
    weights = _resnet_weights(tmp_path / "resnet18-test.pth")
    data = make_imagefolder(tmp_path / "data", {"bright": 8, "dark": 8}, size=32)
    recipe = tiny_recipe(tmp_path, data, model="resnet18", epochs=1, val_fraction=0,
                         pretrained_weights=tmp_path / "resnet18-test.pth", freeze_backbone=True)
    Trainer(recipe).run()
    state = load_checkpoint(recipe.out / "last.pt")["state_dict"]
    for key, value in weights.items():
        if not key.startswith("fc."):
            assert torch.equal(state[f"backbone.{key}"], value), key
    assert not torch.equal(state["head.linear.weight"], torch.zeros_like(state["head.linear.weight"]))


def test_missing_or_wrong_weights_files_are_one_line_input_errors(tmp_path: Path) -> None:
    """A missing torchvision file exits 2 with one line saying how to supply it (never downloads);
    a file of another architecture names the mismatching keys."""
    data = make_imagefolder(tmp_path / "data")
    missing = tmp_path / "resnet18-f37072fd.pth"
    result = runner.invoke(app, ["train", "--task", "classify", "--data", str(data), "--out", str(tmp_path / "r"),
                                 "--model", "resnet18", "--pretrained-weights", str(missing)])
    assert result.exit_code == 2
    assert "does not exist; flakehunter never downloads weights" in result.output
    assert "resnet18-f37072fd.pth once" in result.output and len(result.output.strip().splitlines()) == 1
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    result = runner.invoke(app, ["train", "--task", "classify", "--data", str(data), "--out", str(tmp_path / "r2"),
                                 "--model", "resnet18", "--pretrained-weights", str(tmp_path / "r50.pth")])
    assert result.exit_code == 2 and "is not a torchvision resnet18 file" in result.output


def _constant_checkpoint(tmp_path: Path, data: Path, task: str, bias: list[float], **changes: object) -> Path:
    """A real checkpoint from a 1-epoch run, edited so the network ignores its input: backbone weights
    zeroed (features are 0), head bias set; its predictions are then known exactly."""
    recipe = tiny_recipe(tmp_path, data, task=task, epochs=1, val_fraction=0, **changes)
    Trainer(recipe).run()
    ckpt = load_checkpoint(recipe.out / "best.pt")
    state = ckpt["state_dict"]
    for key in state:
        if key.startswith("backbone.") and key.endswith(".weight"):
            state[key] = torch.zeros_like(state[key])
    state["head.linear.weight"] = torch.zeros_like(state["head.linear.weight"])
    state["head.linear.bias"] = torch.tensor(bias)
    save_checkpoint(recipe.out / "constant.pt", ckpt)
    return recipe.out / "constant.pt"


def test_evaluate_model_classification_numbers_match_a_hand_computed_case(tmp_path: Path) -> None:
    """A model that always answers "b" on 4 a / 3 b / 2 c images: accuracy 3/9, b precision 1/3,
    recall 1, F1 0.5, a and c 0; confusion matrix [[0,4,0],[0,3,0],[0,2,0]]; results.csv per image."""
    data = make_imagefolder(tmp_path / "data", {"a": 4, "b": 3, "c": 2})
    checkpoint = _constant_checkpoint(tmp_path, data, "classify", [0.0, 5.0, 0.0])
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate-model", str(checkpoint), "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(3 / 9)
    per = {row["class"]: row for row in metrics["per_class"]}
    assert per["b"]["precision"] == pytest.approx(1 / 3) and per["b"]["recall"] == 1.0
    assert per["b"]["f1"] == pytest.approx(0.5)
    assert per["a"]["recall"] == per["c"]["recall"] == per["a"]["precision"] == 0.0
    assert metrics["confusion_matrix"] == [[0, 4, 0], [0, 3, 0], [0, 2, 0]]
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 and {r["predicted"] for r in rows} == {"b"}
    assert sum(int(r["correct"]) for r in rows) == 3
    with open(out / "confusion_matrix.csv", newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh))[1] == ["a", "0", "4", "0"]
    assert (out / "confusion_matrix.png").stat().st_size > 1000 and (out / "per_class.csv").exists()


def test_evaluate_model_angle_rms_matches_a_hand_computed_case(tmp_path: Path) -> None:
    """A model that always answers 5° (mod 30) on true angles 0, 10, 29, 14: wrapped errors 5, −5, 6, −9,
    RMS √(167/4) = 6.461°, reported against the 8.66° of a random guess, with the histogram files."""
    rng = np.random.default_rng(0)
    lines = ["path,angle"]
    for i, theta in enumerate([0.0, 10.0, 29.0, 14.0]):
        write_png(tmp_path / "img" / f"{i}.png", (rng.uniform(0, 255, (16, 16))).astype(np.uint8))
        lines.append(f"img/{i}.png,{theta}")
    (tmp_path / "angles.csv").write_text("\n".join(lines) + "\n")
    phase = 2 * math.pi * 5.0 / 30.0
    bias = [math.cos(phase), math.sin(phase)]
    checkpoint = _constant_checkpoint(tmp_path, tmp_path / "angles.csv", "angle", bias)
    report = evaluate_model(checkpoint, tmp_path / "angles.csv", tmp_path / "eval", device="cpu")
    assert report["rms_deg"] == pytest.approx(math.sqrt(167 / 4), abs=1e-4)
    assert report["random_guess_rms_deg"] == pytest.approx(8.660254, abs=1e-5)
    with open(tmp_path / "eval" / "results.csv", newline="", encoding="utf-8") as fh:
        errors = [float(r["error_deg"]) for r in csv.DictReader(fh)]
    assert errors == pytest.approx([5.0, -5.0, 6.0, -9.0], abs=1e-4)
    with open(tmp_path / "eval" / "angle_errors.csv", newline="", encoding="utf-8") as fh:
        assert sum(int(r["count"]) for r in csv.DictReader(fh)) == 4
    assert (tmp_path / "eval" / "angle_error_hist.png").exists()
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["rms_deg"] == pytest.approx(report["rms_deg"])


def test_evaluate_model_rejects_labels_the_model_does_not_know(tmp_path: Path) -> None:
    """Evaluating on a class the checkpoint was not trained on is exit 2 naming the label."""
    data = make_imagefolder(tmp_path / "data")
    Trainer(tiny_recipe(tmp_path, data, epochs=1, val_fraction=0)).run()
    other = make_imagefolder(tmp_path / "other", {"bright": 2, "grey": 2})
    result = runner.invoke(app, ["evaluate-model", str(tmp_path / "run" / "best.pt"), "--data", str(other),
                                 "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "labels grey are not among the classes bright, dark" in result.output
