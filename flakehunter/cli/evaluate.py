"""``flakehunter evaluate``: score candidates against ground truth (simulator truth, label images) or annotations
(YOLO boxes, COCO polygons / RLE, instance masks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flakehunter.cli._common import reports_errors
from flakehunter.run.layout import RunDirectory


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


@reports_errors
def evaluate(
    source: Annotated[
        Path, typer.Argument(help="A run directory, or a candidates.jsonl/.csv file.", show_default=False)
    ],
    truth: Annotated[
        list[Path] | None,
        typer.Option(
            "--truth",
            help="truth.json; label images or a folder of them; YOLO labels (a labels/ folder or a Roboflow "
            "export); a COCO .json; or instance masks with an id->layers map (default: RUN_DIR/truth.json). "
            "See docs/evaluation.md.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: RUN_DIR/evaluation).")
    ] = None,
    layers: Annotated[str, typer.Option("--layers", help="Layer counts of interest, e.g. 1,2,3.")] = "1,2,3",
    min_area_um2: Annotated[
        float | None,
        typer.Option(
            "--min-area-um2",
            help="Smallest truth flake counted for recall (default 50 for truth.json and label images, "
            "0 for annotations: every annotated flake counts).",
        ),
    ] = None,
    tolerance_um: Annotated[
        float,
        typer.Option("--tolerance-um", help="How far off a flake a candidate may lie (truth.json, label images)."),
    ] = 3.0,
    tolerance_px: Annotated[
        float, typer.Option("--tolerance-px", help="How far off an annotation a candidate may lie, in pixels.")
    ] = 3.0,
    pixel_size_um: Annotated[
        float | None, typer.Option("--pixel-size-um", help="Pixel size for label images when the run does not say.")
    ] = None,
    class_layers: Annotated[
        str | None,
        typer.Option(
            "--class-layers",
            help="Layer count per annotation class id or name, e.g. 0=1,1=2 or bulk=none "
            "(default: read from class names such as monolayer, 1L, bilayer).",
        ),
    ] = None,
    stray_layers: Annotated[
        str | None,
        typer.Option(
            "--stray-layers",
            help="Reported layer counts that are strays when outside every annotation, e.g. 1 (default: the "
            "layer counts the annotations hold; all of --layers for label images).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Per-layer recall, precision and F1, confusion matrix, position and orientation errors, duplicates;
    against annotations also found / annotated, missed and strays per image."""
    from flakehunter.analysis.annotations import detect_format
    from flakehunter.analysis.evaluation import load_truth, match, summarize
    from flakehunter.analysis.evaluation_report import headline, write_report
    from flakehunter.errors import InputError

    run_dir, candidates = _load_candidates(source)
    wanted = _layer_counts(layers, "--layers")
    strays_of = _layer_counts(stray_layers, "--stray-layers") if stray_layers is not None else None
    truth_paths = truth or ([RunDirectory(run_dir).truth] if run_dir else [])
    if not truth_paths:
        raise InputError(f"{source}: give --truth (a truth.json, label images or annotations)")
    fmt = detect_format(truth_paths)
    settings: dict[str, Any] = {
        "source": str(source),
        "truth": [str(p) for p in truth_paths],
        "format": fmt,
        "layers": list(wanted),
        "min_area_um2": min_area_um2 if min_area_um2 is not None else (50.0 if fmt in ("truth", "label-image") else 0),
        "tolerance_um": tolerance_um,
    }
    if fmt == "truth":
        flakes = load_truth(truth_paths[0])  # the simulator's truth, in stage µm
        symmetry = _symmetry(candidates)
        m = match(candidates, flakes, tolerance_um=tolerance_um)
        summary = summarize(m, layers=wanted, min_area_um2=settings["min_area_um2"], symmetry_deg=symmetry)
    elif fmt == "label-image":
        flakes, pixel_sizes, candidates = _label_truth(truth_paths, run_dir, candidates, pixel_size_um)
        symmetry = _symmetry(candidates)
        m = match(candidates, flakes, tolerance_um=tolerance_um, pixel_size_um=pixel_sizes)
        summary = summarize(
            m, layers=wanted, min_area_um2=settings["min_area_um2"], symmetry_deg=symmetry, pixel_size_um=pixel_sizes
        )
        summary.update(_label_images_per_image(m, sorted(pixel_sizes), wanted, settings["min_area_um2"], strays_of))
    else:
        settings.update(tolerance_px=tolerance_px, class_layers=class_layers)
        m, summary = _against_annotations(
            truth_paths, fmt, run_dir, candidates, wanted=wanted, min_area_um2=settings["min_area_um2"],
            tolerance_px=tolerance_px, pixel_size_um=pixel_size_um, class_layers=class_layers, stray_layers=strays_of,
        )
    out = out or (RunDirectory(run_dir).evaluation if run_dir else Path("evaluation"))
    written = write_report(out, summary, m, settings)
    if as_json:
        typer.echo(json.dumps(headline(summary), indent=2))
    elif fmt in ("truth", "label-image"):
        _print(summary, wanted, settings["min_area_um2"])
        typer.echo(f"  report: {out} ({', '.join(p.name for p in written)})")
    else:
        _print_annotations(summary, fmt)
        typer.echo(f"  report: {out} ({', '.join(p.name for p in written)})")


