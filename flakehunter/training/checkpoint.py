"""Checkpoints: written atomically, read with ``weights_only=True``, carrying RNG state for exact resumes.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only (no pickled objects), so
``torch.load(path, weights_only=True)`` reads it and a checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from flakehunter.atomic import atomic_write
from flakehunter.errors import InputError, RuntimeFailure

CHECKPOINT_FORMAT = "flakehunter.checkpoint"


def save_checkpoint(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` with torch.save to a temporary file and rename it over ``path``."""
    try:
        with atomic_write(path, "wb") as fh:
            torch.save(data, fh)
    except OSError as exc:
        raise RuntimeFailure(f"{path}: could not write the checkpoint ({exc.strerror or exc})") from exc


def load_checkpoint(path: Path, expected_format: str = CHECKPOINT_FORMAT) -> dict[str, Any]:
    """Read a checkpoint; an InputError names the file when it is missing, unreadable or of another kind."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable checkpoint ({' '.join(str(exc).split())[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path}: format: expected a {expected_format} file, found {found!r}")
    return data


def rng_state() -> dict[str, Any]:
    """torch's CPU (and CUDA) generator states: dropout and anything else drawn from torch's global RNG."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch CPU threads (None: leave torch's setting), then restore it."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
