"""The CNN detectors' weights: shipped as plain state dicts, refused when they are anything else, and the CPU
fallback when no GPU is there."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from flakehunter.errors import InputError
from flakehunter.models import ModelSpec, build_network
from flakehunter.plugins.cnn import model_store
from flakehunter.plugins.cnn.model_store import WEIGHTS_DIR, choose_device, load_model, read_state_dict

SHIPPED = sorted(WEIGHTS_DIR.glob("*.pt"))


def test_shipped_weights_are_plain_state_dicts_within_the_size_budget() -> None:
    assert {p.stem for p in SHIPPED} >= {"thickness", "axis30", "axis60"}
    assert sum(p.stat().st_size for p in SHIPPED) <= 20 * 1024 * 1024
    for path in SHIPPED:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and state
        assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["format"] == "flakehunter.model"
        network = build_network(ModelSpec.from_dict(card["model"]))
        network.load_state_dict(state)  # strict: the card rebuilds exactly this network
        assert path.with_suffix(".md").is_file(), f"{path.name} has no model card"


def _card(path: Path, task: str = "segment") -> None:
    spec = ModelSpec(name="unet", task="segment", num_classes=7, width=2)
    path.with_suffix(".json").write_text(json.dumps({
        "format": "flakehunter.model", "task": task, "model": spec.to_dict(), "classes": [], "period_deg": None,
        "preprocess": {}}))


def test_a_pickled_module_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)  # a whole pickled module: code, not weights
    _card(path)
    with pytest.raises(InputError, match="not a plain state dict readable with weights_only=True"):
        read_state_dict(path)
    with pytest.raises(InputError, match="not a plain state dict"):
        load_model(path, "cpu", "segment")


def test_a_training_checkpoint_is_refused_and_named(tmp_path: Path) -> None:
    network = build_network(ModelSpec(name="unet", task="segment", num_classes=7, width=2))
    path = tmp_path / "best.pt"
    torch.save({"format": "flakehunter.checkpoint", "epoch": 3, "state_dict": network.state_dict()}, path)
    _card(path)
    with pytest.raises(InputError, match=r"holds a dict with keys epoch, format, state_dict, not a plain state dict"):
        load_model(path, "cpu", "segment")


def test_a_state_dict_loads_once_per_process_and_its_task_is_checked(tmp_path: Path) -> None:
    network = build_network(ModelSpec(name="unet", task="segment", num_classes=7, width=2))
    path = tmp_path / "model.pt"
    torch.save(network.state_dict(), path)
    _card(path)
    first = load_model(path, "cpu", "segment")
    assert load_model(path, "cpu", "segment") is first
    with pytest.raises(InputError, match="is a 'segment' model; this detector needs a 'angle' one"):
        load_model(path, "cpu", "angle")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_falls_back_to_the_cpu_with_one_log_line(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_store, "_device_logged", False)
    with caplog.at_level(logging.INFO, logger="flakehunter.plugins.cnn.model_store"):
        assert choose_device("cuda", "cnn-thickness") == "cpu"
        assert choose_device("auto", "cnn-axis") == "cpu"
        assert choose_device("cuda", "cnn-axis") == "cpu"
    lines = [r for r in caplog.records if r.name == "flakehunter.plugins.cnn.model_store"]
    assert len(lines) == 1
    assert "cuda was asked for but no CUDA device is available; the CNN detectors run on the CPU" in lines[0].message
    assert choose_device("cpu") == "cpu"
    with pytest.raises(InputError, match="expected auto, cpu or cuda"):
        choose_device("gpu")
