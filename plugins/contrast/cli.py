"""``flakehunter calibrate`` (added by the contrast plugin): a material profile from labelled images or GMM data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flakehunter.cli._common import reports_errors

if TYPE_CHECKING:
    import numpy as np

    from flakehunter.materials import Material


@reports_errors
def calibrate(
    images: Annotated[
        list[Path] | None, typer.Argument(help="Images of flakes (3–5 are enough).", show_default=False)
    ] = None,
    material: Annotated[str, typer.Option("--material", "-m", help="Material name, e.g. graphene.")] = "",
    labels: Annotated[
        list[Path] | None,
        typer.Option(
            "--labels",
            help="Label images (pixel = layer count, 0 substrate, 255 ignore): repeat per image, give a folder, "
            "or name them IMAGE_label.*",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Profile file to write (JSON).")] = None,
    oxide_nm: Annotated[float, typer.Option("--oxide-nm", help="Nominal SiO2 thickness in nm.")] = 90.0,
    name: Annotated[str | None, typer.Option("--name", help="Profile name (default: the file name).")] = None,
    flatfield: Annotated[
        list[Path] | None, typer.Option("--flatfield", help="Image of bare substrate (repeat to average several).")
    ] = None,
    from_gmm: Annotated[
        Path | None, typer.Option("--from-gmm", help="Convert 2DMatGMM contrast parameters instead of fitting.")
    ] = None,
    from_review: Annotated[
        list[Path] | None,
        typer.Option("--from-review", help="Use the candidates marked good in this reviewed run as labels (repeat)."),
    ] = None,
) -> None:
    """Fit per-layer contrast distributions from labelled images and save them as a material profile."""
    from flakehunter.errors import InputError

    if not material:
        raise InputError("--material: required (e.g. --material graphene)")
    if out is None:
        raise InputError("--out: required (the profile file to write)")
    from flakehunter.plugins.contrast.profile import fit_profile, profile_from_gmm
    from flakehunter.registry import get_registry

    try:
        mat = get_registry().material(material)
    except InputError as exc:
        raise InputError(f"--material: {exc}") from None
    if from_gmm is not None:
        if images or labels or from_review:
            raise InputError("--from-gmm converts a parameter file; give no images, --labels or --from-review with it")
        profile = profile_from_gmm(from_gmm, material, name or out.stem)
    else:
        pairs = _pairs(images or [], labels or []) if (images or labels or not from_review) else []
        if from_review:
            from flakehunter.report.labels import review_label_images

            pairs += review_label_images(from_review, out.with_name(out.stem + "-review-labels"))
        contrasts, label_images = _contrasts(pairs, mat, oxide_nm, tuple(flatfield or ()))
        profile = fit_profile(
            mat,
            contrasts,
            label_images,
            name=name or out.stem,
            nominal_oxide_nm=oxide_nm,
            source={
                "images": [str(i) for i, _ in pairs],
                "labels": [str(label) for _, label in pairs],
                "flatfield": [str(f) for f in flatfield or ()],
                "nominal_oxide_nm": oxide_nm,
            },
        )
    profile.save(out)
    typer.echo(f"Profile {profile.name!r} for {material} written to {out}")
    for n, stats in sorted(profile.classes.items()):
        spread = ", ".join(f"{v:.3f}" for v in stats.cov.diagonal() ** 0.5)
        mean = ", ".join(f"{v:+.3f}" for v in stats.mean)
        pixels = f" from {stats.pixels} px" if stats.pixels else ""
        typer.echo(f"  {n}L: contrast ({mean}) ± ({spread}){pixels}")
    if profile.oxide_nm is not None:
        typer.echo(f"  best-fitting oxide thickness: {profile.oxide_nm:.1f} nm (nominal {oxide_nm:g} nm)")


def _pairs(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    """Pair each image with its label image.

    Labels may be given one per image in order (``--labels`` repeated), as a folder, or named
    ``IMAGE_label.*`` anywhere on the command line (then they are paired by name).
    """
    from flakehunter.analysis.evaluation import LABEL_SUFFIXES, image_key, is_label_name, label_key
    from flakehunter.errors import InputError

    named = [p for p in images if is_label_name(p)]
    images = [p for p in images if not is_label_name(p)]
    if not images:
        raise InputError("calibrate: give IMAGE files and --labels for them (or --from-gmm FILE)")
    candidates = list(named)
    for label in labels:
        if label.is_dir():
            candidates += sorted(q for q in label.iterdir() if q.suffix.lower() in LABEL_SUFFIXES)
        elif label.exists():
            candidates.append(label)
        else:
            raise InputError(f"{label}: label image not found")
    by_key = {label_key(p): p for p in candidates}
    if all(image_key(str(i)) in by_key for i in images):
        return [(i, by_key[image_key(str(i))]) for i in images]
    if not named and len(labels) == len(images) and not any(p.is_dir() for p in labels):
        return list(zip(images, labels, strict=True))
    missing = next(i for i in images if image_key(str(i)) not in by_key)
    raise InputError(
        f"{missing}: no label image for it (name it {image_key(str(missing))}_label.png, or give "
        f"one --labels per image in the same order)"
    )


def _contrasts(
    pairs: list[tuple[Path, Path]], material: Material, oxide_nm: float, flatfield: tuple[Path, ...]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Contrast images (background from the contrast detector's model) and the label images."""
    from flakehunter.analysis.detector import DetectionContext
    from flakehunter.errors import InputError
    from flakehunter.plugins.contrast.detector import ContrastDetector, ContrastOptions
    from flakehunter.tiles import read_image

    detector = ContrastDetector(
        ContrastOptions(calibration="nominal"),
        DetectionContext(material=material, oxide_nm=oxide_nm, flatfield=flatfield),
    )
    contrasts, label_images = [], []
    for image_path, label_path in pairs:
        image, _ = read_image(image_path)
        label, _ = read_image(label_path)
        if label.ndim == 3:
            label = label[..., 0]
        if label.shape != image.shape[:2]:
            raise InputError(
                f"{label_path}: label is {label.shape[1]}x{label.shape[0]} px, image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        contrasts.append(detector.contrast_image(image))
        label_images.append(label)
    return contrasts, label_images
