"""``flakehunter detect``: run the detectors on existing images (TIFF, PNG, JPEG or folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flakehunter.cli._common import error, reports_errors


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)


@reports_errors
def detect(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.", show_default=False)],
    material: Annotated[str, typer.Option("--material", "-m", help="Material name, e.g. graphene.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for candidates and manifest.")],
    oxide_nm: Annotated[float, typer.Option("--oxide-nm", help="Nominal SiO2 thickness in nm.")] = 90.0,
    pixel_size_um: Annotated[
        float | None, typer.Option("--pixel-size-um", help="Pixel size when the files do not say.")
    ] = None,
    detector: Annotated[
        list[str] | None, typer.Option("--detector", help="Detector to run (repeat for a pipeline).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="Compute device: auto, cpu or cuda.")] = "auto",
    profile: Annotated[
        str | None, typer.Option("--profile", help="Material profile (file or name) from `flakehunter calibrate`.")
    ] = None,
    flatfield: Annotated[
        list[Path] | None, typer.Option("--flatfield", help="Image of bare substrate (repeat to average several).")
    ] = None,
    overlays: Annotated[
        bool, typer.Option("--overlays", help="Also write each image with its candidates drawn (OUT/overlays/).")
    ] = False,
    calibration: Annotated[
        str, typer.Option("--calibration", help="self: fit the real oxide from the images; nominal: trust --oxide-nm.")
    ] = "self",
) -> None:
    """Find candidates in existing images; positions come from OME/Micro-Manager metadata."""
    from flakehunter.compute import check_device_choice
    from flakehunter.config import DetectorSection
    from flakehunter.detect import run_detect
    from flakehunter.errors import InputError

    if oxide_nm <= 0:
        raise InputError(f"--oxide-nm: expected a positive thickness in nm, got {oxide_nm}")
    if pixel_size_um is not None and pixel_size_um <= 0:
        raise InputError(f"--pixel-size-um: expected a positive value, got {pixel_size_um}")
    check_device_choice(device)
    if calibration not in ("self", "nominal"):
        raise InputError(f"--calibration: expected self or nominal, got {calibration!r}")
    contrast_options: dict[str, object] = {"calibration": calibration}
    if profile:
        contrast_options["profile"] = str(Path(profile).resolve()) if Path(profile).exists() else profile
    names = detector or ["contrast"]
    sections = [DetectorSection(name=n, options=contrast_options if n == "contrast" else {}) for n in names]
    summary = run_detect(
        paths,
        material=material,
        oxide_nm=oxide_nm,
        out=out,
        pixel_size_um=pixel_size_um,
        detectors=sections,
        device=device,
        flatfield=tuple(flatfield or ()),
        overlays=overlays,
    )
    typer.echo(
        f"Detect: {summary['done']}/{summary['files']} files analysed, {summary['candidates']} candidates "
        f"in {summary['wall_s']:.1f} s"
    )
    typer.echo(f"  candidates: {out / 'candidates.csv'} (and candidates.jsonl)")
    if summary["files_with_warnings"]:
        typer.secho(f"  {len(summary['files_with_warnings'])} file(s) with warnings (e.g. out of focus); "
                    f"see {out / 'manifest.json'}", fg=typer.colors.YELLOW, err=True)
    if summary["bad_files"]:
        for message in summary["bad_files"].values():
            error(message)
        raise typer.Exit(2)
