"""Image files as acquisition programs write them: OME-TIFF bytes, and a writer that streams slowly."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def ome_tiff_bytes(image: np.ndarray, *, pixel_size_um: float, x_um: float, y_um: float, z_um: float = 0.0,
                   provenance: dict[str, Any] | None = None) -> bytes:
    """``image`` as the OME-TIFF bytes a microscope program writes (pixel size and stage position in µm)."""
    from flakehunter.tiles import write_tile

    with tempfile.TemporaryDirectory(prefix="flakehunter-") as scratch:
        path = Path(scratch) / "frame.ome.tif"
        write_tile(path, image, pixel_size_um=pixel_size_um, x_um=x_um, y_um=y_um, z_um=z_um,
                   provenance=provenance or {})
        return path.read_bytes()


def write_slowly(path: Path, data: bytes, chunks: int, pause_s: float) -> None:
    """Write ``data`` in ``chunks`` pieces with pauses, keeping the file open (a streaming writer)."""
    step = -(-len(data) // chunks)
    with open(path, "wb") as fh:
        for k in range(0, len(data), step):
            fh.write(data[k : k + step])
            fh.flush()
            if k + step < len(data):
                time.sleep(pause_s)
