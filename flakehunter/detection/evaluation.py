"""Scoring candidates against ground truth (the simulator's truth.json).

A candidate *lies on* a truth flake when its centre is inside the flake's polygon grown by a
tolerance (3 µm by default). A truth flake is *found* when at least one candidate lies on it.
Recall counts found flakes among the truth flakes of interest; precision counts candidates that
lie on a flake of the layer range of interest; a *duplicate* is a second candidate on one flake.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from flakehunter.candidates import Candidate
from flakehunter.errors import InputError


@dataclass(frozen=True)
class TruthFlake:
    id: int
    layers: int
    theta_deg: float | None
    area_um2: float
    polygon: Polygon | MultiPolygon
    straight_edges: bool = True


def load_truth(path: str | Path) -> list[TruthFlake]:
    """Flakes of a truth.json (a run directory holding one is accepted too)."""
    path = Path(path)
    if path.is_dir():
        path = path / "truth.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable truth file ({exc})") from None
    flakes = []
    for i, rec in enumerate(data.get("flakes", [])):
        try:
            parts = [Polygon(ring) for ring in rec["polygon_um"]]
            geom = parts[0] if len(parts) == 1 else MultiPolygon(parts)
            flakes.append(
                TruthFlake(
                    id=int(rec["id"]), layers=int(rec["layers"]), theta_deg=rec.get("theta_deg"),
                    area_um2=float(geom.area), polygon=geom, straight_edges=bool(rec.get("straight_edges", True)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: flakes[{i}]: expected id, layers and polygon_um ({exc})") from None
    return flakes


@dataclass
class Matching:
    """Which candidates lie on which truth flakes."""

    truth: list[TruthFlake]
    candidates: list[Candidate]
    candidate_flake: list[int | None]  # index into truth, per candidate (the best-fitting flake)
    flake_candidates: dict[int, list[int]] = field(default_factory=dict)  # truth index -> candidate indices


def match(candidates: Sequence[Candidate], truth: Sequence[TruthFlake], tolerance_um: float = 3.0) -> Matching:
    """Assign each candidate to the truth flake it lies on (nearest if several)."""
    tree = shapely.STRtree([f.polygon for f in truth])
    points = [shapely.Point(c.x_um, c.y_um) for c in candidates]
    candidate_flake: list[int | None] = []
    flake_candidates: dict[int, list[int]] = {}
    for ci, (c, pt) in enumerate(zip(candidates, points, strict=True)):
        hits = tree.query(pt, predicate="dwithin", distance=tolerance_um)
        if len(hits) == 0:
            candidate_flake.append(None)
            continue
        # Prefer the flake whose layer count agrees, then the nearest one.
        best = min(
            (int(h) for h in hits),
            key=lambda h: (truth[h].layers != c.layers, truth[h].polygon.distance(pt)),
        )
        candidate_flake.append(best)
        flake_candidates.setdefault(best, []).append(ci)
    return Matching(list(truth), list(candidates), candidate_flake, flake_candidates)


def summarize(
    m: Matching, *, layers: Sequence[int] = (1, 2, 3), min_area_um2: float = 50.0
) -> dict[str, Any]:
    """Recall over truth flakes of ``layers`` and at least ``min_area_um2``; precision over the
    candidates reported with ``layers``; layer accuracy over matched pairs; duplicates."""
    wanted = set(layers)
    targets = [i for i, f in enumerate(m.truth) if f.layers in wanted and f.area_um2 >= min_area_um2]
    found = [i for i in targets if m.flake_candidates.get(i)]
    reported = [ci for ci, c in enumerate(m.candidates) if c.layers in wanted]
    on_target = [ci for ci in reported if (fi := m.candidate_flake[ci]) is not None and m.truth[fi].layers in wanted]
    pairs = [(ci, m.candidate_flake[ci]) for ci in reported if m.candidate_flake[ci] is not None]
    correct = [ci for ci, fi in pairs if m.truth[fi].layers == m.candidates[ci].layers]
    duplicates = sum(max(len(v) - 1, 0) for v in m.flake_candidates.values())
    per_layer = {}
    for n in sorted(wanted):
        t = [i for i in targets if m.truth[i].layers == n]
        r = [ci for ci in reported if m.candidates[ci].layers == n]
        per_layer[f"{n}L"] = {
            "truth": len(t),
            "found": sum(1 for i in t if m.flake_candidates.get(i)),
            "reported": len(r),
            "correct": sum(1 for ci in r if (fi := m.candidate_flake[ci]) is not None and m.truth[fi].layers == n),
        }
    return {
        "truth_flakes": len(targets),
        "found": len(found),
        "recall": len(found) / len(targets) if targets else float("nan"),
        "reported": len(reported),
        "on_target": len(on_target),
        "precision": len(on_target) / len(reported) if reported else float("nan"),
        "layer_accuracy": len(correct) / len(pairs) if pairs else float("nan"),
        "duplicates": duplicates,
        "missed_ids": [m.truth[i].id for i in targets if not m.flake_candidates.get(i)],
        "false_ids": [m.candidates[ci].id for ci in reported if ci not in set(on_target)],
        "per_layer": per_layer,
        "position_error_um": _position_error(m, reported),
    }


def _position_error(m: Matching, reported: list[int]) -> float:
    errors = []
    for ci in reported:
        fi = m.candidate_flake[ci]
        if fi is not None:
            c = m.truth[fi].polygon.centroid
            errors.append(np.hypot(c.x - m.candidates[ci].x_um, c.y - m.candidates[ci].y_um))
    return float(np.median(errors)) if errors else float("nan")
