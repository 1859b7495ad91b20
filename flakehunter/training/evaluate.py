"""``flakehunter evaluate-model``: a trained checkpoint against a labelled dataset, as numbers and plots.

Writes into ``out``:

* ``metrics.json``       ``accuracy`` (classify) or ``rms_deg`` (angle), and the rest below
* ``results.csv``        one row per image: truth, prediction, confidence or wrapped error
* classify: ``per_class.csv`` (precision, recall, F1, support), ``confusion_matrix.csv`` and ``.png``
* angle: ``angle_errors.csv`` (1° histogram of the wrapped error) and ``angle_error_hist.png``, with the
  RMS compared against P/√12, the RMS of a random guess (8.66° for a 30° period)
* with ``gradcam``: ``gradcam/*.png`` (where the classifier looked, misclassified images first) and
  ``gradcam/index.csv``
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from flakehunter.atomic import write_json_atomic
from flakehunter.compute import resolve_device
from flakehunter.errors import InputError
from flakehunter.models import ModelSpec, build_network
from flakehunter.models.heads import AngleHead
from flakehunter.training.angles import angle_error_deg
from flakehunter.training.augment import Augmenter
from flakehunter.training.checkpoint import load_checkpoint
from flakehunter.training.datasets import open_dataset
from flakehunter.training.logs import write_csv
from flakehunter.training.metrics import error_histogram
from flakehunter.training.plots import angle_error_png, confusion_matrix_png
from flakehunter.training.torchdata import ImageDataset, ImageLoader
from flakehunter.training.trainer import predict, score


def load_trained_model(checkpoint: Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The network of a ``train`` checkpoint (best.pt or last.pt), in eval mode, and the checkpoint dict."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") != "train":
        raise InputError(f"{checkpoint}: a {ckpt.get('kind')!r} checkpoint; evaluate-model needs one written by train")
    model = build_network(ModelSpec.from_dict(ckpt["model"]))
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return model, ckpt


def evaluate_model(
    checkpoint: Path,
    data: Path,
    out: Path,
    *,
    format: str = "auto",
    label_column: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    gradcam: int = 0,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``data``, write the report into ``out`` and return metrics.json's content."""
    t0 = time.perf_counter()
    device = resolve_device(device)
    model, ckpt = load_trained_model(checkpoint, device)
    recipe, pre = ckpt["recipe"], ckpt["preprocess"]
    task = ckpt["task"]
    if gradcam and task != "classify":
        raise InputError(f"--gradcam: Grad-CAM explains classifiers; {checkpoint} is a {task!r} model")
    dataset = open_dataset(
        data, task, format=format, label_column=label_column, classes=ckpt["classes"] if task == "classify" else None,
        period_deg=ckpt["period_deg"], label_crop_px=recipe["label_crop_px"], min_region_px=recipe["min_region_px"],
    )
    period = float(ckpt["period_deg"] or 30.0)
    images = ImageDataset(dataset.samples, ImageLoader(pre["image_size"]), Augmenter(None, pre["crop"], task, period),
                          mean=pre["mean"], std=pre["std"])
    output, target = predict(model, DataLoader(images, batch_size=batch_size), device)
    metrics = score(model, output, target, list(ckpt["classes"]))
    out.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in dataset.samples]
    if isinstance(model.head, AngleHead):
        predicted = model.head.to_degrees(output).numpy()
        errors = angle_error_deg(predicted, target.numpy(), period)
        write_csv(out / "results.csv", [
            {"image": n, "true_deg": float(t), "predicted_deg": float(p), "error_deg": float(e),
             "abs_error_deg": abs(float(e))}
            for n, t, p, e in zip(names, target.numpy(), predicted, errors, strict=True)
        ])
        edges, counts = error_histogram(errors, period)
        write_csv(out / "angle_errors.csv", [
            {"bin_lo_deg": float(lo), "bin_hi_deg": float(hi), "count": int(c)}
            for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)
        ])
        angle_error_png(
            out / "angle_error_hist.png", edges, counts, metrics["rms_deg"], metrics["random_guess_rms_deg"]
        )
        line = (f"RMS angle error {metrics['rms_deg']:.2f}° on {metrics['n']} images "
                f"(a random guess: {metrics['random_guess_rms_deg']:.2f}°)")
    else:
        classes = list(ckpt["classes"])
        probs = torch.softmax(output, dim=1).numpy()
        pred = probs.argmax(1)
        rows = []
        for n, t, p, pr in zip(names, target.long().numpy(), pred, probs, strict=True):
            row: dict[str, Any] = {"image": n, "true": classes[t], "predicted": classes[p], "correct": int(t == p),
                                   "confidence": float(pr[p])}
            row.update({f"p_{c}": float(pr[i]) for i, c in enumerate(classes)})
            rows.append(row)
        write_csv(out / "results.csv", rows)
        write_csv(out / "per_class.csv", metrics["per_class"])
        matrix = metrics["confusion_matrix"]
        write_csv(out / "confusion_matrix.csv", [
            {"true \\ predicted": c, **{p: matrix[i][j] for j, p in enumerate(classes)}} for i, c in enumerate(classes)
        ])
        import numpy as np

        confusion_matrix_png(out / "confusion_matrix.png", np.asarray(matrix), classes)
        line = f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} images (macro F1 {metrics['macro_f1']:.4f})"
        if gradcam:
            from flakehunter.training.gradcam import explain

            index = explain(model, images, names, target.long().numpy(), pred, probs.max(1), classes,
                            out / "gradcam", gradcam, device)
            write_csv(out / "gradcam" / "index.csv", index)
            line += f"; Grad-CAM of {len(index)} images in {out / 'gradcam'}"
    report = {"task": task, "checkpoint": str(checkpoint), "data": str(data), "format": dataset.format,
              "device": device, **metrics, "wall_s": time.perf_counter() - t0}
    write_json_atomic(out / "metrics.json", report)
    if echo is not None:
        echo(line)
    return report
