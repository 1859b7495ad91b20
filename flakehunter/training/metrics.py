"""Evaluation numbers: accuracy, per-class precision/recall/F1, confusion matrix; wrapped angle errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from flakehunter.training.angles import angle_error_deg, random_guess_rms_deg


def confusion_matrix(true: ArrayLike, predicted: ArrayLike, num_classes: int) -> np.ndarray:
    """(classes, classes) counts; row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, int), np.asarray(predicted, int)), 1)
    return matrix


def classification_metrics(true: ArrayLike, predicted: ArrayLike, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1 and per-class precision, recall, F1 and support.

    A precision or recall whose denominator is zero (a class never predicted, or absent from the data)
    is reported as 0.0, as scikit-learn's ``zero_division=0`` does; its support says which case it is.
    """
    matrix = confusion_matrix(true, predicted, len(classes))
    tp = np.diag(matrix).astype(float)
    predicted_n = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted_n, out=np.zeros_like(tp), where=predicted_n > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    total = int(matrix.sum())
    return {
        "n": total,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": [
            {"class": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i])}
            for i, name in enumerate(classes)
        ],
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
    }


def angle_metrics(true_deg: ArrayLike, predicted_deg: ArrayLike, period_deg: float) -> dict[str, Any]:
    """RMS, mean, median and max of the wrapped error, its bias, and the random-guess RMS to compare with."""
    err = angle_error_deg(predicted_deg, true_deg, period_deg)
    absolute = np.abs(err)
    return {
        "n": len(err),
        "period_deg": period_deg,
        "rms_deg": float(np.sqrt(np.mean(err**2))) if len(err) else 0.0,
        "mean_abs_deg": float(absolute.mean()) if len(err) else 0.0,
        "median_abs_deg": float(np.median(absolute)) if len(err) else 0.0,
        "max_abs_deg": float(absolute.max()) if len(err) else 0.0,
        "bias_deg": float(err.mean()) if len(err) else 0.0,
        "within_1_deg": float((absolute <= 1.0).mean()) if len(err) else 0.0,
        "within_3_deg": float((absolute <= 3.0).mean()) if len(err) else 0.0,
        "random_guess_rms_deg": random_guess_rms_deg(period_deg),
    }


def error_histogram(
    errors_deg: ArrayLike, period_deg: float, bin_deg: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of wrapped errors in bins of ``bin_deg`` over [-period/2, period/2]; returns (edges, counts)."""
    half = period_deg / 2.0
    edges = np.arange(-half, half + bin_deg * 0.5, bin_deg)
    if edges[-1] < half:
        edges = np.append(edges, half)
    counts, _ = np.histogram(np.asarray(errors_deg, float), bins=edges)
    return edges, counts
