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
    task: Annotated[str, typer.Option(
        "--task", help="thickness (layer classes), axis (crystal-axis angle) or segment (class maps on foreign "
                       "setups, for cnn-thickness).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for images/, labels.csv, dataset.json.")],
    count: Annotated[int, typer.Option("--count", "-n", help="Number of crops (segment: tiles).")] = 1000,
    classes: Annotated[
        str, typer.Option("--classes", help="thickness: comma-separated 1L..5L, few, bulk, or 'all'.")
    ] = "1L,2L,3L",
    crop_px: Annotated[int | None, typer.Option("--crop-px", help="Crop size (default 32 thickness, 64 axis).")] = None,
    material: Annotated[str, typer.Option("--material", "-m", help="Material name.")] = "graphene",
    oxide_nm: Annotated[float, typer.Option("--oxide-nm", help="Nominal SiO2 thickness in nm.")] = 90.0,
    pixel_size_um: Annotated[
        float | None, typer.Option("--pixel-size-um", help="Pixel size (default 1.15 thickness, 0.5 axis).")
    ] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="First chip (or setup) seed; seed+1, ... follow. Default 0; 100000 for foreign setups, "
                       "which the foreign-setup benchmark never draws.")] = None,
    foreign: Annotated[bool, typer.Option(
        "--foreign", help="axis: windows from random foreign setups in the cnn-axis input (flake contrast) "
                          "instead of RGB crops from the default simulator camera.")] = False,
    materials: Annotated[str | None, typer.Option(
        "--materials", help="segment and --foreign: materials the setups draw from (default: graphene, mos2, wse2, "
                            "mose2, ws2; for axis those with --material's edge symmetry).")] = None,
    tiles_per_setup: Annotated[int, typer.Option(
        "--tiles-per-setup", help="segment and --foreign: tiles rendered per random setup.")] = 3,
) -> None:
    """Labelled training data: flake crops from simulated chips, or tiles and windows from foreign setups."""
    if task == "segment" or (task == "axis" and foreign):
        _foreign_dataset(task, out, count, seed, material, materials, tiles_per_setup, crop_px)
        return
    from flakehunter.hardware.simulator.dataset import write_simulator_dataset

    meta = write_simulator_dataset(out, task, count, crop_px=crop_px, material=material, oxide_nm=oxide_nm,
                                   seed=seed or 0, classes=classes, pixel_size_um=pixel_size_um)
    what = ", ".join(f"{k} {v}" for k, v in meta["class_counts"].items()) if meta["class_counts"] else \
        f"angles modulo {meta['period_deg']}°"
    typer.echo(f"{meta['count']} crops of {meta['crop_px']} px from {len(meta['chips'])} chips ({what})")
    typer.echo(f"  dataset: {out / 'dataset.json'}")


def _foreign_dataset(task: str, out: Path, count: int, seed: int | None, material: str, materials: str | None,
                     tiles_per_setup: int, crop_px: int | None) -> None:
    from flakehunter.errors import InputError
    from flakehunter.hardware.simulator.foreign_dataset import (
        FIRST_TRAINING_SEED,
        write_axis_dataset,
        write_segment_dataset,
    )
    from flakehunter.hardware.simulator.setup import DEFAULT_MATERIALS
    from flakehunter.registry import get_registry

    if tiles_per_setup < 1:
        raise InputError(f"--tiles-per-setup: expected at least 1, got {tiles_per_setup}")
    registry = get_registry()
    if materials:
        names = tuple(m.strip() for m in materials.split(",") if m.strip())
        for name in names:
            try:
                registry.material(name)
            except InputError as exc:
                raise InputError(f"--materials: {exc}") from None
    elif task == "segment":
        names = DEFAULT_MATERIALS
    else:
        period = registry.material(material).edge_symmetry_deg
        names = tuple(m for m in DEFAULT_MATERIALS if registry.material(m).edge_symmetry_deg == period) or (material,)
    first = FIRST_TRAINING_SEED if seed is None else seed
    if task == "segment":
        meta = write_segment_dataset(out, count, seed=first, materials=names, tiles_per_setup=tiles_per_setup,
                                     echo=typer.echo)
        pixels = ", ".join(f"{k} {v}" for k, v in meta["class_pixels"].items())
        typer.echo(f"{meta['count']} tiles on the {meta['grid_um']} µm analysis grid from setups {first}.. "
                   f"({', '.join(names)}); pixels per class: {pixels}")
    else:
        meta = write_axis_dataset(out, count, seed=first, materials=names, tiles_per_setup=tiles_per_setup,
                                  crop_px=crop_px or 64, echo=None)
        typer.echo(f"{meta['count']} flake windows of {meta['crop_px']} px from setups {first}.. "
                   f"({', '.join(names)}), angles modulo {meta['period_deg']}°")
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
