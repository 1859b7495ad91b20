"""The acquisition engine: how one tile is taken (focus, move, settle, snap, write), with its timings.

In the manner of pymmcore-plus's MDA engine: the engine knows *how* to take a tile and nothing about
*when*; `flakehunter.acquisition.runner.ScanRunner` decides order, pauses, resumes and retakes.

The tile file is written on a writer thread while the stage moves on: `acquire` returns once the image
is in memory, and `TileRecord.written` completes (or raises, e.g. on a full disk) when it is on disk.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flakehunter import __version__
from flakehunter.acquisition.plan import ScanPlan
from flakehunter.devices import Position
from flakehunter.focus import SearchSettings, autofocus
from flakehunter.geometry import TilePlan
from flakehunter.image_metadata import ImageMeta
from flakehunter.run.layout import TILES, RunDirectory

log = logging.getLogger(__name__)


@dataclass
class TileRecord:
    """A tile on its way from the camera to the detectors.

    ``key`` is the tile's path relative to the run directory (the journal's and the candidates' name
    for it); ``meta`` is what the tile file says about it (as `flakehunter.tiles.read_image` would read
    it back); ``timings`` holds move_s, snap_s, write_s (and focus_s for a retake); ``written`` completes
    when the file is on disk (None: it already was, e.g. a tile loaded for a resume).
    """

    plan: TilePlan
    key: str
    path: Path
    image: np.ndarray | None = None
    meta: ImageMeta | None = None
    position: Position | None = None
    timings: dict[str, float] = field(default_factory=dict)
    retake: bool = False
    written: Future[None] | None = None


def tile_key(tile: TilePlan) -> str:
    """A tile's journal key: its file's path relative to the run directory."""
    from flakehunter.tiles import tile_filename

    return f"{TILES}/{tile_filename(tile.index, tile.grid_row, tile.grid_col)}"


class TileEngine:
    """Takes tiles of one scan plan into one run directory.

    Args:
        plan: the validated plan (devices, transform, focus strategy).
        run: the run directory the tiles are written into.
        run_id: the scan's id, recorded in every tile's provenance.
    """

    def __init__(self, plan: ScanPlan, run: RunDirectory, run_id: str) -> None:
        self.plan = plan
        self.run = run
        self.run_id = run_id
        focus = plan.config.focus
        self.refocus_settings = SearchSettings(
            metric=focus.metric, range_um=focus.range_um, coarse_step_um=focus.coarse_step_um,
            fine_step_um=focus.fine_step_um, backlash_um=focus.backlash_um, min_contrast=focus.min_contrast,
        )
        self._writer: ThreadPoolExecutor | None = None

    # -- the sequence -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Connect the devices (the runner calls it once, before the first tile)."""
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flakehunter-tile-writer")
        self.plan.stage.connect()
        self.plan.camera.connect()

    def teardown(self) -> None:
        """Finish writing the tiles taken, close the devices; always runs, never masks the scan's own outcome."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        for device in (self.plan.camera, self.plan.stage):
            try:
                device.close()
            except Exception:
                log.exception("closing %s failed", getattr(device, "name", device))

    # -- one tile ------------------------------------------------------------------------------------
    def key(self, tile: TilePlan) -> str:
        return tile_key(tile)

    def acquire(self, tile: TilePlan, *, refocus: bool = False) -> TileRecord:
        """Focus, move, settle and snap ``tile``; its file is written on the writer thread (``written``).

        ``refocus`` runs an autofocus at the tile first (a retake).
        """
        plan = self.plan
        key = self.key(tile)
        path = self.run.path / key
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        z_um = plan.focus.z_for(tile, plan.stage, plan.camera) if plan.focus else tile.z_um
        if refocus:
            result = autofocus(plan.stage, plan.camera, tile.x_um, tile.y_um, z_um, self.refocus_settings)
            if result.valid:
                z_um = result.z_um
            else:
                log.warning("tile %d: refocus found nothing better (%s); retaking at z %.1f µm",
                            tile.index, result.reason, z_um)
            timings["focus_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        plan.stage.move_to_um(tile.x_um, tile.y_um, z_um)
        t2 = time.perf_counter()
        image = plan.camera.snap()
        t3 = time.perf_counter()
        position = plan.stage.position_um()
        timings.update(move_s=t2 - t1, snap_s=t3 - t2)
        meta = ImageMeta(
            pixel_size_um=plan.transform.pixel_size_um, x_um=position.x_um, y_um=position.y_um, z_um=position.z_um,
            provenance=self.provenance(tile, z_um), source="flakehunter",
        )
        record = TileRecord(tile, key, path, image, meta, position, timings, retake=refocus)
        if self._writer is None:  # not set up (a caller taking single tiles): write here
            self._write(record)
        else:
            record.written = self._writer.submit(self._write, record)
        return record

    def _write(self, record: TileRecord) -> None:
        from flakehunter.tiles import write_tile

        assert record.image is not None and record.position is not None and record.meta is not None
        t0 = time.perf_counter()
        write_tile(
            record.path, record.image, pixel_size_um=self.plan.transform.pixel_size_um,
            x_um=record.position.x_um, y_um=record.position.y_um, z_um=record.position.z_um,
            provenance=record.meta.provenance,
        )
        record.timings["write_s"] = time.perf_counter() - t0

    def load(self, tile: TilePlan) -> TileRecord | None:
        """A tile acquired before an interruption, to be analysed from its file; None if the file is gone."""
        path = self.run.path / self.key(tile)
        if not path.exists():
            return None
        return TileRecord(tile, self.key(tile), path)

    def provenance(self, tile: TilePlan, z_um: float) -> dict[str, Any]:
        """flakehunter's provenance block of a tile file."""
        plan = self.plan
        config = plan.config
        return {
            "flakehunter": __version__,
            "run_id": self.run_id,
            "scan": config.name,
            "tile_index": tile.index,
            "grid_row": tile.grid_row,
            "grid_col": tile.grid_col,
            "target_um": [tile.x_um, tile.y_um, tile.z_um],
            "focus_z_um": z_um,
            "stage": config.stage.plugin,
            "camera": config.camera.plugin,
            "exposure_ms": getattr(plan.camera, "exposure_ms", None),
            "transform": {
                "pixel_size_um": plan.transform.pixel_size_um,
                "rotation_deg": plan.transform.rotation_deg,
                "flip_rows": plan.transform.flip_rows,
                "flip_cols": plan.transform.flip_cols,
            },
            "acquired_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
