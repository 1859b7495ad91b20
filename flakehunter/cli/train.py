"""``flakehunter train``, ``pretrain`` and ``evaluate-model``: the model builders' commands.

Options come from a YAML recipe (``--recipe``), ``@file`` argument files and the command line, later
ones winning; ``--set key=value`` reaches any recipe field (``--set augment.noise=0.02``). See
docs/training.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from flakehunter.cli._common import error, reports_errors
from flakehunter.errors import InputError


class ArgumentFileCommand(TyperCommand):
    """A command whose ``@FILE`` arguments are replaced by the arguments written in FILE."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from flakehunter.training.recipe import expand_argument_files

        try:
            args = expand_argument_files(list(args))
        except InputError as exc:
            error(str(exc))
            raise typer.Exit(2) from None
        return super().parse_args(ctx, args)


def register(app: typer.Typer) -> None:
    app.command("train", cls=ArgumentFileCommand)(train)
    app.command("pretrain", cls=ArgumentFileCommand)(pretrain)
    app.command("evaluate-model", cls=ArgumentFileCommand)(evaluate_model)


# Options that may change when a run is resumed; everything else comes from the run's own recipe.
_RESUMABLE = {"epochs", "device", "num_workers", "threads", "tensorboard"}

RecipeOpt = Annotated[Path | None, typer.Option("--recipe", help="YAML recipe; command-line options override it.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override any recipe field: KEY=VALUE (YAML value, dotted keys).")
]

# Options train and pretrain share.
ModelOpt = Annotated[str | None, typer.Option("--model", help="small-cnn, resnet18 or resnet50.")]
WidthOpt = Annotated[int | None, typer.Option("--width", help="small-cnn base width.")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Number of epochs.")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Peak learning rate (AdamW).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed of everything random.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")]
ImageSizeOpt = Annotated[int | None, typer.Option("--image-size", help="Resize images to N x N.")]
NumWorkersOpt = Annotated[int | None, typer.Option("--num-workers", help="Data-loader processes.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU threads for torch (default: all).")]
TensorboardOpt = Annotated[
    bool | None, typer.Option("--tensorboard/--no-tensorboard", help="TensorBoard logs (default: if installed).")
]
ResumeOpt = Annotated[Path | None, typer.Option("--resume", help="Continue the run in this output folder.")]


def _collect(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None and k not in ("recipe", "set_", "resume")}


