"""The durable candidate writer: ``candidates.csv`` and ``candidates.jsonl``, de-duplicated across images.

Both files hold the same records. They are appended as images finish and fsynced before the journal
marks an image done. On start, the writer keeps only the records of images the journal says are done
(dropping a torn last line, or the records of an image that was being written when the process died),
rewrites both files atomically, streaming line by line so that memory does not grow with the night,
and carries on; ids continue from there.

De-duplication (where stage positions are meaningful) drops a candidate whose centre lies within
``max(min_distance_um, half the larger equivalent diameter)`` of a candidate of the same layer class
from another image: the same flake seen in two overlapping images, possibly cut by the edge of one of
them (which shifts its centre by up to half its size). The index holds the most recent
``index_capacity`` positioned candidates in a spatial hash: overlapping images (neighbouring tiles) come
close together in time, and memory stays flat over a wafer or a night.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from flakehunter.atomic import atomic_write
from flakehunter.candidates import COLUMNS, Candidate, csv_line
from flakehunter.run.layout import CANDIDATES_CSV, CANDIDATES_JSONL


class _Seen(NamedTuple):
    x_um: float
    y_um: float
    diameter_um: float
    layer_class: str
    image: str


class CandidateWriter:
    """Appends de-duplicated candidates to a run directory's CSV and JSONL, durably."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        done_images: Iterable[str] | None = None,
        deduplicate: bool = True,
        min_distance_um: float = 5.0,
        cell_um: float = 200.0,
        index_capacity: int = 50_000,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / CANDIDATES_CSV
        self.jsonl_path = self.run_dir / CANDIDATES_JSONL
        self.deduplicate = deduplicate
        self.min_distance_um = min_distance_um
        self.index_capacity = index_capacity
        self._cell_um = cell_um
        self._grid: dict[tuple[int, int], list[_Seen]] = {}
        self._order: deque[tuple[tuple[int, int], _Seen]] = deque()
        self.count = 0
        self.duplicates_dropped = 0
        self._next_id = 1
        self._recover(set(done_images or ()))
        # Held open for the run's lifetime and closed in close(); appends are fsynced per batch.
        self._csv = open(self.csv_path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115

    def _recover(self, done: set[str]) -> None:
        """Keep the records of finished images, line by line, and rewrite both files from them."""
        count, last_id = 0, 0
        with atomic_write(self.jsonl_path) as jsonl, atomic_write(self.csv_path) as table:
            table.write(",".join(COLUMNS) + "\n")
            if self.jsonl_path.exists():
                with open(self.jsonl_path, encoding="utf-8") as source:
                    for line in source:
                        try:
                            c = Candidate.from_record(json.loads(line))
                        except (json.JSONDecodeError, TypeError, AttributeError):
                            continue  # a torn last line
                        if c.image not in done:
                            continue
                        record = c.to_record()
                        jsonl.write(json.dumps(record) + "\n")
                        table.write(csv_line(record))
                        count += 1
                        last_id = max(last_id, c.id)
                        if c.positioned:
                            self._index(c)
        self.count = count
        self._next_id = last_id + 1

    @property
    def indexed(self) -> int:
        """How many candidates the de-duplication index holds (at most ``index_capacity``)."""
        return len(self._order)

    def _cell(self, x_um: float, y_um: float) -> tuple[int, int]:
        return (math.floor(x_um / self._cell_um), math.floor(y_um / self._cell_um))

    def _index(self, c: Candidate) -> None:
        cell = self._cell(c.x_um, c.y_um)
        seen = _Seen(c.x_um, c.y_um, c.equivalent_diameter_um, c.layer_class, c.image)
        self._grid.setdefault(cell, []).append(seen)
        self._order.append((cell, seen))
        if len(self._order) > self.index_capacity:
            old_cell, old = self._order.popleft()
            bucket = self._grid[old_cell]
            bucket.remove(old)
            if not bucket:
                del self._grid[old_cell]

    def is_duplicate(self, c: Candidate) -> bool:
        if not self.deduplicate:
            return False
        cx, cy = self._cell(c.x_um, c.y_um)
        diameter = c.equivalent_diameter_um
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for other in self._grid.get((cx + dx, cy + dy), ()):
                    if other.image == c.image or other.layer_class != c.layer_class:
                        continue
                    limit = max(self.min_distance_um, 0.5 * max(other.diameter_um, diameter))
                    if math.hypot(other.x_um - c.x_um, other.y_um - c.y_um) < limit:
                        return True
        return False

    def add(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        """Assign ids, drop duplicates, append and fsync. Returns what was written.

        Candidates with ``positioned=False`` (image-relative coordinates) are never compared with
        other images. An `OSError` (disk full) propagates; the caller stops the run, and the next start
        drops whatever part of this image's records reached the files.
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
            self._csv.write(csv_line(record))
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
            # A full disk may refuse the last flush: the journal decides what counts, the next start repairs.
            with contextlib.suppress(OSError):
                fh.close()

    def __enter__(self) -> CandidateWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
