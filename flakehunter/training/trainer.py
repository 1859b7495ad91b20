"""Supervised training: classification, angle regression and segmentation, with checkpoints, resume and early stopping.

``Trainer(recipe).run()`` trains and writes into ``recipe.out``:

* ``last.pt``   after every epoch (atomically): weights, optimiser, schedule, AMP scaler, RNG state and
                history. ``Trainer(..., resume=True)`` continues from it, at the next epoch, and on the CPU
                reproduces an uninterrupted run exactly: data order and augmentation are keyed by
                (seed, epoch, draw), and torch's RNG (dropout) is restored.
* ``best.pt``   the weights of the best validation epoch (accuracy for classify, RMS angle error for
                angle, mean IoU for segment; the last epoch when there is no validation set). ``evaluate-model``
                reads either.
* ``model.pt``, ``model.json``   the best weights as a plain state dict (what a detector plugin loads with
                ``weights_only=True``, e.g. cnn-thickness ``weights:``) and what rebuilds and feeds the network.
* ``log.csv`` (and ``tensorboard/`` when installed), ``curves.png``, ``recipe.yaml``, ``summary.json``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from flakehunter.atomic import write_json_atomic, write_text_atomic
from flakehunter.compute import resolve_device
from flakehunter.errors import ConfigError, InputError
from flakehunter.models import ModelSpec, Network, build_network
from flakehunter.models.heads import AngleHead
from flakehunter.models.weights import load_backbone_file, load_backbone_state, load_torchvision_weights
from flakehunter.training.augment import Augmenter
from flakehunter.training.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    torch_threads,
)
from flakehunter.training.datasets import LabelledData, limit, open_dataset, split
from flakehunter.training.logs import TrainingLog
from flakehunter.training.metrics import angle_metrics, classification_metrics
from flakehunter.training.plots import training_curves_png
from flakehunter.training.recipe import TrainRecipe
from flakehunter.training.sampling import EpochSampler, balance_report
from flakehunter.training.schedule import build_optimizer, build_scheduler
from flakehunter.training.segment_data import SegmentData
from flakehunter.training.segment_train import SegmentDataset
from flakehunter.training.torchdata import ImageDataset, ImageLoader, channel_stats

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


def metric_name(task: str) -> str:
    """The validation metric that picks the best epoch: accuracy or mean_iou (higher is better), rms_deg (lower)."""
    return {"classify": "accuracy", "segment": "mean_iou"}.get(task, "rms_deg")


def is_better(task: str, value: float, best: float | None, min_delta: float = 0.0,
              loss: float | None = None, best_loss: float | None = None) -> bool:
    """Whether a validation result beats the best so far by more than ``min_delta``.

    A classification accuracy equal to the best one (common once it reaches 1.0) counts as better when
    the validation loss is lower by more than ``min_delta``, so early stopping and best.pt keep following
    the model that improves.
    """
    if best is None:
        return True
    if task not in ("classify", "segment"):
        return value < best - min_delta
    if value > best + min_delta:
        return True
    return value == best and loss is not None and best_loss is not None and loss < best_loss - min_delta


def angle_period(recipe: TrainRecipe) -> float | None:
    """The angle period: --period-deg, else the material's edge symmetry, else None (dataset or 30°)."""
    if recipe.task != "angle":
        return None
    if recipe.material is not None:
        from flakehunter.registry import get_registry

        own = float(get_registry().material(recipe.material).edge_symmetry_deg)
        if recipe.period_deg is not None and not math.isclose(recipe.period_deg, own):
            raise InputError(f"--period-deg {recipe.period_deg} contradicts {recipe.material}'s edge symmetry {own}°")
        return own
    return recipe.period_deg


def load_training_data(recipe: TrainRecipe) -> tuple[LabelledData, LabelledData | None]:
    """The training set and the validation set (given, split off, or none) for a recipe."""
    period = angle_period(recipe)
    options: dict[str, Any] = {
        "format": recipe.format, "label_column": recipe.label_column, "label_crop_px": recipe.label_crop_px,
        "min_region_px": recipe.min_region_px,
    }
    data = open_dataset(recipe.data, recipe.task, period_deg=period, **options)
    if recipe.val is not None:
        val: LabelledData | None = open_dataset(
            recipe.val, recipe.task, classes=data.classes or None, period_deg=data.period_deg, **options
        )
        train = data
    elif recipe.val_fraction > 0:
        train, val = split(data, recipe.val_fraction, recipe.seed)
    else:
        train, val = data, None
    if recipe.limit is not None:
        train = limit(train, recipe.limit, recipe.seed)
    return train, val


