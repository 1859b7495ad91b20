"""Training logs: a CSV always (rewritten atomically each epoch), TensorBoard when it is installed."""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
from pathlib import Path
from typing import Any

from flakehunter.atomic import write_text_atomic

log = logging.getLogger(__name__)


def tensorboard_available() -> bool:
    """True when the optional ``tensorboard`` extra is installed (``pip install 'flakehunter[tensorboard]'``)."""
    return importlib.util.find_spec("tensorboard") is not None


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts; the union of their keys, in first-seen order) as a CSV, atomically."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


class TrainingLog:
    """Per-epoch scalars: ``log.csv`` in the output folder, and ``tensorboard/`` events when enabled.

    ``tensorboard``: True requires the extra, None uses it when installed, False never does.
    The CSV holds the whole history (a resumed run continues it), so it is rewritten each epoch.
    """

    def __init__(self, out: Path, history: list[dict[str, Any]], tensorboard: bool | None) -> None:
        self.path = out / "log.csv"
        self.history = history
        self.writer: Any = None
        if tensorboard is None:
            tensorboard = tensorboard_available()
        elif tensorboard and not tensorboard_available():
            from flakehunter.errors import InputError

            raise InputError("--tensorboard: tensorboard is not installed (pip install 'flakehunter[tensorboard]')")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        else:
            log.info("TensorBoard logging off (not installed or not asked for); CSV log at %s", self.path)

    def epoch(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        write_csv(self.path, self.history)
        if self.writer is not None:
            step = int(row["epoch"])
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
