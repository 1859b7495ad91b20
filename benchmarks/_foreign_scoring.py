"""Score candidates against foreign-setup truth in each image's pixels (JPEG/PNG carry no stage position).

Every image's true flakes are polygons in its (col, row) pixels (`foreign.PixelFlake`). A flake cut by the
image border is *ignored*: it is not demanded (recall), and a candidate on it is neither right nor wrong
(dropped before matching). The rest is flakehunter's own evaluation (`match`, `summarize`): recall over
1-3L flakes of at least the minimum area, precision over candidates reported as 1-3L, layer accuracy over
matched candidates, crystal-axis RMS modulo the material's edge symmetry on straight-edged flakes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import shapely

from flakehunter.analysis.evaluation import TruthFlake, image_key, match, summarize
from flakehunter.candidates import Candidate

#: A flake counts as whole in an image when at least this fraction of it is inside the frame.
WHOLE = 0.999


def truth_flakes(flakes_by_image: dict[str, Sequence[Any]]) -> tuple[list[TruthFlake], dict[str, list[Any]]]:
    """(whole flakes as pixel-frame `TruthFlake`s, cut flakes' pixel polygons per image key).

    ``flakes_by_image`` maps an image key (`image_key` of its file name) to its `PixelFlake`s.
    """
    truth: list[TruthFlake] = []
    cut: dict[str, list[Any]] = {}
    for key, flakes in flakes_by_image.items():
        for f in flakes:
            if f.visible_fraction >= WHOLE:
                truth.append(TruthFlake(id=len(truth) + 1, layers=f.layers, theta_deg=f.theta_deg,
                                        area_um2=f.area_um2, polygon=f.polygon_px,
                                        straight_edges=f.straight_edges, image=key))
            else:
                cut.setdefault(key, []).append(f.polygon_px)
    return truth, cut


def drop_on_cut_flakes(
    candidates: Iterable[Candidate], truth: Sequence[TruthFlake], cut: dict[str, list[Any]],
    pixel_size_um: dict[str, float], tolerance_um: float,
) -> list[Candidate]:
    """Candidates minus those that lie on a cut flake and on no whole one."""
    whole: dict[str, list[Any]] = {}
    for f in truth:
        whole.setdefault(f.image or "", []).append(f.polygon)
    kept = []
    for c in candidates:
        key = image_key(c.image)
        tol = tolerance_um / pixel_size_um.get(key, 1.0)
        point = shapely.Point(c.col, c.row)
        on_cut = any(p.distance(point) <= tol for p in cut.get(key, []))
        on_whole = any(p.distance(point) <= tol for p in whole.get(key, []))
        if on_whole or not on_cut:
            kept.append(c)
    return kept


def score(
    candidates: Sequence[Candidate], flakes_by_image: dict[str, Sequence[Any]], pixel_size_um: float, *,
    symmetry_deg: float, layers: Sequence[int] = (1, 2, 3), min_area_um2: float = 50.0,
    tolerance_um: float = 3.0,
) -> dict[str, Any]:
    """flakehunter's `summarize` metrics for one setup (all its images share ``pixel_size_um``)."""
    truth, cut = truth_flakes(flakes_by_image)
    sizes = dict.fromkeys(flakes_by_image, pixel_size_um)
    kept = drop_on_cut_flakes(candidates, truth, cut, sizes, tolerance_um)
    m = match(kept, truth, tolerance_um=tolerance_um, pixel_size_um=sizes)
    out = summarize(m, layers=layers, min_area_um2=min_area_um2, symmetry_deg=symmetry_deg, pixel_size_um=sizes)
    out["ignored_candidates"] = len(candidates) - len(kept)
    return out
