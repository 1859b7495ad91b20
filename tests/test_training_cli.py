"""The command line: recipes, @file argument files, overrides, resume, and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from flakehunter.cli import app
from tests.test_training_fixtures import make_imagefolder

runner = CliRunner()


def _recipe(run: Path) -> dict:
    return yaml.safe_load((run / "recipe.yaml").read_text())


def test_recipe_argument_file_and_command_line_precedence(tmp_path: Path) -> None:
    """Recipe < argument file < later command-line options; recipe paths are relative to the recipe;
    --set reaches nested fields."""
    make_imagefolder(tmp_path / "recipes" / "data")
    (tmp_path / "recipes" / "tiny.yaml").write_text(
        "task: classify\ndata: data\nmodel: small-cnn\nwidth: 4\nepochs: 5\nbatch_size: 8\n"
        "device: cpu\ntensorboard: false\naugment: {noise: 0.0}\n"
    )
    (tmp_path / "args.txt").write_text(
        f"# tiny run\n--recipe {tmp_path / 'recipes' / 'tiny.yaml'} --epochs 3\n--seed 4  # a comment\n"
    )
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", f"@{tmp_path / 'args.txt'}", "--epochs", "1", "--out", str(run),
                                 "--set", "augment.exposure=0.05", "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    used = _recipe(run)
    assert used["epochs"] == 1 and used["seed"] == 4 and used["width"] == 4
    assert Path(used["data"]) == tmp_path / "recipes" / "data"
    assert used["augment"]["exposure"] == 0.05 and used["augment"]["noise"] == 0.0
    assert "epoch 1/1" in result.output and "checkpoints:" in result.output


def test_bad_recipe_fields_and_missing_arguments_are_one_line_errors(tmp_path: Path) -> None:
    """A misspelt recipe key names the file and the field; a missing --data says it is required; a missing
    argument file names it. All exit 2 with one line."""
    (tmp_path / "bad.yaml").write_text("task: classify\nepochz: 3\n")
    result = runner.invoke(app, ["train", "--recipe", str(tmp_path / "bad.yaml"), "--data", "x", "--out", "y"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'bad.yaml'}: epochz: unknown field"
    result = runner.invoke(app, ["train", "--task", "classify", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "command line: data: required" in result.output
    result = runner.invoke(app, ["train", f"@{tmp_path / 'nope.txt'}"])
    assert result.exit_code == 2 and "nope.txt: cannot read the argument file" in result.output
    result = runner.invoke(app, ["train", "--task", "regress", "--data", "x", "--out", "y"])
    assert result.exit_code == 2 and "task:" in result.output


def test_resume_from_the_command_line_extends_a_step_schedule_run(tmp_path: Path) -> None:
    """`train --resume OUT --epochs N` continues a finished 1-epoch run to N epochs with its own recipe;
    other options are refused."""
    data = make_imagefolder(tmp_path / "data")
    run = tmp_path / "run"
    base = ["train", "--task", "classify", "--data", str(data), "--out", str(run), "--width", "4", "--epochs", "1",
            "--device", "cpu", "--schedule", "step", "--no-tensorboard"]
    assert runner.invoke(app, base).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert f"resuming {run} after epoch 1/2" in result.output and "epoch 2/2" in result.output
    refused = runner.invoke(app, ["train", "--resume", str(run), "--lr", "0.1"])
    assert refused.exit_code == 2 and "only --device, --epochs" in refused.output


def test_simulate_microstructure_and_evaluate_from_the_command_line(tmp_path: Path) -> None:
    """`simulate microstructure` writes a class-folder dataset that `train` and `evaluate-model` read;
    evaluate-model's metrics.json has the accuracy and a results.csv row per image."""
    result = runner.invoke(app, ["simulate", "microstructure", "--out", str(tmp_path / "ms"), "--count", "4",
                                 "--size", "48", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["train", "--task", "classify", "--data", str(tmp_path / "ms"), "--out",
                               str(tmp_path / "run"), "--width", "4", "--epochs", "1", "--crop", "40",
                               "--device", "cpu", "--no-tensorboard"]).exit_code == 0
    result = runner.invoke(app, ["evaluate-model", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "ms"),
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 8 and 0.0 <= metrics["accuracy"] <= 1.0
    assert len((tmp_path / "eval" / "results.csv").read_text().splitlines()) == 9


def test_simulate_dataset_command(tmp_path: Path) -> None:
    """`simulate dataset --task thickness` reports its class counts and writes dataset.json."""
    result = runner.invoke(app, ["simulate", "dataset", "--task", "thickness", "--count", "4", "--classes",
                                 "1L,3L", "--out", str(tmp_path / "sim"), "--seed", "9"])
    assert result.exit_code == 0, result.output
    assert "4 crops of 32 px" in result.output and "1L 2, 3L 2" in result.output
    assert json.loads((tmp_path / "sim" / "dataset.json").read_text())["classes"] == ["1L", "3L"]
    bad = runner.invoke(app, ["simulate", "dataset", "--task", "depth", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--task: expected thickness or axis" in bad.output


def test_tensorboard_is_optional_and_csv_logs_are_always_written(tmp_path: Path) -> None:
    """Without the tensorboard extra, the default skips TensorBoard cleanly (CSV log still written) and
    --tensorboard is a one-line error saying how to install it; with the extra, event files appear."""
    from flakehunter.training.logs import TrainingLog, tensorboard_available

    data = make_imagefolder(tmp_path / "data")
    args = ["train", "--task", "classify", "--data", str(data), "--width", "4", "--epochs", "1", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "default" / "log.csv").read_text().startswith("epoch,")
    assert (tmp_path / "default" / "tensorboard").exists() == tensorboard_available()
    forced = runner.invoke(app, [*args, "--out", str(tmp_path / "forced"), "--tensorboard"])
    if tensorboard_available():
        assert forced.exit_code == 0 and any((tmp_path / "forced" / "tensorboard").iterdir())
    else:
        assert forced.exit_code == 2 and "pip install 'flakehunter[tensorboard]'" in forced.output
    log = TrainingLog(tmp_path, [], tensorboard=False)
    log.epoch({"epoch": 1, "train_loss": 0.5})
    log.close()
    assert (tmp_path / "log.csv").read_text() == "epoch,train_loss\n1,0.5\n"
