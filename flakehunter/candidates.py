"""Candidate flakes and the durable sink that writes ``candidates.csv`` and ``candidates.jsonl``.

Both files hold the same records. They are appended as images finish and fsynced before the
journal marks an image done. On resume, the sink keeps only the records of images the journal
says are done (dropping a torn last line or the records of an image that was being written when
the process died), rewrites both files atomically, and carries on; ids continue from there.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from flakehunter.atomic import write_text_atomic

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


def _csv_line(record: dict[str, Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if record[c] is None else record[c] for c in COLUMNS])
    return buffer.getvalue()


def read_candidates(path: str | Path) -> list[Candidate]:
    """Read a ``candidates.jsonl`` (or the run directory holding one); torn lines are skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / "candidates.jsonl"
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(Candidate.from_record(json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue
    return out


class CandidateSink:
    """Appends de-duplicated candidates to the run directory's CSV and JSONL, durably.

    De-duplication (when stage positions are meaningful) drops a candidate whose centre lies within
    ``max(min_distance_um, half the larger equivalent diameter)`` of a candidate of the same layer
    class that came from another image: the same flake seen in two overlapping images, possibly cut
    by the edge of one of them (which shifts its centre by up to half its size).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        done_images: Iterable[str] | None = None,
        deduplicate: bool = True,
        min_distance_um: float = 5.0,
        cell_um: float = 200.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "candidates.csv"
        self.jsonl_path = self.run_dir / "candidates.jsonl"
        self.deduplicate = deduplicate
        self.min_distance_um = min_distance_um
        self._cell_um = cell_um
        self._grid: dict[tuple[int, int], list[Candidate]] = defaultdict(list)
        self.count = 0
        self.duplicates_dropped = 0
        self._next_id = 1
        kept = self._recover(set(done_images or ()))
        for c in kept:
            if c.positioned:
                self._index(c)
        # Held open for the run's lifetime and closed in close(); appends are fsynced per batch.
        self._csv = open(self.csv_path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115

    def _recover(self, done: set[str]) -> list[Candidate]:
        """Keep the records of finished images and rewrite both files from them."""
        kept: list[Candidate] = []
        if self.jsonl_path.exists():
            kept = [c for c in read_candidates(self.jsonl_path) if c.image in done]
        records = [c.to_record() for c in kept]
        write_text_atomic(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in records))
        write_text_atomic(self.csv_path, ",".join(COLUMNS) + "\n" + "".join(_csv_line(r) for r in records))
        self.count = len(kept)
        self._next_id = max((c.id for c in kept), default=0) + 1
        return kept

    def _cell(self, x_um: float, y_um: float) -> tuple[int, int]:
        return (math.floor(x_um / self._cell_um), math.floor(y_um / self._cell_um))

    def _index(self, c: Candidate) -> None:
        self._grid[self._cell(c.x_um, c.y_um)].append(c)

    def is_duplicate(self, c: Candidate) -> bool:
        if not self.deduplicate:
            return False
        cx, cy = self._cell(c.x_um, c.y_um)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for other in self._grid.get((cx + dx, cy + dy), ()):
                    if other.image == c.image or other.layer_class != c.layer_class:
                        continue
                    limit = max(
                        self.min_distance_um,
                        0.5 * max(other.equivalent_diameter_um, c.equivalent_diameter_um),
                    )
                    if math.hypot(other.x_um - c.x_um, other.y_um - c.y_um) < limit:
                        return True
        return False

    def add(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        """Assign ids, drop duplicates, append and fsync. Returns what was written.

        Candidates with ``positioned=False`` (image-relative coordinates) are never compared with
        other images.
        """
        written = []
        for c in candidates:
            if c.positioned and self.is_duplicate(c):
                self.duplicates_dropped += 1
                continue
            c.id = self._next_id
            self._next_id += 1
            record = c.to_record()
            self._jsonl.write(json.dumps(record) + "\n")
            self._csv.write(_csv_line(record))
            if c.positioned:
                self._index(c)
            written.append(c)
        if written:
            for fh in (self._jsonl, self._csv):
                fh.flush()
                os.fsync(fh.fileno())
        self.count += len(written)
        return written

    def close(self) -> None:
        for fh in (self._jsonl, self._csv):
            if not fh.closed:
                fh.close()

    def __enter__(self) -> CandidateSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
