"""Loading the CNN detectors' weights: plain state dicts, read safely, once per process, on the chosen device.

A model is two files side by side: ``NAME.pt``, a plain state dict (parameter name -> tensor; nothing else)
read with ``torch.load(..., weights_only=True)``, and ``NAME.json``, what rebuilds and feeds the network
(model spec, classes or angle period, preprocessing). ``flakehunter train`` writes both as ``model.pt`` and
``model.json``; the shipped defaults live in this plugin's ``weights/`` folder. Anything else in a ``.pt``
(a pickled module, a training checkpoint with optimiser state) is refused with a message saying what to give
instead.

Device: "auto" takes the GPU when torch sees one; without one, and when "cuda" is asked for on a machine
without a usable GPU, the models run on the CPU and one line is logged (once per process).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flakehunter.errors import InputError
from flakehunter.models import ModelSpec, Network, build_network

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The shipped default of each role.
DEFAULTS = {"thickness": "thickness", "axis-30": "axis30", "axis-60": "axis60"}
MODEL_FORMAT = "flakehunter.model"

_lock = threading.Lock()
_cache: dict[tuple[str, str], LoadedModel] = {}
_device_logged = False


@dataclass
class LoadedModel:
    """A network in eval mode on ``device``, with what its JSON card says."""

    network: Network
    card: dict[str, Any]
    device: str
    path: Path

    @property
    def task(self) -> str:
        return str(self.card["task"])

    @property
    def classes(self) -> list[str]:
        return list(self.card.get("classes") or [])

    @property
    def period_deg(self) -> float | None:
        value = self.card.get("period_deg")
        return None if value is None else float(value)


def choose_device(preference: str, who: str = "cnn") -> str:
    """"cuda" or "cpu" for "auto", "cpu" or "cuda"; a missing GPU falls back to the CPU with one log line."""
    global _device_logged
    if preference not in ("auto", "cpu", "cuda"):
        raise InputError(f"device: expected auto, cpu or cuda, got {preference!r}")
    if preference == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    with _lock:
        if not _device_logged:
            _device_logged = True
            asked = "cuda was asked for but " if preference == "cuda" else ""
            level = logging.WARNING if preference == "cuda" else logging.INFO  # "auto" expects either
            log.log(level, "%s: %sno CUDA device is available; the CNN detectors run on the CPU", who, asked)
    return "cpu"


def default_weights(role: str) -> Path:
    """The shipped weights file of ``role`` ("thickness", "axis-30" or "axis-60")."""
    return WEIGHTS_DIR / f"{DEFAULTS[role]}.pt"


def resolve_weights(value: str | None, role: str, config_dir: Path | None = None) -> Path:
    """The weights file an option names (a path, relative to the config's folder), or the shipped default."""
    if not value:
        return default_weights(role)
    path = Path(value).expanduser()
    if not path.is_absolute() and config_dir is not None:
        path = config_dir / path
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from ``path`` (``weights_only=True``); anything else is an InputError saying why."""
    if not path.is_file():
        raise InputError(f"weights: {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unsafe pickle (a whole module), a zip error: not a weights file
        text = " ".join(str(exc).split())[:200]
        raise InputError(f"weights: {path} is not a plain state dict readable with weights_only=True ({text}); "
                         "give the model.pt that flakehunter train writes") from None
    if not isinstance(data, dict) or not data or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        what = f"a dict with keys {', '.join(sorted(map(str, data))[:5])}" if isinstance(data, dict) else \
            type(data).__name__
        raise InputError(f"weights: {path} holds {what}, not a plain state dict (parameter name -> tensor); "
                         "give the model.pt that flakehunter train writes beside best.pt")
    return data


def read_card(path: Path) -> dict[str, Any]:
    card_path = path.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except OSError:
        raise InputError(f"weights: {card_path} (what rebuilds the network of {path.name}) is missing") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"weights: {card_path} is not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT or "model" not in card:
        raise InputError(f"weights: {card_path}: format: expected a {MODEL_FORMAT} card")
    return card


def load_model(path: Path, device: str, task: str) -> LoadedModel:
    """The network of ``path`` on ``device`` (loaded once per process and device); its card must say ``task``."""
    key = (str(Path(path).resolve()), device)
    with _lock:
        cached = _cache.get(key)
    card = cached.card if cached is not None else read_card(path)
    if card.get("task") != task:
        raise InputError(f"weights: {path} is a {card.get('task')!r} model; this detector needs a {task!r} one")
    if cached is not None:
        return cached
    state = read_state_dict(path)
    network = build_network(ModelSpec.from_dict(card["model"]))
    missing = set(network.state_dict()) ^ set(state)
    if missing:
        raise InputError(f"weights: {path} does not fit its card's model ({', '.join(sorted(missing)[:3])} ...)")
    network.load_state_dict(state)
    network.eval().to(device)
    if device == "cpu":
        network.to(memory_format=torch.channels_last)
    loaded = LoadedModel(network, card, device, Path(path))
    with _lock:
        _cache.setdefault(key, loaded)
        return _cache[key]
