"""SimCLR self-supervised pretraining (Chen et al. 2020) on unlabelled micrograph crops.

Each image gives two random *views*; a backbone and a small projection head map them to vectors, and the
NT-Xent loss pulls the two views of one image together and pushes the other 2N − 2 views of the batch
away. The backbone then fine-tunes on few labels (``flakehunter train --backbone-weights backbone.pt``).

Views suited to micrographs: a random resized crop (area ≥ ``min_scale``, since the pixel size is fixed
and flake size means something), one of the eight dihedral symmetries, exposure and white-balance gains,
a slight defocus blur, and sensor noise. Unlike SimCLR's ImageNet recipe there is no hue, saturation or
greyscale jitter: a flake's colour against the substrate is its thickness.

Writes into ``out``: ``last.pt`` every epoch (resumable), then ``simclr.pt`` (backbone + projection head)
and ``backbone.pt`` (backbone only, with its preprocessing), ``log.csv``, ``summary.json``.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from flakehunter.atomic import write_json_atomic, write_text_atomic
from flakehunter.compute import resolve_device
from flakehunter.errors import InputError
from flakehunter.models import build_backbone
from flakehunter.models.weights import save_backbone_file
from flakehunter.tiles import iter_image_files
from flakehunter.training.angles import Dihedral
from flakehunter.training.augment import AugmentSpec, photometric
from flakehunter.training.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    torch_threads,
)
from flakehunter.training.datasets import Sample
from flakehunter.training.logs import TrainingLog
from flakehunter.training.recipe import PretrainRecipe
from flakehunter.training.sampling import EpochSampler
from flakehunter.training.schedule import build_optimizer, build_scheduler
from flakehunter.training.torchdata import ImageLoader, channel_stats, to_tensor


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Normalised temperature-scaled cross-entropy over a batch of N positive pairs (2N views).

    For view i the positive is its partner; the 2N − 2 other views are negatives; its own similarity is
    excluded. Cosine similarities are divided by ``temperature``.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def positive_retrieval(z1: Tensor, z2: Tensor) -> float:
    """Fraction of views whose most similar other view is their partner (a training monitor)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return float((sim.argmax(1) == partner).float().mean())


