"""Writing an evaluation: metrics.json, confusion.csv, matches.csv, per_image.csv (where the evaluation is per
image: label images and annotations) and PNG plots."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from flakehunter.analysis.evaluation import Matching
from flakehunter.atomic import atomic_write, write_json_atomic, write_text_atomic

#: Per-item lists in a summary; `headline` leaves them out.
DETAIL_KEYS = ("missed_ids", "false_ids", "orientation_errors_deg", "position_errors_um", "per_image", "stray_ids")


def finite(value: Any) -> Any:
    """JSON-ready copy: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without its per-item lists, JSON-ready."""
    row: dict[str, Any] = finite({k: v for k, v in summary.items() if k not in DETAIL_KEYS})
    return row


def write_report(out: Path, summary: dict[str, Any], matching: Matching, settings: dict[str, Any]) -> list[Path]:
    """Write the evaluation files into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "confusion.csv", out / "matches.csv"]
    write_json_atomic(out / "metrics.json", finite({"settings": settings, **summary}))

    conf = summary["confusion"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["truth \\ reported", *conf["cols"]])
    for row in conf["rows"]:
        w.writerow([row, *(conf["counts"][row][c] for c in conf["cols"])])
    write_text_atomic(out / "confusion.csv", buf.getvalue())

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["candidate_id", "layer_class", "x_um", "y_um", "image", "truth_id", "truth_layers", "truth_area_um2"])
    for ci, c in enumerate(matching.candidates):
        fi = matching.candidate_flake[ci]
        f = matching.truth[fi] if fi is not None else None
        w.writerow([c.id, c.layer_class, c.x_um, c.y_um, c.image,
                    f.id if f else "", f.layers if f else "", round(f.area_um2, 2) if f else ""])
    write_text_atomic(out / "matches.csv", buf.getvalue())
    if "per_image" in summary:
        written.append(write_per_image(out / "per_image.csv", summary["per_image"]))
    written += _plots(out, summary)
    return written


def write_per_image(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One line per evaluated image: annotated, found, missed, found_as_<class> per reported class, strays,
    duplicates, candidates, layer_checked, layer_correct."""
    classes = sorted({name for r in rows for name in r["found_as"]})
    head = ["image", "annotated", "found", "missed", *(f"found_as_{c}" for c in classes),
            "strays", "duplicates", "candidates", "layer_checked", "layer_correct"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in rows:
        w.writerow([r["image"], r["annotated"], r["found"], r["missed"], *(r["found_as"].get(c, 0) for c in classes),
                    r["strays"], r["duplicates"], r["candidates"], r["layer_checked"], r["layer_correct"]])
    write_text_atomic(path, buf.getvalue())
    return path


def _plots(out: Path, summary: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    conf = summary["confusion"]
    counts = np.array([[conf["counts"][r][c] for c in conf["cols"]] for r in conf["rows"]])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(conf["cols"])), conf["cols"])
    ax.set_yticks(range(len(conf["rows"])), conf["rows"])
    ax.set_xlabel("reported")
    ax.set_ylabel("truth")
    for (r, c), v in np.ndenumerate(counts):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > counts.max() / 2 else "black")
    ax.set_title("Layer confusion (candidates)")
    paths.append(_save(fig, out / "confusion.png"))

    bins = summary["recall_by_area"]
    if bins:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [f"{b['area_min_um2']:g}–{b['area_max_um2']:g}" for b in bins]
        ax.bar(labels, [b["recall"] for b in bins], color="tab:green")
        for i, b in enumerate(bins):
            ax.text(i, b["recall"] + 0.02, f"n={b['flakes']}", ha="center", fontsize=8)
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("flake area (µm²)")
        ax.set_ylabel("recall")
        ax.set_title("Recall by flake area")
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        paths.append(_save(fig, out / "recall_by_area.png"))

    errors = summary["orientation_errors_deg"]
    if errors:
        fig, ax = plt.subplots(figsize=(6, 4))
        period = summary["symmetry_deg"]
        # A list: matplotlib's stubs take a Sequence[float] for bins, not an array.
        ax.hist(errors, bins=np.linspace(-period / 2, period / 2, 61).tolist(), color="tab:purple")
        ax.set_xlabel(f"orientation error (deg, modulo {period:g})")
        ax.set_ylabel("flakes")
        ax.set_title(f"Crystal axis: RMS {summary['orientation_rms_deg']:.2f}° over {len(errors)} flakes")
        paths.append(_save(fig, out / "orientation_error.png"))

    position = summary["position_errors_um"]
    if position:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(position, bins=40, color="tab:orange")
        ax.set_xlabel("distance from candidate to flake centroid (µm)")
        ax.set_ylabel("candidates")
        ax.set_title(f"Position error: median {summary['position_error_um']:.2f} µm")
        paths.append(_save(fig, out / "position_error.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