def _layer_counts(text: str, option: str) -> tuple[int, ...]:
    from flakehunter.errors import InputError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{option}: expected comma-separated layer counts like 1,2,3, got {text!r}") from None


def _label_images_per_image(
    m: Any, images: list[str], wanted: tuple[int, ...], min_area_um2: float, stray_layers: tuple[int, ...] | None
) -> dict[str, Any]:
    """Per-image found / missed / strays for label images (added to the summary; its other keys stay)."""
    from flakehunter.analysis.evaluation import default_stray_layers, per_image

    targets = [i for i, f in enumerate(m.truth) if f.layers in set(wanted) and f.area_um2 >= min_area_um2]
    strays_of = stray_layers if stray_layers is not None else default_stray_layers(m.truth, wanted, True)
    rows = per_image(m, images, targets, strays_of)
    counts = [r["strays"] for r in rows]
    return {
        "images": len(rows), "stray_layers": list(strays_of), "strays": sum(counts),
        "strays_per_image_max": max(counts, default=0), "per_image": rows,
    }


def _against_annotations(
    paths: list[Path], fmt: str, run_dir: Path | None, candidates: list[Any], *, wanted: tuple[int, ...],
    min_area_um2: float, tolerance_px: float, pixel_size_um: float | None, class_layers: str | None,
    stray_layers: tuple[int, ...] | None,
) -> tuple[Any, dict[str, Any]]:
    """Match candidates to YOLO / COCO / instance-mask annotations in pixels, image by image (by file stem)."""
    from flakehunter.analysis.annotations import load_annotations, parse_class_layers
    from flakehunter.analysis.evaluation import image_key, match_pixels, summarize_annotations
    from flakehunter.errors import InputError

    analysed = _analysed_files(run_dir, candidates)
    sizes = {k: p for k, (_, size) in analysed.items() if (p := size or pixel_size_um)}
    annotations = load_annotations(
        paths, fmt, explicit=parse_class_layers(class_layers), analysed={k: f for k, (f, _) in analysed.items()},
        pixel_size_um=sizes,
    )
    if run_dir is not None and RunDirectory(run_dir).manifest.exists():
        images = [k for k in annotations.images if k in analysed]  # what the run analysed and someone annotated
    else:
        images = list(annotations.images)  # a bare candidates file: an annotated image without candidates had none
    if not images:
        raise InputError(f"{paths[0]}: no annotated image matches an analysed image by name (file stem)")
    if min_area_um2 > 0 and any(k not in sizes for k in images):
        raise InputError(f"{paths[0]}: --min-area-um2 needs the pixel size of each image; pass --pixel-size-um")
    keys = set(images)
    flakes = [f for f in annotations.flakes if f.image in keys]
    candidates = [c for c in candidates if image_key(c.image) in keys]
    m = match_pixels(candidates, flakes, tolerance_px=tolerance_px)
    summary = summarize_annotations(
        m, images, layers=wanted, min_area_um2=min_area_um2, stray_layers=stray_layers, pixel_size_um=sizes
    )
    summary["format"] = fmt
    summary["images_annotated_not_analysed"] = len(annotations.images) - len(images)
    summary["images_analysed_not_annotated"] = len(set(analysed) - keys)
    notes = []
    if flakes and all(f.layers is None for f in flakes):
        notes.append("the annotation classes give no layer counts (pass --class-layers, e.g. 0=1): layers are "
                     "not checked and strays are judged for all of --layers")
    if summary["images_annotated_not_analysed"]:
        notes.append(f"{summary['images_annotated_not_analysed']} annotated image(s) were not analysed by this run")
    summary["notes"] = notes
    return m, summary