def predict(
    model: Network, loader: DataLoader[tuple[torch.Tensor, torch.Tensor]], device: str, use_amp: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw outputs and targets over a loader, in order, on the CPU."""
    model.eval()
    outputs, targets = [], []
    with torch.no_grad():
        for x, y in loader:
            with torch.autocast(device_type=device, dtype=torch.float16, enabled=use_amp):
                out = model(x.to(device, non_blocking=True))
            outputs.append(out.float().cpu())
            targets.append(y)
    return torch.cat(outputs), torch.cat(targets)


def task_loss(model: Network, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class indices, or MSE to the unit-circle point of the angle."""
    head = model.head
    if isinstance(head, AngleHead):
        return nn.functional.mse_loss(output.float(), head.target(target.float()))
    return nn.functional.cross_entropy(output.float(), target.long())


def score(model: Network, output: torch.Tensor, target: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Metrics of raw outputs: classification_metrics or angle_metrics."""
    head = model.head
    if isinstance(head, AngleHead):
        return angle_metrics(target.numpy(), head.to_degrees(output).numpy(), head.period_deg)
    return classification_metrics(target.long().numpy(), output.argmax(1).numpy(), classes)


class Trainer:
    """Trains one model as ``recipe`` says; ``resume=True`` continues ``recipe.out/last.pt``."""

    def __init__(self, recipe: TrainRecipe, *, resume: bool = False, echo: Callable[[str], None] | None = None) -> None:
        self.recipe = recipe
        self.resume = resume
        self.echo = echo or (lambda message: log.info("%s", message))
        self.out = Path(recipe.out)

    # ---- set-up ------------------------------------------------------------------------------------

    def _check_out(self) -> None:
        last = self.out / "last.pt"
        if not self.resume and last.exists():
            raise InputError(f"--out: {self.out} already holds a training run; continue it with --resume {self.out} "
                             "or choose another --out")
        if self.resume and not last.exists():
            raise InputError(f"--resume: {self.out} holds no last.pt to continue from")
        self.out.mkdir(parents=True, exist_ok=True)

    def _build(self) -> None:
        r = self.recipe
        if r.early_stopping is not None and r.val is None and r.val_fraction == 0:
            raise ConfigError(None, "early_stopping", "needs a validation set (--val or --val-fraction > 0)")
        self.device = resolve_device(r.device)
        self.use_amp = bool(r.amp and self.device == "cuda")
        torch.manual_seed(r.seed)
        self.loss_weights: torch.Tensor | None = None
        if r.task == "segment":
            self._build_segment()
            return
        train_data, val_data = load_training_data(r)
        self.train_data: LabelledData | SegmentData = train_data
        self.val_data: LabelledData | SegmentData | None = val_data
        classes = train_data.classes
        self.spec = ModelSpec(
            name=r.model, task=r.task, num_classes=len(classes), period_deg=train_data.period_deg or 0.0,
            width=r.width, dropout=r.dropout,
        )
        self.model = build_network(self.spec)
        self.loader = ImageLoader(r.image_size)
        preprocess: dict[str, Any] = {"image_size": r.image_size, "crop": r.crop}
        if r.pretrained_weights is not None:
            load_torchvision_weights(self.model.backbone, r.pretrained_weights, r.model)
        if r.backbone_weights is not None:
            data = load_backbone_file(r.backbone_weights)
            load_backbone_state(self.model.backbone, data, r.backbone_weights, r.model, r.width)
            # Fine-tuning sees images standardised as in pretraining.
            preprocess.update(mean=list(data["preprocess"]["mean"]), std=list(data["preprocess"]["std"]))
        if "mean" not in preprocess:
            preprocess.update(channel_stats(train_data.samples, self.loader, r.crop, seed=r.seed))
        self.preprocess = preprocess
        if r.freeze_backbone:
            self.model.freeze_backbone()
        if r.init_weights is not None:
            load_init_weights(self.model, r.init_weights)
        self.model.to(self.device)

        period = train_data.period_deg or 30.0
        labels = [int(s.target) for s in train_data.samples] if r.task == "classify" else None
        self.sampler = EpochSampler(labels, len(train_data.samples), r.balance, r.seed)
        self.train_set: ImageDataset | SegmentDataset = ImageDataset(
            train_data.samples, self.loader, Augmenter(r.augment, r.crop, r.task, period),
            mean=preprocess["mean"], std=preprocess["std"], seed=r.seed, train=True,
        )
        self.train_loader = DataLoader(
            self.train_set, batch_size=r.batch_size, sampler=self.sampler, num_workers=r.num_workers,
            drop_last=len(self.sampler) > r.batch_size, pin_memory=self.device == "cuda",
        )
        self.val_loader = None
        if val_data is not None:
            val_set = ImageDataset(
                val_data.samples, self.loader, Augmenter(None, r.crop, r.task, period),
                mean=preprocess["mean"], std=preprocess["std"],
            )
            self.val_loader = DataLoader(val_set, batch_size=max(r.batch_size, 64), num_workers=r.num_workers)
        self.balance = balance_report(labels, classes, r.balance) if labels is not None else None
        self.optimizer = build_optimizer(self.model.parameters(), r)
        self.scheduler = build_scheduler(self.optimizer, r, len(self.train_loader))
        self.scaler = torch.amp.GradScaler(self.device, enabled=self.use_amp)

    def _build_segment(self) -> None:
        from flakehunter.training.segment_train import build_segment

        r = self.recipe
        built = build_segment(r, self.device)
        self.train_data, self.val_data = built.train_data, built.val_data
        self.spec, self.model, self.preprocess = built.spec, built.model, built.preprocess
        if r.init_weights is not None:
            load_init_weights(self.model, r.init_weights)
        self.model.to(self.device)
        self.loss_weights = built.weights.to(self.device)
        self.class_pixels = built.class_pixels
        self.sampler = EpochSampler(None, len(built.train_set), "none", r.seed)
        self.train_set = built.train_set
        self.train_loader = DataLoader(
            self.train_set, batch_size=r.batch_size, sampler=self.sampler, num_workers=r.num_workers,
            drop_last=len(self.sampler) > r.batch_size, pin_memory=self.device == "cuda",
        )
        self.val_loader = None if built.val_set is None else DataLoader(
            built.val_set, batch_size=max(r.batch_size, 16), num_workers=r.num_workers)
        self.balance = None
        self.optimizer = build_optimizer(self.model.parameters(), r)
        self.scheduler = build_scheduler(self.optimizer, r, len(self.train_loader))
        self.scaler = torch.amp.GradScaler(self.device, enabled=self.use_amp)

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.recipe.task == "segment":
            from flakehunter.training.segment_train import segment_loss

            return segment_loss(output, target, self.loss_weights)
        return task_loss(self.model, output, target)

    def _checkpoint(self, epoch: int, history: list[dict[str, Any]], best: dict[str, Any], bad_epochs: int,
                    stopped_early: bool, full: bool = True) -> dict[str, Any]:
        r = self.recipe
        data: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": "train",
            "task": r.task,
            "model": self.spec.to_dict(),
            "classes": list(self.train_data.classes),
            "period_deg": self.train_data.period_deg,
            "preprocess": self.preprocess,
            "class_weights": None if self.loss_weights is None else self.loss_weights.cpu().tolist(),
            "recipe": r.model_dump(mode="json"),
            "data": {"train": len(self.train_data.samples),
                     "val": len(self.val_data.samples) if self.val_data is not None else 0},
            "epoch": epoch,
            "best": best,
            "bad_epochs": bad_epochs,
            "stopped_early": stopped_early,
            "history": history,
            "state_dict": self.model.state_dict(),
        }
        if full:
            data.update(
                optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(), rng=rng_state(),
            )
        return data

    # ---- the loop ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train (or continue) to the last epoch or an early stop; returns the summary."""
        with torch_threads(self.recipe.threads):
            return self._run()

    def _run(self) -> dict[str, Any]:
        r = self.recipe
        self._check_out()
        self._build()
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"metric": metric_name(r.task) if self.val_loader else "last_epoch",
                                "value": None, "epoch": None, "val_loss": None}
        bad_epochs, start, stopped_early = 0, 0, False
        if self.resume:
            ckpt = load_checkpoint(self.out / "last.pt")
            self._check_same_run(ckpt)
            self.model.load_state_dict(ckpt["state_dict"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            restore_rng(ckpt["rng"])
            history, best = list(ckpt["history"]), dict(ckpt["best"])
            bad_epochs, start, stopped_early = int(ckpt["bad_epochs"]), int(ckpt["epoch"]), bool(ckpt["stopped_early"])
            self.echo(f"resuming {self.out} after epoch {start}/{r.epochs}")
        else:
            write_text_atomic(self.out / "recipe.yaml", yaml.safe_dump(r.model_dump(mode="json"), sort_keys=False))
            self._report_data()
        logger = TrainingLog(self.out, history, r.tensorboard)
        t_start = time.perf_counter()
        try:
            for epoch in range(start, r.epochs if not stopped_early else start):
                row = self._epoch(epoch)
                value = row.get(f"val_{metric_name(r.task)}") if self.val_loader else None
                improved = value is None or is_better(
                    r.task, value, best["value"], r.min_delta, row.get("val_loss"), best.get("val_loss")
                )
                if improved:
                    best.update(value=value, epoch=epoch + 1, val_loss=row.get("val_loss"))
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                stopped_early = r.early_stopping is not None and bad_epochs >= r.early_stopping
                row["best_epoch"] = best["epoch"]
                # History (and the log) include this epoch only once its checkpoint is safe on disk.
                logged = [*history, row]
                if improved:
                    save_checkpoint(self.out / "best.pt", self._checkpoint(epoch + 1, logged, best, bad_epochs,
                                                                          stopped_early, full=False))
                save_checkpoint(self.out / "last.pt", self._checkpoint(epoch + 1, logged, best, bad_epochs,
                                                                      stopped_early))
                logger.epoch(row)
                self.echo(_epoch_line(row, r.epochs, metric_name(r.task)))
                if stopped_early:
                    self.echo(f"early stop: no better validation {best['metric']} for {bad_epochs} epochs")
                    break
        finally:
            logger.close()
        summary = self._summary(history, best, stopped_early, time.perf_counter() - t_start)
        training_curves_png(self.out / "curves.png", history, metric_name(r.task))
        export_weights(self.out / "best.pt", self.out / "model.pt", summary)
        write_json_atomic(self.out / "summary.json", summary)
        return summary

    def _epoch(self, epoch: int) -> dict[str, Any]:
        r = self.recipe
        t0 = time.perf_counter()
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        total, count = 0.0, 0
        for x, y in self.train_loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with torch.autocast(device_type=self.device, dtype=torch.float16, enabled=self.use_amp):
                output = self.model(x)
            loss = self._loss(output, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if r.clip_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(params, r.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(count, 1),
                               "lr": float(self.optimizer.param_groups[0]["lr"])}
        if self.val_loader is not None and r.task == "segment":
            from flakehunter.training.segment_train import validate_segment

            row["val_loss"], metrics = validate_segment(self.model, self.val_loader, self.device, self.loss_weights,
                                                        self.train_data.classes, self.use_amp)
            row["val_mean_iou"] = metrics["mean_iou"]
            row["val_thin_iou"] = metrics["thin_iou"]
        elif self.val_loader is not None:
            output, target = predict(self.model, self.val_loader, self.device, self.use_amp)
            row["val_loss"] = float(task_loss(self.model, output, target))
            metrics = score(self.model, output, target, self.train_data.classes)
            row[f"val_{metric_name(r.task)}"] = metrics[metric_name(r.task)]
        row["time_s"] = time.perf_counter() - t0
        return row

    # ---- bookkeeping -------------------------------------------------------------------------------

    def _check_same_run(self, ckpt: dict[str, Any]) -> None:
        started = TrainRecipe.model_validate(ckpt["recipe"])
        if started.epochs != self.recipe.epochs and started.schedule == "onecycle":
            raise InputError(
                f"--epochs: {self.out} was started for {started.epochs} epochs on the onecycle schedule, whose "
                "shape depends on the length; resume it as it was, or start a new run"
            )
        same_data = ckpt["data"]["train"] == len(self.train_data.samples)
        if list(ckpt["classes"]) != list(self.train_data.classes) or not same_data:
            raise InputError(
                f"--resume: the data under {self.recipe.data} changed since {self.out} started "
                f"({ckpt['data']['train']} training images, classes {ckpt['classes']}); start a new run instead"
            )

    def _report_data(self) -> None:
        t, v = self.train_data, self.val_data
        what = f"{len(t.samples)} training images ({t.format})"
        if v is not None:
            what += f", {len(v.samples)} validation"
        if t.task == "classify":
            what += "; classes " + ", ".join(f"{k} {n}" for k, n in t.class_counts().items())
        elif t.task == "segment":
            what += "; pixels per class " + ", ".join(f"{k} {n}" for k, n in zip(t.classes, self.class_pixels,
                                                                                   strict=True))
        else:
            what += f"; angle period {t.period_deg}°"
        self.echo(what)
        if self.balance is not None and self.balance["mode"] != "none":
            draws = ", ".join(f"{k} {v:.0f}" for k, v in self.balance["expected_draws_per_epoch"].items())
            self.echo(f"class balance ({self.balance['mode']}): expected draws per epoch {draws} "
                      f"(imbalance {self.balance['imbalance_ratio']:.1f}:1 in the data)")
        self.echo(f"model {self.spec.name} on {self.device}" + (" with mixed precision" if self.use_amp else ""))

    def _summary(self, history: list[dict[str, Any]], best: dict[str, Any], stopped_early: bool,
                 wall_s: float) -> dict[str, Any]:
        r = self.recipe
        return {
            "task": r.task,
            "model": self.spec.to_dict(),
            "device": self.device,
            "amp": self.use_amp,
            "epochs_run": len(history),
            "epochs": r.epochs,
            "stopped_early": stopped_early,
            "best": best,
            "final": history[-1] if history else None,
            "train_images": len(self.train_data.samples),
            "val_images": len(self.val_data.samples) if self.val_data is not None else 0,
            "classes": self.train_data.classes,
            "class_counts": self.train_data.class_counts() if r.task == "classify" else None,
            "period_deg": self.train_data.period_deg,
            "balance": self.balance,
            "wall_s_this_session": wall_s,
            "checkpoints": {"best": str(self.out / "best.pt"), "last": str(self.out / "last.pt")},
        }


def _epoch_line(row: dict[str, Any], epochs: int, metric: str) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    if "val_loss" in row:
        parts.append(f"val_loss {row['val_loss']:.4f}")
        value = row[f"val_{metric}"]
        parts.append(f"val_{metric} {value:.4f}" if metric != "rms_deg" else f"val_{metric} {value:.2f}")
    parts += [f"lr {row['lr']:.2e}", f"{row['time_s']:.1f} s"]
    return "  ".join(parts)


def recipe_from_checkpoint(path: Path) -> TrainRecipe:
    """The recipe a run was started with (``--resume`` continues with it)."""
    ckpt = load_checkpoint(path)
    return TrainRecipe.model_validate(ckpt["recipe"])


def load_init_weights(model: nn.Module, path: Path) -> None:
    """Start ``model`` from ``path``: a plain state dict (model.pt, a detector's shipped weights) or a train
    checkpoint; a file of another architecture is an InputError naming the mismatching keys."""
    from flakehunter.models.weights import _load_strict, read_weights_file

    data = read_weights_file(path, "--init-weights")
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in data.items()):
        raise InputError(f"--init-weights: {path} is neither a state dict of tensors nor a train checkpoint")
    _load_strict(model, data, f"--init-weights: {path} does not fit this model")


def export_weights(checkpoint: Path, out: Path, summary: dict[str, Any]) -> None:
    """Write the weights of ``checkpoint`` as a plain state dict (``out``) and ``out``.json: the model spec,
    classes or period, preprocessing and the validation result, which is all a detector needs besides."""
    from flakehunter.training.checkpoint import save_checkpoint

    if not checkpoint.is_file():
        return
    ckpt = load_checkpoint(checkpoint)
    save_checkpoint(out, dict(ckpt["state_dict"]))
    card = {
        "format": "flakehunter.model", "version": 1, "weights": out.name, "task": ckpt["task"],
        "model": ckpt["model"], "classes": ckpt["classes"], "period_deg": ckpt["period_deg"],
        "preprocess": ckpt["preprocess"], "epoch": ckpt["epoch"], "best": ckpt["best"],
        "final": summary.get("final"),
    }
    write_json_atomic(out.with_suffix(".json"), card)