@reports_errors
def train(
    recipe: RecipeOpt = None,
    task: Annotated[str | None, typer.Option("--task", help="classify or angle.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Training dataset (any supported format).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder for checkpoints and logs.")] = None,
    val: Annotated[
        Path | None, typer.Option("--val", help="Validation dataset (default: hold out part of --data).")
    ] = None,
    val_fraction: Annotated[
        float | None, typer.Option("--val-fraction", help="Held out without --val; 0 = none.")
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="auto, imagefolder, csv, axis, label-images or simulator.")
    ] = None,
    label_column: Annotated[str | None, typer.Option("--label-column", help="CSV column holding the label.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only N training labels (stratified).")] = None,
    model: ModelOpt = None,
    width: WidthOpt = None,
    epochs: EpochsOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step.")] = None,
    lr: LrOpt = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", help="AdamW weight decay.")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="onecycle, step or constant.")] = None,
    warmup_epochs: Annotated[float | None, typer.Option("--warmup-epochs", help="Linear warm-up length.")] = None,
    step_epochs: Annotated[int | None, typer.Option("--step-epochs", help="step: decay every N epochs.")] = None,
    step_gamma: Annotated[float | None, typer.Option("--step-gamma", help="step: decay factor.")] = None,
    clip_grad_norm: Annotated[float | None, typer.Option("--clip-grad-norm", help="Gradient norm limit.")] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = None,
    early_stopping: Annotated[
        int | None, typer.Option("--early-stopping", help="Stop after N epochs without improvement.")
    ] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    image_size: ImageSizeOpt = None,
    crop: Annotated[
        int | None, typer.Option("--crop", help="Random N x N training crops (centre crop otherwise).")
    ] = None,
    balance: Annotated[str | None, typer.Option("--balance", help="none, weighted or oversample.")] = None,
    period_deg: Annotated[float | None, typer.Option("--period-deg", help="Angle period (default 30).")] = None,
    material: Annotated[str | None, typer.Option("--material", help="Angle period from this material.")] = None,
    dropout: Annotated[float | None, typer.Option("--dropout", help="Dropout before the head.")] = None,
    pretrained_weights: Annotated[
        Path | None, typer.Option("--pretrained-weights", help="Local torchvision weights file (resnet18/50).")
    ] = None,
    backbone_weights: Annotated[
        Path | None, typer.Option("--backbone-weights", help="backbone.pt from flakehunter pretrain.")
    ] = None,
    freeze_backbone: Annotated[
        bool | None, typer.Option("--freeze-backbone/--train-backbone", help="Train only the head.")
    ] = None,
    num_workers: NumWorkersOpt = None,
    threads: ThreadsOpt = None,
    tensorboard: TensorboardOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    from_review: Annotated[list[Path] | None, typer.Option(
        "--from-review", help="Train on the reviewed candidates of this run directory (repeat for several; "
                              "flakehunter review), written as a dataset into OUT/review-data.")] = None,
    review_labels: Annotated[str, typer.Option(
        "--review-labels", help="With --from-review: layer-class (good = its class, bad = reject) or verdict "
                                "(good/bad).")] = "layer-class",
) -> None:
    """Train a classifier or an angle regressor; checkpoints every epoch into --out."""
    params = dict(locals())
    params.pop("from_review")
    params.pop("review_labels")
    from flakehunter.training.recipe import TrainRecipe, build_recipe, merge, parse_set_options
    from flakehunter.training.trainer import Trainer, recipe_from_checkpoint

    if from_review:
        params["data"] = _review_dataset(from_review, review_labels, data=data, out=out, task=task, resume=resume)
    given = _collect(params)
    extra = parse_set_options(set_)
    if resume is not None:
        not_allowed = sorted(set(given) - _RESUMABLE) + sorted(set(extra) - _RESUMABLE)
        if recipe is not None or not_allowed:
            raise InputError(f"--resume {resume}: continues with the run's own recipe; only "
                             f"{', '.join('--' + k.replace('_', '-') for k in sorted(_RESUMABLE))} may be given "
                             f"(got {', '.join(not_allowed) or '--recipe'})")
        started = recipe_from_checkpoint(resume / "last.pt").model_dump(mode="json")
        started["out"] = str(resume)
        plan = build_recipe(TrainRecipe, None, merge(started, merge(given, extra)))
        summary = Trainer(plan, resume=True, echo=typer.echo).run()
    else:
        plan = build_recipe(TrainRecipe, recipe, merge(given, extra))
        summary = Trainer(plan, echo=typer.echo).run()
    _print_train_summary(summary)


def _review_dataset(
    runs: list[Path], labels: str, *, data: Path | None, out: Path | None, task: str | None, resume: Path | None,
) -> Path:
    """``--from-review``: the reviewed candidates of ``runs`` as an imagefolder dataset in OUT/review-data."""
    from flakehunter.report.labels import review_classification_dataset

    if data is not None or resume is not None:
        raise InputError("--from-review: builds the training data from reviewed candidates; give it instead of "
                         "--data, and not with --resume")
    if out is None:
        raise InputError("--from-review: give --out (the dataset is written into OUT/review-data)")
    if task not in (None, "classify"):
        raise InputError(f"--from-review: reviewed candidates are class labels; use --task classify, not {task}")
    dataset = review_classification_dataset(runs, out / "review-data", labels=labels)
    typer.echo(f"reviewed candidates of {len(runs)} run(s) written to {dataset}")
    return dataset


