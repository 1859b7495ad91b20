"""PNG plots of training and evaluation (matplotlib, headless Agg backend), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flakehunter.atomic import atomic_write


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Any, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")


def confusion_matrix_png(path: Path, matrix: np.ndarray, classes: Sequence[str]) -> None:
    """Counts with each row (true class) shaded by its recall share."""
    k = len(classes)
    fig = _figure(1.6 + 0.55 * k, 1.3 + 0.5 * k)
    ax = fig.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xticks(range(k), list(classes), rotation=45, ha="right")
    ax.set_yticks(range(k), list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(matrix) / max(int(matrix.sum()), 1)
    ax.set_title(f"confusion matrix (accuracy {accuracy:.3f})", fontsize=9)
    _save(fig, path)


def angle_error_png(path: Path, edges: np.ndarray, counts: np.ndarray, rms_deg: float, random_rms_deg: float) -> None:
    """Histogram of wrapped errors, with the flat level a random guess would give."""
    fig = _figure(5.0, 3.2)
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, alpha=0.7, label="model")
    width = edges[1] - edges[0]
    uniform = counts.sum() * width / (edges[-1] - edges[0])
    ax.axhline(uniform, color="grey", linestyle="--", label=f"random guess (RMS {random_rms_deg:.2f}°)")
    ax.set_xlabel("angle error, wrapped (deg)")
    ax.set_ylabel("images")
    ax.set_title(f"angle error: RMS {rms_deg:.2f}° vs {random_rms_deg:.2f}° for a random guess", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)


def training_curves_png(path: Path, history: list[dict[str, Any]], metric: str) -> None:
    """Loss (train and validation) and the validation metric against the epoch."""
    if not history:
        return
    fig = _figure(8.0, 3.0)
    epochs = [row["epoch"] for row in history]
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(epochs, [row["train_loss"] for row in history], marker=".", label="train")
    if any("val_loss" in row for row in history):
        ax.plot(epochs, [row.get("val_loss", np.nan) for row in history], marker=".", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    key = f"val_{metric}"
    if any(key in row for row in history):
        ax2.plot(epochs, [row.get(key, np.nan) for row in history], marker=".", color="C2")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(key)
    _save(fig, path)


def gradcam_png(path: Path, image: np.ndarray, heat: np.ndarray, title: str) -> None:
    """The image (H, W, 3 in [0, 1]) beside itself under its heat map."""
    fig = _figure(6.4, 3.4)
    left, right = fig.subplots(1, 2)
    for ax in (left, right):
        ax.imshow(np.clip(image, 0, 1))
        ax.set_axis_off()
    right.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