class ProjectionHead(nn.Module):
    """SimCLR's MLP g(·): Linear, BatchNorm, ReLU, Linear."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: Tensor) -> Tensor:
        projection: Tensor = self.net(x)
        return projection


class SimCLRModel(nn.Module):
    def __init__(self, backbone: nn.Module, features: int, hidden: int, projection_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = ProjectionHead(features, hidden, projection_dim)

    def forward(self, x: Tensor) -> Tensor:
        projection: Tensor = self.projector(self.backbone(x))
        return projection


def random_resized_crop(image: np.ndarray, out_px: int, min_scale: float, rng: np.random.Generator) -> np.ndarray:
    """A window of area fraction U(min_scale, 1) and aspect ratio log-uniform in [3/4, 4/3], resized to out_px."""
    h, w = image.shape[:2]
    area = h * w * rng.uniform(min_scale, 1.0)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    ch = min(h, max(2, round(math.sqrt(area / aspect))))
    cw = min(w, max(2, round(math.sqrt(area * aspect))))
    r = int(rng.integers(h - ch + 1))
    c = int(rng.integers(w - cw + 1))
    window = image[r : r + ch, c : c + cw]
    return cv2.resize(window, (out_px, out_px), interpolation=cv2.INTER_LINEAR)


class TwoViews(Dataset[tuple[Tensor, Tensor]]):
    """Unlabelled images -> two independently augmented views, keyed by (seed, epoch, draw)."""

    def __init__(self, samples: list[Sample], loader: ImageLoader, recipe: PretrainRecipe, view_px: int,
                 mean: list[float], std: list[float]) -> None:
        self.samples = samples
        self.loader = loader
        self.view_px = view_px
        self.min_scale = recipe.min_scale
        self.photo = AugmentSpec(exposure=recipe.exposure, white_balance=recipe.white_balance, noise=recipe.noise,
                                 blur_sigma_px=recipe.blur_sigma_px)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.seed = recipe.seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def view(self, image: np.ndarray, rng: np.random.Generator) -> Tensor:
        v = random_resized_crop(image, self.view_px, self.min_scale, rng)
        v = Dihedral(int(rng.integers(8))).image(v)
        return to_tensor(photometric(v, self.photo, rng), self.mean, self.std)

    def __getitem__(self, key: int) -> tuple[Tensor, Tensor]:
        image = self.loader(self.samples[key % len(self.samples)])
        rng = np.random.default_rng([self.seed, 6, self.epoch, key])
        return self.view(image, rng), self.view(image, rng)


def unlabelled_images(path: Path) -> list[Path]:
    """Images to pretrain on: a folder (recursively; a label-image dataset's labels/ is skipped) or a CSV
    whose ``path`` (or first) column lists them relative to the CSV."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh, skipinitialspace=True))
        if not rows:
            raise InputError(f"{path}: empty CSV")
        header = [c.strip() for c in rows[0]]
        col = header.index("path") if "path" in header else 0
        return [path.parent / r[col].strip() for r in rows[1:] if r and r[col].strip()]
    if not path.exists():
        raise InputError(f"--data: {path}: no such folder or file")
    if path.is_dir() and (path / "images").is_dir() and (path / "labels").is_dir():
        path = path / "images"
    return iter_image_files([path])


def pretrain(
    recipe: PretrainRecipe, *, resume: bool = False, echo: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run (or continue) SimCLR pretraining; returns the summary also written to summary.json."""
    with torch_threads(recipe.threads):
        return _pretrain(recipe, resume, echo)


def _pretrain(recipe: PretrainRecipe, resume: bool, echo: Callable[[str], None] | None) -> dict[str, Any]:
    say = echo or (lambda message: None)
    out = Path(recipe.out)
    last = out / "last.pt"
    if not resume and last.exists():
        raise InputError(f"--out: {out} already holds a pretraining run; continue it with --resume {out}")
    if resume and not last.exists():
        raise InputError(f"--resume: {out} holds no last.pt to continue from")
    out.mkdir(parents=True, exist_ok=True)

    device = resolve_device(recipe.device)
    use_amp = bool(recipe.amp and device == "cuda")
    torch.manual_seed(recipe.seed)
    paths = unlabelled_images(recipe.data)
    if recipe.limit is not None and recipe.limit < len(paths):
        keep = np.sort(np.random.default_rng([recipe.seed, 7]).choice(len(paths), recipe.limit, replace=False))
        paths = [paths[i] for i in keep]
    if len(paths) < 2:
        raise InputError(f"--data: {recipe.data} holds {len(paths)} images; SimCLR needs at least 2")
    samples = [Sample(p, "", 0.0, str(p)) for p in paths]
    loader = ImageLoader(recipe.image_size)
    view_px = recipe.crop or recipe.image_size or loader(samples[0]).shape[0]
    stats = channel_stats(samples, loader, None, seed=recipe.seed)
    backbone, features = build_backbone(recipe.model, recipe.width)
    model = SimCLRModel(backbone, features, recipe.projection_hidden, recipe.projection_dim).to(device)
    views = TwoViews(samples, loader, recipe, view_px, stats["mean"], stats["std"])
    sampler = EpochSampler(None, len(samples), "none", recipe.seed)
    batch = min(recipe.batch_size, len(samples))
    data = DataLoader(views, batch_size=batch, sampler=sampler, num_workers=recipe.num_workers, drop_last=True,
                      pin_memory=device == "cuda")
    optimizer = build_optimizer(model.parameters(), recipe)
    scheduler = build_scheduler(optimizer, recipe, len(data))
    scaler = torch.amp.GradScaler(device, enabled=use_amp)
    preprocess = {"image_size": recipe.image_size, "crop": view_px, **stats}

    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        ckpt = load_checkpoint(last)
        if ckpt.get("kind") != "simclr" or ckpt["data"]["images"] != len(samples):
            raise InputError(f"--resume: {last} is not a SimCLR run on these {len(samples)} images")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"])
        history, start = list(ckpt["history"]), int(ckpt["epoch"])
        say(f"resuming {out} after epoch {start}/{recipe.epochs}")
    else:
        write_text_atomic(out / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        say(f"SimCLR on {len(samples)} unlabelled images, views of {view_px} px, model {recipe.model} on {device}")

    def checkpoint(epoch: int, rows: list[dict[str, Any]], full: bool) -> dict[str, Any]:
        data_: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT, "version": 1, "kind": "simclr", "model": recipe.model,
            "width": recipe.width, "preprocess": preprocess, "recipe": recipe.model_dump(mode="json"),
            "data": {"images": len(samples)}, "epoch": epoch, "history": rows, "state_dict": model.state_dict(),
        }
        if full:
            data_.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         scaler=scaler.state_dict(), rng=rng_state())
        return data_

    logger = TrainingLog(out, history, recipe.tensorboard)
    t_start = time.perf_counter()
    try:
        for epoch in range(start, recipe.epochs):
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            views.set_epoch(epoch)
            model.train()
            total = retrieval = 0.0
            steps = 0
            for v1, v2 in data:
                v1, v2 = v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)
                with torch.autocast(device_type=device, dtype=torch.float16, enabled=use_amp):
                    z1, z2 = model(v1), model(v2)
                loss = nt_xent(z1, z2, recipe.temperature)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if recipe.clip_grad_norm is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                total += float(loss.detach())
                retrieval += positive_retrieval(z1.detach(), z2.detach())
                steps += 1
            row = {"epoch": epoch + 1, "train_loss": total / max(steps, 1),
                   "positive_retrieval": retrieval / max(steps, 1),
                   "lr": float(optimizer.param_groups[0]["lr"]), "time_s": time.perf_counter() - t0}
            save_checkpoint(last, checkpoint(epoch + 1, [*history, row], full=True))
            logger.epoch(row)
            say(f"epoch {row['epoch']}/{recipe.epochs}  nt_xent {row['train_loss']:.4f}  "
                f"positive_retrieval {row['positive_retrieval']:.3f}  lr {row['lr']:.2e}  {row['time_s']:.1f} s")
    finally:
        logger.close()
    save_checkpoint(out / "simclr.pt", checkpoint(len(history), history, full=False))
    save_backbone_file(out / "backbone.pt", recipe.model, recipe.width, model.backbone, preprocess,
                       {"method": "simclr", "epochs": len(history), "images": len(samples), "data": str(recipe.data)})
    summary = {"images": len(samples), "view_px": view_px, "device": device, "amp": use_amp,
               "epochs_run": len(history), "final": history[-1] if history else None,
               "wall_s_this_session": time.perf_counter() - t_start,
               "files": {"full": str(out / "simclr.pt"), "backbone": str(out / "backbone.pt")}}
    write_json_atomic(out / "summary.json", summary)
    return summary
