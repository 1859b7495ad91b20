"""Results people look at: the report of a run, the review of its candidates, and exports for revisiting them.

* `write_report` (``flakehunter report RUN_DIR``) writes ``RUN_DIR/report/``: an overview mosaic of the
  chip with the candidates marked by layer class, and a self-contained ``index.html`` with the summary,
  the clickable overview, a filterable gallery of candidate crops and the evaluation plots (`builder`,
  `mosaic`, `crops`, `html`).
* ``flakehunter review RUN_DIR`` serves that page on 127.0.0.1 and records verdicts in
  ``RUN_DIR/review.jsonl`` (`server`, `verdicts`); `labels` turns them into training data.
* ``flakehunter export`` writes position lists and outlines for other software (`exports`), with the
  filters ``goto`` uses too (`filters`).

docs/reports.md describes the files and formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(run_dir: str | Path, **options: Any) -> Path:
    """Write ``RUN_DIR/report/`` and return its ``index.html`` (see `flakehunter.report.builder.write_report`)."""
    from flakehunter.report.builder import write_report as write

    return write(run_dir, **options)


__all__ = ["write_report"]
