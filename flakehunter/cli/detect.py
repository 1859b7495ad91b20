"""``flakehunter detect``: run the detectors on existing images (TIFF, PNG, JPEG or folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flakehunter.cli._common import (
    DETECTORS_OPTION,
    REPORT_OPTION,
    detector_names,
    error,
    positive_option,
    report_after_run,
    reports_errors,
)


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)


@reports_errors
def detect(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.", show_default=False)],
    material: Annotated[str, typer.Option("--material", "-m", help="Material name, e.g. graphene.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for candidates and manifest.")],
    oxide_nm: Annotated[
        float | None,
        typer.Option("--oxide-nm", help="Nominal SiO2 thickness in nm, if known (the detector finds it otherwise)."),
    ] = None,
    pixel_size_um: Annotated[
        float | None, typer.Option("--pixel-size-um", help="Pixel size when the files do not say.")
    ] = None,
    detectors: Annotated[list[str] | None, DETECTORS_OPTION] = None,
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
    report: Annotated[bool, REPORT_OPTION] = True,
) -> None:
    """Find candidates in existing images; positions come from OME/Micro-Manager metadata."""
    from flakehunter.analysis.pipeline import PipelineSpec
    from flakehunter.compute import check_device_choice
    from flakehunter.config import DetectorSection
    from flakehunter.detect import run_detect
    from flakehunter.errors import InputError

    positive_option(oxide_nm, "--oxide-nm", "a positive thickness in nm")
    positive_option(pixel_size_um, "--pixel-size-um", "a positive pixel size in µm")
    check_device_choice(device)
    if calibration not in ("self", "nominal"):
        raise InputError(f"--calibration: expected self or nominal, got {calibration!r}")
    contrast_options: dict[str, object] = {"calibration": calibration}
    if profile:
        contrast_options["profile"] = str(Path(profile).resolve()) if Path(profile).exists() else profile
    names = detector_names(detectors) or ["contrast"]
    sections = tuple(DetectorSection(name=n, options=contrast_options if n == "contrast" else {}) for n in names)
    spec = PipelineSpec(
        material=material, oxide_nm=oxide_nm, detectors=sections, pixel_size_um=pixel_size_um, device=device,
        flatfield=tuple(flatfield or ()),
    )
    summary = run_detect(paths, spec, out, overlays=overlays)
    counts = summary["counts"]
    typer.echo(
        f"Detect: {counts.get('done', 0)}/{summary['items_total']} files analysed, {summary['candidates']} "
        f"candidates in {summary['wall_s']:.1f} s"
    )
    typer.echo(f"  candidates: {out / 'candidates.csv'} (and candidates.jsonl)")
    report_after_run(out, report)
    if summary["items_with_warnings"]:
        typer.secho(f"  {len(summary['items_with_warnings'])} file(s) with warnings (e.g. out of focus); "
                    f"see {out / 'manifest.json'}", fg=typer.colors.YELLOW, err=True)
    if summary["bad_inputs"]:
        for message in summary["bad_inputs"].values():
            error(message)
        typer.secho(f"  {len(summary['bad_inputs'])} file(s) could not be analysed; the others were",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(2)
