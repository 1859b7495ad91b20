"""The simulated microscope for plugin tests, built through the registry like any other stage and camera.

`SimulatedScope` asks the registry for the ``simulator`` stage and camera (the core never imports a built-in
plugin; it uses them by name) and puts them over a chip: a seeded random one from ``chip`` (fields of the
simulator's chip spec) or a hand-made layout (the layout / truth.json format, as a dict). It takes frames
where you ask, focused on the chip, and gives the truth as label images (pixel = layer count)::

    scope = SimulatedScope(material="mote2", seed=3, chip={"size_um": [800, 800], "thin_flakes": 20})
    frame = scope.snap_at(400.0, 400.0)
    labels = scope.label_image_at(400.0, 400.0)
    truth = scope.layout.flakes               # id, kind, layers, polygon (stage µm) ...
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from flakehunter.devices import AxisRange, DeviceContext, TravelLimits
from flakehunter.geometry import PixelTransform


class SimulatedScope:
    """A simulator stage (instant moves, travel wide open) and camera looking at one chip.

    Args:
        material: registry name of the chip's material (its plugin must be loaded).
        oxide_nm: nominal SiO2 thickness.
        seed: chip and noise seed.
        chip: simulator chip-spec fields for a random chip (ignored with ``layout``).
        layout: a chip layout as a dict (the simulator's layout / truth.json format) instead of a random chip.
        pixel_size_um: camera pixel size at the sample.
        camera_options: further simulator camera options (``shape``, ``flicker``, ``read_noise_e`` ...).
    """

    def __init__(self, material: str = "graphene", *, oxide_nm: float = 90.0, seed: int = 0,
                 chip: dict[str, Any] | None = None, layout: dict[str, Any] | None = None,
                 pixel_size_um: float = 1.15, **camera_options: Any) -> None:
        from flakehunter.registry import get_registry

        registry = get_registry()
        self.transform = PixelTransform(pixel_size_um)
        context = DeviceContext(transform=self.transform, material=material, oxide_nm=oxide_nm, seed=seed)
        stage_factory = registry.get("stage", "simulator").obj
        self.stage = stage_factory(stage_factory.Options(time_scale=0), context)
        wide = AxisRange(-1e7, 1e7)
        self.stage.limits = TravelLimits(wide, wide, wide)
        self.stage.connect()
        context.stage = self.stage
        camera_factory = registry.get("camera", "simulator").obj
        options = dict(camera_options)
        with tempfile.TemporaryDirectory(prefix="flakehunter-layout-") as folder:
            if layout is not None:
                path = Path(folder) / "layout.json"
                path.write_text(json.dumps(layout), encoding="utf-8")
                options["layout"] = str(path)
            elif chip is not None:
                options["chip"] = chip
            self.camera = camera_factory(camera_factory.Options(**options), context)
            self.camera.connect()  # builds or reads the chip
        self.layout = self.camera.layout

    @property
    def shape(self) -> tuple[int, int]:
        """Frame (rows, cols)."""
        rows, cols = self.camera.shape
        return (int(rows), int(cols))

    def snap_at(self, x_um: float, y_um: float, defocus_um: float = 0.0) -> np.ndarray:
        """Move to (x, y), focused on the chip there (plus ``defocus_um``), and take a frame."""
        self.stage.move_to_um(x_um, y_um, float(self.layout.focus_z_um_at(x_um, y_um)) + defocus_um)
        return np.asarray(self.camera.snap())

    def label_image_at(self, x_um: float, y_um: float) -> np.ndarray:
        """The truth of the frame at (x, y): pixel = layer count of the flake covering it, 0 substrate."""
        return np.asarray(self.camera.label_image(x_um, y_um))

    def close(self) -> None:
        self.camera.close()
        self.stage.close()