def _load_candidates(source: Path) -> tuple[Path | None, list[Any]]:
    from flakehunter.candidates import read_candidates
    from flakehunter.errors import InputError

    if source.is_dir():
        if not RunDirectory(source).candidates_jsonl.exists():
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
        return (source.parent if RunDirectory(source.parent).manifest.exists() else None), rows
    return (source.parent if RunDirectory(source.parent).manifest.exists() else None), read_candidates(source)


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
    from flakehunter.analysis.evaluation import (
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
    return {k: size for k, (_, size) in _analysed_files(run_dir, candidates).items()}


def _analysed_files(run_dir: Path | None, candidates: list[Any]) -> dict[str, tuple[Path | None, float | None]]:
    """Image key -> (its file where it still exists, its pixel size) of every image the run analysed."""
    from flakehunter.analysis.evaluation import image_key
    from flakehunter.run.manifest import analysed_images

    files: dict[str, tuple[Path | None, float | None]] = {}

    def add(name: str, size: float | None) -> None:
        path = Path(name)
        if not path.is_absolute() and run_dir is not None:
            path = run_dir / path
        files[image_key(name)] = (path if path.is_file() else None, size)

    for name, size in analysed_images(run_dir) if run_dir else []:
        add(name, size)
    for c in candidates:
        if image_key(c.image) not in files:
            add(c.image, None)
    return files


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


def _print_annotations(summary: dict[str, Any], fmt: str) -> None:
    def pct(v: float | None) -> str:
        return "n/a" if v is None or v != v else f"{v:.3f}"

    kinds = {"yolo": "YOLO labels", "coco": "COCO annotations", "instance-mask": "instance masks"}
    found_as = ", ".join(f"{k} {v}" for k, v in summary["found_as"].items()) or "none"
    strays_of = ",".join(f"{n}L" for n in summary["stray_layers"]) or "no"
    typer.echo(f"Evaluation against {kinds.get(fmt, fmt)}: {summary['images']} images, "
               f"{summary['annotated']} annotated flakes")
    typer.echo(f"  found      {summary['found']}/{summary['annotated']} (recall {pct(summary['recall'])}); "
               f"found as: {found_as}")
    typer.echo(f"  missed     {summary['missed']}")
    typer.echo(f"  strays     {summary['strays']} {strays_of} candidates outside every annotation (per image median "
               f"{summary['strays_per_image_median']:g}, max {summary['strays_per_image_max']}); "
               f"precision {pct(summary['precision'])} of {summary['reported']}")
    typer.echo(f"  layers     {pct(summary['layer_accuracy'])} ({summary['layer_checked']} found flakes with an "
               "annotated layer count)")
    typer.echo(f"  candidates {summary['candidates']} on the evaluated images; duplicates {summary['duplicates']}")
    for note in summary.get("notes", []):
        typer.echo(f"  note: {note}")
