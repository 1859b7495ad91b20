"""The scan's layer ladder as the detectors before cnn-thickness report it.

The contrast detector learns a ladder per setup (issue 12) and gives every candidate its layer count, its
plateau contrast (``contrast_rgb``) and its setup (``extra["setup"]``). `RungBook` pools those per setup: the
contrast of rung n is the area-weighted median contrast of the candidates given n layers, its spread their
scatter. A region only the CNN found then gets its layer count from the nearest rung of its image's setup,
and a CNN class that contradicts the ladder is reported as a disagreement. Only rungs the detectors before
it have used (`MIN_POINTS` candidates) count: a ladder is far from linear on some oxides (MoS2 near 280 nm:
2L barely darker than 1L), so a rung is never guessed from another. The state is plain numbers, so a resumed
run continues with the same ladder.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flakehunter.analysis.detector import Detection

#: Rungs pooled (thin layers only).
RUNGS = 3
#: Candidates pooled per rung and setup (the most recent).
MAX_POINTS = 400
#: A contrast further than this many spreads from every rung is on none.
MAX_DISTANCE = 2.5
#: Candidates a rung needs before it counts.
MIN_POINTS = 2


class RungBook:
    """Per setup, the contrasts of the upstream candidates on each rung."""

    def __init__(self) -> None:
        self.points: dict[str, list[list[list[float]]]] = {}  # setup -> rung -> [r, g, b, weight]

    def add(self, detections: list[Detection]) -> str | None:
        """Pool the upstream (classified) candidates of one image; returns their setup key (None: none there)."""
        setup: str | None = None
        for d in detections:
            if d.layers is None or not 1 <= d.layers <= RUNGS or d.contrast_rgb is None or d.extra.get("cnn_only"):
                continue
            setup = str(d.extra.get("setup", 0))
            rungs = self.points.setdefault(setup, [[] for _ in range(RUNGS)])
            rungs[d.layers - 1].append([*map(float, d.contrast_rgb), float(max(d.area_px, 1.0))])
            del rungs[d.layers - 1][:-MAX_POINTS]
        return setup

    def rungs(self, setup: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(RUNGS, 3) rung contrasts (NaN where unknown) and (RUNGS,) spreads of ``setup``; None when no rung is
        known. The spread is the candidates' scatter, at least an eighth of the rung's distance from zero."""
        pooled = self.points.get(setup)
        if pooled is None:
            return None
        centres = np.full((RUNGS, 3), np.nan)
        spreads = np.full(RUNGS, np.nan)
        for n, pts in enumerate(pooled):
            if len(pts) < MIN_POINTS:
                continue
            arr = np.asarray(pts)
            centres[n] = [_weighted_median(arr[:, c], arr[:, 3]) for c in range(3)]
            dev = np.linalg.norm(arr[:, :3] - centres[n], axis=1)
            scale = float(np.linalg.norm(centres[n]))
            spreads[n] = max(1.4826 * float(np.median(dev)), 0.125 * scale, 0.004)
        if np.isnan(centres[:, 0]).all():
            return None
        return centres, spreads

    def classify(self, setup: str | None, contrast: np.ndarray) -> tuple[int | None, float]:
        """The rung (1..3) nearest to ``contrast`` within `MAX_DISTANCE` spreads, and the distance; (None, inf)
        where the setup has no ladder or the contrast is on no rung."""
        if setup is None:
            return None, float("inf")
        known = self.rungs(setup)
        if known is None:
            return None, float("inf")
        centres, spreads = known
        d = np.linalg.norm(centres - np.asarray(contrast, float)[None, :], axis=1) / spreads
        d = np.where(np.isnan(d), np.inf, d)
        n = int(np.argmin(d))
        return (n + 1 if d[n] <= MAX_DISTANCE else None), float(d[n])

    def state(self) -> dict[str, Any]:
        return {"rungbook": {k: [list(map(list, r)) for r in v] for k, v in self.points.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        book = state.get("rungbook")
        if isinstance(book, dict):
            self.points = {str(k): [[list(map(float, p)) for p in r] for r in v] for k, v in book.items()}


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])