def _print_train_summary(summary: dict[str, Any]) -> None:
    best = summary["best"]
    if best["value"] is not None:
        shown = f"{best['value']:.4f}" if best["metric"] == "accuracy" else f"{best['value']:.2f}°"
        typer.echo(f"best validation {best['metric']} {shown} at epoch {best['epoch']}")
    typer.echo(f"  checkpoints: {summary['checkpoints']['best']} (best), {summary['checkpoints']['last']} (last)")


@reports_errors
def pretrain(
    recipe: RecipeOpt = None,
    data: Annotated[Path | None, typer.Option("--data", help="Unlabelled images: a folder or a CSV of paths.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.")] = None,
    model: ModelOpt = None,
    width: WidthOpt = None,
    epochs: EpochsOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images (pairs of views) per step.")] = None,
    lr: LrOpt = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="NT-Xent temperature.")] = None,
    projection_dim: Annotated[int | None, typer.Option("--projection-dim", help="Projection head output size.")] = None,
    image_size: ImageSizeOpt = None,
    crop: Annotated[int | None, typer.Option("--crop", help="View size in pixels.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only N images.")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    num_workers: NumWorkersOpt = None,
    threads: ThreadsOpt = None,
    tensorboard: TensorboardOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
) -> None:
    """SimCLR self-supervised pretraining on unlabelled images; writes simclr.pt and backbone.pt."""
    params = dict(locals())
    from flakehunter.training.checkpoint import load_checkpoint
    from flakehunter.training.recipe import PretrainRecipe, build_recipe, merge, parse_set_options
    from flakehunter.training.simclr import pretrain as run_pretrain

    given = merge(_collect(params), parse_set_options(set_))
    if resume is not None:
        not_allowed = sorted(set(given) - _RESUMABLE)
        if recipe is not None or not_allowed:
            got = ", ".join(not_allowed) or "--recipe"
            raise InputError(f"--resume {resume}: continues with the run's own recipe; only --epochs, --device, "
                             f"--num-workers, --threads and --tensorboard may be given (got {got})")
        started = load_checkpoint(resume / "last.pt")["recipe"]
        started["out"] = str(resume)
        plan = build_recipe(PretrainRecipe, None, merge(started, given))
        summary = run_pretrain(plan, resume=True, echo=typer.echo)
    else:
        plan = build_recipe(PretrainRecipe, recipe, given)
        summary = run_pretrain(plan, echo=typer.echo)
    typer.echo(f"  weights: {summary['files']['full']} (backbone + projection head), "
               f"{summary['files']['backbone']} (backbone only, for train --backbone-weights)")


@reports_errors
def evaluate_model(
    checkpoint: Annotated[Path, typer.Argument(help="best.pt or last.pt written by train.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset (any supported format).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for metrics.json, results.csv and plots.")],
    format: Annotated[
        str, typer.Option("--format", help="auto, imagefolder, csv, axis, label-images, simulator.")
    ] = "auto",
    label_column: Annotated[str | None, typer.Option("--label-column", help="CSV column holding the label.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 64,
    gradcam: Annotated[
        int, typer.Option("--gradcam", help="Grad-CAM maps of N images (misclassified first); classifiers only.")
    ] = 0,
) -> None:
    """Score a trained model on labelled data: metrics.json, results.csv, confusion matrix or angle errors."""
    from flakehunter.training.evaluate import evaluate_model as run_evaluation

    if batch_size < 1:
        raise InputError(f"--batch-size: expected a positive number, got {batch_size}")
    if gradcam < 0:
        raise InputError(f"--gradcam: expected zero or more images, got {gradcam}")
    run_evaluation(checkpoint, data, out, format=format, label_column=label_column, device=device,
                   batch_size=batch_size, gradcam=gradcam, echo=typer.echo)
    typer.echo(f"  report: {out / 'metrics.json'}, {out / 'results.csv'}")
