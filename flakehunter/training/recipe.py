"""Training recipes: YAML files, ``@file`` argument files and command-line overrides.

Precedence, lowest first: the recipe's defaults, the YAML recipe (``--recipe FILE``), then options
given on the command line (``--epochs 5``, ``--set augment.noise=0.02``). Relative paths in a YAML
recipe are relative to the recipe file's folder; on the command line and in argument files they are
relative to the working directory. Unknown keys are errors everywhere.

An argument file holds command-line arguments, shell-quoted, any number per line, ``#`` comments::

    # args/thickness.txt
    --task classify --data data/thickness --epochs 30
    --model small-cnn --balance weighted

and is used as ``flakehunter train @args/thickness.txt --epochs 5`` (later arguments win).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flakehunter.errors import ConfigError, InputError
from flakehunter.training.augment import AugmentSpec

Schedule = Literal["onecycle", "step", "constant"]
_MAX_ARGFILE_DEPTH = 10


class OptimisationSpec(BaseModel):
    """What supervised training and SimCLR pretraining share: model, optimiser, schedule, device."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="output folder: checkpoints, logs, plots")
    model: str = Field("small-cnn", description="small-cnn, resnet18 or resnet50; unet for --task segment")
    width: int = Field(16, ge=1, le=256, description="small-cnn base width (channels of the first conv)")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW decoupled weight decay")
    schedule: Schedule = Field("onecycle", description="onecycle (1cycle), step (step decay) or constant")
    warmup_epochs: float | None = Field(
        None, ge=0, description="linear warm-up; default: 25 % of training for onecycle, none otherwise"
    )
    step_epochs: int = Field(10, ge=1, description="step schedule: multiply the lr by step_gamma every N epochs")
    step_gamma: float = Field(0.1, gt=0, le=1)
    clip_grad_norm: float | None = Field(5.0, gt=0, description="clip the gradient norm; null to disable")
    amp: bool = Field(True, description="mixed precision (float16 autocast) on CUDA; never on the CPU")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    image_size: int | None = Field(None, ge=8, description="resize every image to N x N first")
    crop: int | None = Field(None, ge=8, description="random N x N crops in training, centre crop otherwise")
    num_workers: int = Field(0, ge=0, description="data-loader worker processes")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (default: torch's, one per core); 1 is faster on a busy CPU"
    )
    tensorboard: bool | None = Field(None, description="TensorBoard logs; default: when tensorboard is installed")

    @model_validator(mode="after")
    def _crop_fits(self) -> OptimisationSpec:
        if self.crop is not None and self.image_size is not None and self.crop > self.image_size:
            raise ValueError(f"crop ({self.crop}) must not exceed image_size ({self.image_size})")
        if self.warmup_epochs is not None and self.warmup_epochs >= self.epochs and self.schedule == "onecycle":
            raise ValueError("warmup_epochs must be shorter than epochs for the onecycle schedule")
        return self


class TrainRecipe(OptimisationSpec):
    """Everything ``flakehunter train`` needs. See docs/training.md for each field."""

    task: Literal["classify", "angle", "segment"]
    data: Path
    val: Path | None = Field(None, description="validation dataset; default: hold out val_fraction of data")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="held out when no val is given; 0 = no validation")
    format: Literal[
        "auto", "imagefolder", "csv", "axis", "label-images", "simulator", "coco", "yolo", "instance-mask"
    ] = "auto"
    label_column: str | None = None
    limit: int | None = Field(None, ge=1, description="train on only N labelled images (stratified, seeded)")
    dropout: float = Field(0.0, ge=0, lt=1)
    pretrained_weights: Path | None = Field(None, description="local torchvision weights file (resnet18/50)")
    backbone_weights: Path | None = Field(None, description="backbone.pt written by flakehunter pretrain")
    freeze_backbone: bool = False
    early_stopping: int | None = Field(None, ge=1, description="stop after N epochs without a better val metric")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as better")
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    balance: Literal["none", "weighted", "oversample"] = "none"
    period_deg: float | None = Field(None, gt=0, le=180, description="angle period; default: material's, else 30")
    material: str | None = Field(None, description="angle task: take the period from this material")
    label_crop_px: int = Field(64, ge=8, description="label images: crop size around each region")
    min_region_px: int = Field(20, ge=1, description="label images: smallest region that becomes a sample")
    init_weights: Path | None = Field(
        None, description="start from these weights: a plain state dict (a detector's shipped model.pt) or a train "
                          "checkpoint; fine-tuning on a few labelled images starts here")
    pixel_size_um: float | None = Field(
        None, gt=0, description="segment: camera pixel size of images whose metadata has none (default 1 µm)")
    draws_per_image: int = Field(8, ge=1, description="segment: training windows drawn per image and epoch")
    class_layers: str | None = Field(
        None, description="segment, COCO/YOLO/instance masks: class id or name -> layer count, e.g. '0=1,bulk=none'")

    @model_validator(mode="after")
    def _weights_exclusive(self) -> TrainRecipe:
        if self.task == "segment":
            if "model" not in self.model_fields_set:
                self.model = "unet"
            if self.model != "unet":
                raise ValueError(f"--task segment trains the unet model, not {self.model!r}")
            if self.pretrained_weights is not None or self.backbone_weights is not None or self.freeze_backbone:
                raise ValueError("--task segment: start from --init-weights, not pretrained or backbone weights")
            if self.balance != "none":
                raise ValueError("--task segment weighs classes per pixel itself; leave balance at none")
        elif self.model == "unet":
            raise ValueError("the unet model is for --task segment")
        if self.pretrained_weights is not None and self.backbone_weights is not None:
            raise ValueError("give pretrained_weights or backbone_weights, not both")
        if self.freeze_backbone and self.pretrained_weights is None and self.backbone_weights is None:
            raise ValueError("freeze_backbone needs pretrained_weights or backbone_weights")
        return self


