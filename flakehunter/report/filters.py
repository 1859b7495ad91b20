"""Which candidates to show, export or drive to: one filter shared by the exports, ``goto`` and the page.

A candidate passes when its layer class is one of ``layer_classes`` (any, when None), its area and score
lie within the bounds, and its latest review matches ``reviewed`` (good, bad, favourite or unreviewed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from flakehunter.candidates import Candidate
from flakehunter.errors import InputError
from flakehunter.report.verdicts import Verdict

REVIEWED = ("good", "bad", "favourite", "unreviewed")


@dataclass(frozen=True)
class CandidateFilter:
    """Bounds are inclusive; None means "no bound". ``layer_classes`` match ``Candidate.layer_class`` exactly."""

    layer_classes: frozenset[str] | None = None
    min_area_um2: float | None = None
    max_area_um2: float | None = None
    min_score: float | None = None
    reviewed: str | None = None

    @classmethod
    def from_options(
        cls, layer_class: Iterable[str] | None = None, min_area_um2: float | None = None,
        max_area_um2: float | None = None, min_score: float | None = None, reviewed: str | None = None,
    ) -> CandidateFilter:
        """Build from command-line values; ``layer_class`` items may be comma-separated ("1L,2L").
        `InputError` names the option that is wrong."""
        classes = None
        if layer_class:
            classes = frozenset(c.strip() for item in layer_class for c in item.split(",") if c.strip())
            if not classes:
                raise InputError("--layer-class: expected class names such as 1L,2L")
        for option, value in (("--min-area-um2", min_area_um2), ("--max-area-um2", max_area_um2)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise InputError(f"{option}: expected an area >= 0 in µm², got {value}")
        if min_area_um2 is not None and max_area_um2 is not None and min_area_um2 > max_area_um2:
            raise InputError(f"--min-area-um2 {min_area_um2} is larger than --max-area-um2 {max_area_um2}")
        if min_score is not None and not (0 <= min_score <= 1):
            raise InputError(f"--min-score: expected a score in [0, 1], got {min_score}")
        if reviewed is not None and reviewed not in REVIEWED:
            raise InputError(f"--reviewed: expected one of {', '.join(REVIEWED)}, got {reviewed!r}")
        return cls(classes, min_area_um2, max_area_um2, min_score, reviewed)

    @property
    def needs_review(self) -> bool:
        return self.reviewed is not None

    def passes(self, c: Candidate, verdict: Verdict | None = None) -> bool:
        if self.layer_classes is not None and c.layer_class not in self.layer_classes:
            return False
        if self.min_area_um2 is not None and c.area_um2 < self.min_area_um2:
            return False
        if self.max_area_um2 is not None and c.area_um2 > self.max_area_um2:
            return False
        if self.min_score is not None and c.score < self.min_score:
            return False
        if self.reviewed == "unreviewed":
            return verdict is None or (verdict.verdict is None and not verdict.favourite)
        if self.reviewed == "favourite":
            return verdict is not None and verdict.favourite
        if self.reviewed is not None:
            return verdict is not None and verdict.verdict == self.reviewed
        return True

    def apply(self, candidates: Iterable[Candidate], verdicts: dict[int, Verdict] | None = None) -> list[Candidate]:
        """The candidates that pass, best score first (ties by id)."""
        verdicts = verdicts or {}
        kept = [c for c in candidates if self.passes(c, verdicts.get(c.id))]
        return sorted(kept, key=lambda c: (-c.score, c.id))

    def describe(self) -> str:
        """One line for messages, e.g. "layer class 1L or 2L, area >= 50 µm², reviewed good"."""
        parts = []
        if self.layer_classes is not None:
            parts.append("layer class " + " or ".join(sorted(self.layer_classes)))
        if self.min_area_um2 is not None:
            parts.append(f"area >= {self.min_area_um2:g} µm²")
        if self.max_area_um2 is not None:
            parts.append(f"area <= {self.max_area_um2:g} µm²")
        if self.min_score is not None:
            parts.append(f"score >= {self.min_score:g}")
        if self.reviewed is not None:
            parts.append(f"reviewed {self.reviewed}" if self.reviewed != "unreviewed" else "not reviewed")
        return ", ".join(parts) or "no filter"
