"""Candidate flakes: the record every detector's findings become, and its CSV / JSON-lines form.

`flakehunter.run.candidate_writer.CandidateWriter` appends them to a run directory durably;
`read_candidates` reads them back.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

#: The columns DESIGN.md promises to users' scripts, in this order, followed by the extras.
CONTRACT_COLUMNS = (
    "id", "x_um", "y_um", "material", "layers", "layer_class", "score",
    "area_um2", "orientation_deg", "image", "row", "col",
)


@dataclass
class Candidate:
    """A candidate flake in stage µm (x_um, y_um) and in its image's pixels (row, col)."""

    id: int
    x_um: float
    y_um: float
    material: str
    layers: int | None
    layer_class: str
    score: float
    area_um2: float
    orientation_deg: float | None
    image: str
    row: float
    col: float
    z_um: float | None = None
    tile: int | None = None
    positioned: bool = True  # False: x_um/y_um are relative to the image centre (no stage position known)
    detector: str = ""
    contrast_r: float | None = None
    contrast_g: float | None = None
    contrast_b: float | None = None

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        for key in ("x_um", "y_um", "area_um2", "row", "col", "z_um"):
            if record[key] is not None:
                record[key] = round(float(record[key]), 3)
        for key in ("score", "orientation_deg", "contrast_r", "contrast_g", "contrast_b"):
            if record[key] is not None:
                record[key] = round(float(record[key]), 4)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Candidate:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

    @property
    def equivalent_diameter_um(self) -> float:
        return 2.0 * math.sqrt(max(self.area_um2, 0.0) / math.pi)


COLUMNS = tuple(f.name for f in fields(Candidate))
assert COLUMNS[: len(CONTRACT_COLUMNS)] == CONTRACT_COLUMNS


def csv_line(record: dict[str, Any]) -> str:
    """One CSV row (with its newline) of a record, in `COLUMNS` order; None is an empty cell."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if record[c] is None else record[c] for c in COLUMNS])
    return buffer.getvalue()


def read_candidates(path: str | Path) -> list[Candidate]:
    """Read a ``candidates.jsonl`` (or the run directory holding one); torn lines are skipped."""
    from flakehunter.run.layout import CANDIDATES_JSONL

    path = Path(path)
    if path.is_dir():
        path = path / CANDIDATES_JSONL
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(Candidate.from_record(json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue
    return out
