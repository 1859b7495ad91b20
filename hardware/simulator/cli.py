"""``flakehunter simulate`` (added by the simulator plugin): labelled training data, simulated and synthetic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flakehunter.cli._common import reports_errors

simulate_app = typer.Typer(help="Make labelled training data: simulator crops, synthetic microstructures.",
                           no_args_is_help=True)


@simulate_app.command("dataset")
@reports_errors
def dataset(
    task: Annotated[str, typer.Option("--task", help="thickness (layer classes) or axis (crystal-axis angle).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for images/, labels.csv, dataset.json.")],
    count: Annotated[int, typer.Option("--count", "-n", help="Number of crops.")] = 1000,
    classes: Annotated[
        str, typer.Option("--classes", help="thickness: comma-separated 1L..5L, few, bulk, or 'all'.")
    ] = "1L,2L,3L",
    crop_px: Annotated[int | None, typer.Option("--crop-px", help="Crop size (default 32 thickness, 64 axis).")] = None,
    material: Annotated[str, typer.Option("--material", "-m", help="Material name.")] = "graphene",
    oxide_nm: Annotated[float, typer.Option("--oxide-nm", help="Nominal SiO2 thickness in nm.")] = 90.0,
    pixel_size_um: Annotated[
        float | None, typer.Option("--pixel-size-um", help="Pixel size (default 1.15 thickness, 0.5 axis).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="First chip seed; chips seed, seed+1, ... are used.")] = 0,
) -> None:
    """Labelled flake crops cut from simulated chips, with all the simulator's optics and noise."""
    from flakehunter.hardware.simulator.dataset import write_simulator_dataset

    meta = write_simulator_dataset(out, task, count, crop_px=crop_px, material=material, oxide_nm=oxide_nm,
                                   seed=seed, classes=classes, pixel_size_um=pixel_size_um)
    what = ", ".join(f"{k} {v}" for k, v in meta["class_counts"].items()) if meta["class_counts"] else \
        f"angles modulo {meta['period_deg']}°"
    typer.echo(f"{meta['count']} crops of {meta['crop_px']} px from {len(meta['chips'])} chips ({what})")
    typer.echo(f"  dataset: {out / 'dataset.json'}")


@simulate_app.command("microstructure")
@reports_errors
def microstructure(
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder; gets coarse/ and fine/ subfolders.")],
    count: Annotated[int, typer.Option("--count", "-n", help="Images per class.")] = 200,
    size: Annotated[int, typer.Option("--size", help="Image size in pixels.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Seed.")] = 0,
) -> None:
    """Voronoi grain micrographs, coarse vs fine, as a class-folder dataset."""
    from flakehunter.training.microstructure import write_microstructure_dataset

    write_microstructure_dataset(out, count, size, seed)
    typer.echo(f"{2 * count} images of {size} x {size} px in {out}/coarse and {out}/fine")
