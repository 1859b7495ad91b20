"""``flakehunter evaluate``: score candidates against ground truth (simulator truth or label images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flakehunter.cli._common import reports_errors


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


@reports_errors
def evaluate(
    source: Annotated[
        Path, typer.Argument(help="A run directory, or a candidates.jsonl/.csv file.", show_default=False)
    ],
    truth: Annotated[
        list[Path] | None,
        typer.Option("--truth", help="truth.json, or label images / a folder of them (default: RUN_DIR/truth.json)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: RUN_DIR/evaluation).")
    ] = None,
    layers: Annotated[str, typer.Option("--layers", help="Layer counts of interest, e.g. 1,2,3.")] = "1,2,3",
    min_area_um2: Annotated[
        float, typer.Option("--min-area-um2", help="Smallest truth flake counted for recall.")
    ] = 50.0,
    tolerance_um: Annotated[
        float, typer.Option("--tolerance-um", help="How far off a flake a candidate may lie.")
    ] = 3.0,
    pixel_size_um: Annotated[
        float | None, typer.Option("--pixel-size-um", help="Pixel size for label images when the run does not say.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Per-layer recall, precision and F1, confusion matrix, position and orientation errors, duplicates."""
    from flakehunter.detection.evaluation import load_truth, match, summarize
    from flakehunter.detection.evaluation_report import headline, write_report
    from flakehunter.errors import InputError

    run_dir, candidates = _load_candidates(source)
    try:
        wanted = tuple(int(v) for v in layers.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--layers: expected comma-separated layer counts like 1,2,3, got {layers!r}") from None
    truth_paths = truth or ([run_dir / "truth.json"] if run_dir else [])
    if not truth_paths:
        raise InputError(f"{source}: give --truth (a truth.json or label images)")
    pixel_sizes: dict[str, float] = {}
    only = truth_paths[0] if len(truth_paths) == 1 else None
    if only is not None and (only.suffix == ".json" or (only / "truth.json").exists()):
        if not only.exists():
            raise InputError(f"{only}: truth file not found")
        flakes = load_truth(only)  # the simulator's truth, in stage µm
    else:
        flakes, pixel_sizes, candidates = _label_truth(truth_paths, run_dir, candidates, pixel_size_um)
    symmetry = _symmetry(candidates)
    m = match(candidates, flakes, tolerance_um=tolerance_um, pixel_size_um=pixel_sizes)
    summary = summarize(m, layers=wanted, min_area_um2=min_area_um2, symmetry_deg=symmetry, pixel_size_um=pixel_sizes)
    out = out or ((run_dir / "evaluation") if run_dir else Path("evaluation"))
    settings = {
        "source": str(source),
        "truth": [str(p) for p in truth_paths],
        "layers": list(wanted),
        "min_area_um2": min_area_um2,
        "tolerance_um": tolerance_um,
    }
    written = write_report(out, summary, m, settings)
    if as_json:
        typer.echo(json.dumps(headline(summary), indent=2))
    else:
        _print(summary, wanted, min_area_um2)
        typer.echo(f"  report: {out} ({', '.join(p.name for p in written)})")


def _load_candidates(source: Path) -> tuple[Path | None, list[Any]]:
    from flakehunter.candidates import read_candidates
    from flakehunter.errors import InputError

    if source.is_dir():
        if not (source / "candidates.jsonl").exists():
            raise InputError(f"{source}: no candidates.jsonl (expected a run directory)")
        return source, read_candidates(source)
    if not source.exists():
        raise InputError(f"{source}: file not found")
    if source.suffix == ".csv":
        import csv

        from flakehunter.candidates import Candidate

        rows = []
        with open(source, newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                rows.append(Candidate.from_record(_typed(rec)))
        return (source.parent if (source.parent / "manifest.json").exists() else None), rows
    return (source.parent if (source.parent / "manifest.json").exists() else None), read_candidates(source)


def _typed(rec: dict[str, str]) -> dict[str, Any]:
    from dataclasses import fields

    from flakehunter.candidates import Candidate

    types = {f.name: f.type for f in fields(Candidate)}
    out: dict[str, Any] = {}
    for k, v in rec.items():
        t = str(types.get(k, "str"))
        if v == "" and "None" in t:
            out[k] = None
        elif t.startswith("int"):
            out[k] = int(v)
        elif t.startswith("float"):
            out[k] = float(v)
        elif t.startswith("bool"):
            out[k] = v == "True"
        else:
            out[k] = v
    return out


def _label_truth(
    paths: list[Path], run_dir: Path | None, candidates: list[Any], pixel_size_um: float | None
) -> tuple[list[Any], dict[str, float], list[Any]]:
    """Label-image truth for the analysed images that have a label; candidates limited to those images."""
    from flakehunter.detection.evaluation import (
        LABEL_SUFFIXES,
        image_key,
        is_label_name,
        label_key,
        load_label_truth,
    )
    from flakehunter.errors import InputError

    labels: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in LABEL_SUFFIXES)
            tagged = [q for q in found if is_label_name(q)]
            labels += tagged or found  # a folder of images and their IMAGE_label files: only the labels
        elif p.exists():
            labels.append(p)
        else:
            raise InputError(f"{p}: label image not found")
    analysed = _analysed_images(run_dir, candidates)
    pixel_sizes: dict[str, float] = {}
    for key, size in analysed.items():
        size = size or pixel_size_um
        if size is None:
            raise InputError(f"{key}: no pixel size known for its label image; pass --pixel-size-um")
        pixel_sizes[key] = size
    labelled = {label_key(p) for p in labels} & set(pixel_sizes)
    if not labelled:
        raise InputError(f"{paths[0]}: no label image matches an analysed image by name")
    pixel_sizes = {k: v for k, v in pixel_sizes.items() if k in labelled}
    flakes = load_label_truth([p for p in labels if label_key(p) in labelled], pixel_sizes)
    return flakes, pixel_sizes, [c for c in candidates if image_key(c.image) in labelled]


def _analysed_images(run_dir: Path | None, candidates: list[Any]) -> dict[str, float | None]:
    """Image key -> pixel size of every image the run analysed (from its manifest), or of the candidates' images."""
    from flakehunter.detection.evaluation import image_key

    images: dict[str, float | None] = {}
    if run_dir and (run_dir / "manifest.json").exists():
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        for f in manifest.get("files", []):
            images[image_key(f["file"])] = f.get("pixel_size_um")
        plan_pixel = manifest.get("plan", {}).get("pixel_size_um")
        for t in manifest.get("tiles", []):
            images[image_key(t["file"])] = plan_pixel
    for c in candidates:
        images.setdefault(image_key(c.image), None)
    return images


def _symmetry(candidates: list[Any]) -> float:
    from flakehunter.registry import get_registry

    names = {c.material for c in candidates}
    if len(names) == 1:
        try:
            return float(get_registry().material(names.pop()).edge_symmetry_deg)
        except Exception:  # an unknown material only loses the orientation period
            pass
    return 30.0


def _print(summary: dict[str, Any], layers: tuple[int, ...], min_area_um2: float) -> None:
    def pct(v: float) -> str:
        return "  n/a" if v != v else f"{v:5.3f}"

    typer.echo(f"Evaluation ({', '.join(f'{n}L' for n in layers)}; recall over flakes >= {min_area_um2:g} µm²)")
    typer.echo(f"  recall     {pct(summary['recall'])}  ({summary['found']}/{summary['truth_flakes']} flakes)")
    typer.echo(f"  precision  {pct(summary['precision'])}  ({summary['on_target']}/{summary['reported']} candidates)")
    typer.echo(f"  F1         {pct(summary['f1'])}")
    typer.echo(f"  layers     {pct(summary['layer_accuracy'])}  (right layer count among matched candidates)")
    typer.echo(f"  duplicates {summary['duplicates']}")
    typer.echo(
        f"  position   median {summary['position_error_um']:.2f} µm, p95 {summary['position_error_p95_um']:.2f} µm"
    )
    if summary["orientation_flakes"]:
        typer.echo(
            f"  axis       RMS {summary['orientation_rms_deg']:.2f}° (mod {summary['symmetry_deg']:g}°) on "
            f"{summary['orientation_reported']}/{summary['orientation_flakes']} flakes with straight edges"
        )
    for name, row in summary["per_layer"].items():
        typer.echo(
            f"  {name}: recall {pct(row['recall'])} ({row['found']}/{row['truth']}), precision "
            f"{pct(row['precision'])} ({row['correct']}/{row['reported']}), F1 {pct(row['f1'])}"
        )