class PretrainRecipe(OptimisationSpec):
    """Everything ``flakehunter pretrain`` (SimCLR) needs."""

    data: Path = Field(description="folder of unlabelled images (searched recursively) or a CSV of paths")
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(128, ge=4)
    temperature: float = Field(0.5, gt=0, le=10, description="NT-Xent temperature")
    projection_dim: int = Field(64, ge=2)
    projection_hidden: int = Field(256, ge=2)
    min_scale: float = Field(0.5, gt=0, le=1, description="random resized crop: smallest area fraction")
    exposure: float = Field(0.2, ge=0, lt=1)
    white_balance: float = Field(0.05, ge=0, lt=0.5)
    noise: float = Field(0.02, ge=0, le=0.5)
    blur_sigma_px: float = Field(1.0, ge=0, le=5)
    limit: int | None = Field(None, ge=2, description="use only N images (seeded)")


def load_recipe_file(path: Path) -> dict[str, Any]:
    """Read a YAML recipe into a dict; relative paths become relative to the recipe's folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the recipe: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, None, "a recipe must be a mapping of field: value")
    for key in ("data", "val", "out", "pretrained_weights", "backbone_weights", "init_weights"):
        value = data.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[key] = str(path.parent / value)
    return data


def parse_set_options(values: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` (value parsed as YAML; dotted keys reach nested fields) -> a nested dict."""
    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise InputError(f"--set {key}: cannot parse {text!r}") from None
        target = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise InputError(f"--set: {key} conflicts with another --set")
        target[parts[-1]] = value
    return out


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update: ``changes`` wins; nested mappings merge key by key."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build_recipe(model: type[BaseModel], recipe_file: Path | None, overrides: dict[str, Any]) -> Any:
    """Validate recipe file + overrides into ``model``; a ConfigError names the source and the field.

    Every key in ``overrides`` wins, a None included (``--set early_stopping=null`` turns it off); leave
    out what was not given.
    """
    data = load_recipe_file(recipe_file) if recipe_file is not None else {}
    merged = merge(data, overrides)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or None
        source = recipe_file if recipe_file is not None and where in _keys(data) else "command line"
        message = err["msg"]
        if err["type"] == "missing":
            message = "required (give it on the command line or in the recipe)"
        elif err["type"] == "extra_forbidden":
            message = "unknown field"
        raise ConfigError(source, where, message) from None


def _keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        name = f"{prefix}{key}"
        keys.add(name)
        if isinstance(value, dict):
            keys |= _keys(value, name + ".")
    return keys


def expand_argument_files(args: list[str], _depth: int = 0) -> list[str]:
    """Replace every ``@FILE`` argument by the arguments written in FILE (recursively, shell-quoted)."""
    out: list[str] = []
    for arg in args:
        if not arg.startswith("@") or arg == "@":
            out.append(arg)
            continue
        if _depth >= _MAX_ARGFILE_DEPTH:
            raise InputError(f"{arg}: argument files nest more than {_MAX_ARGFILE_DEPTH} deep")
        path = Path(arg[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{path}: cannot read the argument file ({exc.strerror or exc})") from None
        try:
            words = shlex.split(text, comments=True)
        except ValueError as exc:
            raise InputError(f"{path}: cannot split the arguments ({exc})") from None
        out.extend(expand_argument_files(words, _depth + 1))
    return out
