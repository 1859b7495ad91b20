"""The report's plot, in the style of the evaluation plots (matplotlib, Agg, 110 dpi, constrained layout):
candidates per class beside score against area, so that the filter thresholds can be chosen by eye."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from flakehunter.candidates import Candidate
from flakehunter.report.style import class_order, colour_hex


def candidates_png(path: Path, candidates: list[Candidate]) -> Path | None:
    """Write the plot; None (nothing written) when there are no candidates."""
    if not candidates:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.2), dpi=110, layout="constrained")
    bars, scatter = fig.subplots(1, 2, width_ratios=[1, 2])
    count = Counter(c.layer_class for c in candidates)
    classes = class_order(set(count))
    bars.bar(classes, [count[c] for c in classes], color=[colour_hex(c) for c in classes], edgecolor="black")
    bars.set_ylabel("candidates")
    bars.set_title("candidates per class", fontsize=9)
    for cls in classes:
        mine = [c for c in candidates if c.layer_class == cls]
        scatter.scatter([max(c.area_um2, 1e-3) for c in mine], [c.score for c in mine], s=12, label=cls,
                        color=colour_hex(cls), edgecolors="black", linewidths=0.3)
    scatter.set_xscale("log")
    scatter.set_xlabel("area (µm²)")
    scatter.set_ylabel("score")
    scatter.set_ylim(-0.02, 1.02)
    scatter.set_title("score against area", fontsize=9)
    scatter.legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
