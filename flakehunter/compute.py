"""Choosing the compute device for torch-based plugins, with a clean CPU fallback."""

from __future__ import annotations

from flakehunter.errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def check_device_choice(preference: str) -> None:
    """Validate a --device value early; only an explicit "cuda" needs torch to answer."""
    if preference == "cuda":
        resolve_device(preference)
    elif preference not in DEVICE_CHOICES:
        raise InputError(f"--device: expected one of {', '.join(DEVICE_CHOICES)}, got {preference!r}")


def resolve_device(preference: str = "auto") -> str:
    """Return "cuda" or "cpu" for a preference of "auto", "cpu" or "cuda".

    "auto" uses the GPU when torch sees one and the CPU otherwise; "cuda" without a usable GPU is
    an input error rather than a silent slowdown. torch is imported only here, when needed.
    """
    if preference not in DEVICE_CHOICES:
        raise InputError(f"--device: expected one of {', '.join(DEVICE_CHOICES)}, got {preference!r}")
    if preference == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if preference == "cuda" and not available:
        raise InputError("--device cuda: no CUDA device is available here (use auto or cpu)")
    return "cuda" if available else "cpu"
