"""``flakehunter explain RUN_DIR CANDIDATE_ID`` (added by the cnn plugin): a Grad-CAM overlay of a candidate's crop.

The cnn-thickness network (the weights the run used, else the shipped ones) looks at a window of the candidate's
image around it; Grad-CAM of the candidate's class, summed over the candidate's pixels, shows which surroundings
decided it. Written to ``RUN_DIR/explain/CANDIDATE_ID.png`` (the report's gallery looks there), or ``--out``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from flakehunter.cli._common import reports_errors

#: The crop shows at least this many grid pixels across, and three times the flake's diameter.
MIN_WINDOW_GRID = 48


def explain_path(run_dir: Path, candidate_id: int) -> Path:
    """Where `explain` writes a candidate's overlay (the HTML report shows it when present)."""
    return Path(run_dir) / "explain" / f"{int(candidate_id)}.png"


@reports_errors
def explain(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by scan, detect or watch.")],
    candidate_id: Annotated[int, typer.Argument(help="The candidate's id (candidates.csv).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="PNG to write (default RUN_DIR/explain/ID.png).")
                   ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Write a Grad-CAM overlay of where the cnn-thickness network looked to classify a candidate."""
    path = write_explanation(run_dir, candidate_id, out=out, device=device)
    typer.echo(f"Grad-CAM of candidate {candidate_id} written to {path}")


def write_explanation(run_dir: Path, candidate_id: int, *, out: Path | None = None, device: str = "auto") -> Path:
    """Compute and write the overlay; returns its path. InputError naming what is missing otherwise."""
    import numpy as np
    import torch

    from flakehunter.candidates import read_candidates
    from flakehunter.errors import InputError
    from flakehunter.plugins.cnn.model_store import choose_device, load_model, resolve_weights
    from flakehunter.tiles import read_image
    from flakehunter.training.gradcam import segment_grad_cam
    from flakehunter.training.images import to_float_rgb
    from flakehunter.training.plots import gradcam_png
    from flakehunter.training.segment_input import CLASSES, contrast_grid, network_input

    run_dir = Path(run_dir)
    if not (run_dir / "candidates.jsonl").is_file():
        raise InputError(f"{run_dir}: not a run directory (no candidates.jsonl)")
    found = [c for c in read_candidates(run_dir) if c.id == candidate_id]
    if not found:
        raise InputError(f"{run_dir}: no candidate {candidate_id} in candidates.jsonl")
    cand = found[0]
    manifest = _manifest(run_dir)
    image_path = Path(cand.image) if Path(cand.image).is_absolute() else run_dir / cand.image
    if not image_path.is_file():
        raise InputError(f"candidate {candidate_id}: its image {image_path} is not there any more")
    image, meta = read_image(image_path)
    pixel_um = meta.pixel_size_um or _item_pixel_size(manifest, cand.image) or \
        (manifest.get("config") or {}).get("pixel_size_um")
    weights, config_dir = _weights_option(manifest)
    resolved = choose_device(device, "explain")
    model = load_model(resolve_weights(weights, "thickness", config_dir), resolved, "segment")

    grid = contrast_grid(image, pixel_um)
    f = grid.factor
    rows, cols = grid.contrast.shape[:2]
    radius = max(1.0, math.sqrt(max(cand.area_um2, 1.0) / math.pi) / ((pixel_um or 1.0) * f))
    side = min(max(rows, cols), max(MIN_WINDOW_GRID, int(6 * radius)))
    rc, cc = (cand.row + 0.5) / f - 0.5, (cand.col + 0.5) / f - 0.5
    r0 = int(np.clip(round(rc - side / 2), 0, max(rows - side, 0)))
    c0 = int(np.clip(round(cc - side / 2), 0, max(cols - side, 0)))
    window = grid.contrast[r0 : r0 + side, c0 : c0 + side]
    x = torch.from_numpy(network_input(window))[None].to(resolved)
    with torch.no_grad():
        predicted = model.network(x).argmax(1)[0].cpu().numpy()
    rr, ww = np.mgrid[: window.shape[0], : window.shape[1]]
    disc = (rr - (rc - r0)) ** 2 + (ww - (cc - c0)) ** 2 <= radius**2
    if cand.layer_class in CLASSES:
        target = CLASSES.index(cand.layer_class)
    else:  # unclassified: explain what the network itself sees there
        inside = predicted[disc]
        target = int(np.bincount(inside, minlength=len(CLASSES)).argmax()) if inside.size else 0
    mask = disc & (predicted == target)
    if not mask.any():
        mask = disc
    heat = segment_grad_cam(model.network, x, target, torch.from_numpy(mask))
    crop = to_float_rgb(image[r0 * f : (r0 + window.shape[0]) * f, c0 * f : (c0 + window.shape[1]) * f])
    crop = (crop - crop.min()) / max(float(crop.max() - crop.min()), 1e-6)  # stretched: thin flakes are faint
    heat_full = np.kron(heat, np.ones((f, f)))[: crop.shape[0], : crop.shape[1]]
    path = out or explain_path(run_dir, candidate_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    share = float(predicted[disc].tolist().count(target) / max(int(disc.sum()), 1))
    title = (f"candidate {candidate_id}: {cand.layer_class} ({cand.detector}), Grad-CAM of {CLASSES[target]}; "
             f"network: {share:.0%} of the flake {CLASSES[target]}")
    gradcam_png(path, crop, heat_full, title)
    return path


def _manifest(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _item_pixel_size(manifest: dict[str, Any], key: str) -> float | None:
    for item in manifest.get("items") or []:
        if isinstance(item, dict) and item.get("key") == key and item.get("pixel_size_um"):
            return float(item["pixel_size_um"])
    return None


def _weights_option(manifest: dict[str, Any]) -> tuple[str | None, Path | None]:
    """The cnn-thickness ``weights`` option the run was configured with (None: the shipped weights)."""
    config = manifest.get("config") or {}
    config_file = manifest.get("config_file")
    config_dir = Path(config_file).parent if isinstance(config_file, str) and config_file else None
    for section in config.get("detectors") or []:
        if isinstance(section, dict) and section.get("name") == "cnn-thickness":
            options = section.get("options") or {}
            return options.get("weights"), config_dir
    return None, config_dir
