"""Contract tests every stage, camera, material and detector plugin must pass, built-in or third-party.

Subclass a contract in a pytest test class and provide the device as a fixture; pytest then runs every
``test_*`` method of the contract against it::

    import pytest
    from flakehunter.testing.contracts import CameraContract, StageContract
    from flakehunter.testing.emulators import PriorProScanEmulator

    class TestMyStage(StageContract):
        @pytest.fixture
        def stage(self):
            with PriorProScanEmulator() as controller:        # or real hardware, or your own emulator
                stage = MyStage(MyStage.Options(port=controller.port), None)
                stage.connect()
                self.controller = controller
                yield stage                                   # connected; the contract sets .limits
                stage.close()

        def commands_received(self, stage):                   # optional: lets the contract check that a
            return len(self.controller.commands)              # refused move sends nothing at all

    class TestMyCamera(CameraContract):
        @pytest.fixture
        def camera(self):
            camera = MyCamera(MyCamera.Options(), context)
            camera.connect()
            yield camera
            camera.close()

The contracts encode `flakehunter.devices`: positions in µm, moves that block until the stage is at the
target, ``z_um=None`` keeping z, soft limits that refuse (never clip) a target before anything is sent,
``close`` safe twice; frames of the announced ``shape`` as uint8/uint16, (rows, cols) or (rows, cols, 3),
and no frame from a closed camera. Adjust `StageContract.box_um`, `StageContract.z_range_um` and
`StageContract.tolerance_um` to your stage.

`MaterialContract` (fixture ``material``) checks that a material's numbers are physical (index n + iκ with
κ ≥ 0, a layer thickness in nm, an edge symmetry that divides 360°) and that the simulator images a monolayer
with the contrast its index predicts. `DetectorContract` (fixture ``detector``, built for
`DetectorContract.material` on `DetectorContract.oxide_nm`) runs the detector on simulated frames, mono and
RGB, 8 and 16 bit, and checks what it returns against `flakehunter.analysis.Detection`. How *well* a detector
finds flakes is the detector check's job (`flakehunter.testing.detector_check`). The contracts need pytest
(``pip install 'flakehunter[test]'``); docs/plugin-authoring.md shows each in use.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from flakehunter.devices import AxisRange, Camera, Position, Stage, TravelLimits
from flakehunter.errors import FlakehunterError, HardwareError, StageLimitError
from flakehunter.materials import Material

__all__ = ["CameraContract", "DetectorContract", "MaterialContract", "StageContract"]


class StageContract:
    """The stage contract. Provide a ``stage`` fixture that yields a connected stage."""

    #: (x0, y0, x1, y1) in µm: a box inside the stage's travel where the contract may move it.
    box_um: tuple[float, float, float, float] = (0.0, 0.0, 2000.0, 2000.0)
    #: z range (µm) the contract may use; ``None`` for a stage without z.
    z_range_um: tuple[float, float] | None = (-20.0, 20.0)
    #: How close to a target a finished move must be (µm): the controller's resolution or better.
    tolerance_um: float = 0.5

    @pytest.fixture
    def stage(self) -> Any:
        raise NotImplementedError("a StageContract subclass must provide a 'stage' fixture")

    def commands_received(self, stage: Stage) -> int | None:
        """How many commands the hardware has received so far; ``None`` if unknown (then the contract
        checks only that the position did not change)."""
        return None

    # -- helpers ------------------------------------------------------------------------------------
    def _limits(self) -> TravelLimits:
        x0, y0, x1, y1 = self.box_um
        z = self.z_range_um or (-math.inf, math.inf)
        return TravelLimits(AxisRange(x0, x1), AxisRange(y0, y1), AxisRange(*z))

    def _z(self, fraction: float) -> float | None:
        if self.z_range_um is None:
            return None
        lo, hi = self.z_range_um
        return lo + (hi - lo) * fraction

    def _assert_at(self, stage: Stage, x: float, y: float, z: float | None) -> Position:
        here = stage.position_um()
        assert abs(here.x_um - x) <= self.tolerance_um, f"x {here.x_um} != target {x}"
        assert abs(here.y_um - y) <= self.tolerance_um, f"y {here.y_um} != target {y}"
        if z is not None:
            assert abs(here.z_um - z) <= self.tolerance_um, f"z {here.z_um} != target {z}"
        return here

    # -- the contract -------------------------------------------------------------------------------
    def test_satisfies_the_stage_protocol(self, stage: Stage) -> None:
        """The object has everything the scan engine calls, and a name."""
        assert isinstance(stage, Stage)
        assert isinstance(stage.name, str) and stage.name
        assert isinstance(stage.position_um(), Position)

    def test_move_blocks_until_the_stage_is_at_the_target(self, stage: Stage) -> None:
        """When move_to_um returns, the stage reports the target: imaging may start at once."""
        stage.limits = self._limits()
        x0, y0, x1, y1 = self.box_um
        for fx, fy, fz in ((0.25, 0.75, 0.5), (0.8, 0.1, 0.9), (0.5, 0.5, 0.2)):
            x, y, z = x0 + (x1 - x0) * fx, y0 + (y1 - y0) * fy, self._z(fz)
            stage.move_to_um(x, y, z)
            self._assert_at(stage, x, y, z)

    def test_z_none_keeps_z(self, stage: Stage) -> None:
        """move_to_um(x, y) (z None) moves x and y and leaves z where it was."""
        stage.limits = self._limits()
        x0, y0, x1, y1 = self.box_um
        z = self._z(0.7)
        stage.move_to_um(x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0), z)
        before = stage.position_um()
        stage.move_to_um(x0 + 0.6 * (x1 - x0), y0 + 0.4 * (y1 - y0))
        after = self._assert_at(stage, x0 + 0.6 * (x1 - x0), y0 + 0.4 * (y1 - y0), None)
        assert abs(after.z_um - before.z_um) <= self.tolerance_um

    def test_targets_outside_the_limits_are_refused_before_anything_is_sent(self, stage: Stage) -> None:
        """Every axis: a target beyond the soft limits raises StageLimitError; nothing moves, nothing is sent."""
        stage.limits = self._limits()
        x0, y0, x1, y1 = self.box_um
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        stage.move_to_um(xm, ym, self._z(0.5))
        before = stage.position_um()
        sent = self.commands_received(stage)
        targets: list[tuple[float, float, float | None]] = [
            (x1 + 1.0, ym, None), (x0 - 1.0, ym, None), (xm, y1 + 1.0, None), (xm, y0 - 1.0, None),
            (math.nan, ym, None), (xm, math.inf, None),
        ]
        if self.z_range_um is not None:
            targets += [(xm, ym, self.z_range_um[1] + 1.0), (xm, ym, self.z_range_um[0] - 1.0)]
        for target in targets:
            with pytest.raises(StageLimitError):
                stage.move_to_um(*target)
        if sent is not None:
            assert self.commands_received(stage) == sent, "a refused move must not send anything"
        after = stage.position_um()
        assert (after.x_um, after.y_um, after.z_um) == pytest.approx(
            (before.x_um, before.y_um, before.z_um), abs=self.tolerance_um
        )

    def test_estimate_move_s_is_sane(self, stage: Stage) -> None:
        """Estimates are finite and non-negative, and a longer move is not estimated shorter."""
        x0, y0, x1, y1 = self.box_um
        z = self._z(0.5) or 0.0
        start = Position(x0, y0, z)
        near = stage.estimate_move_s(start, Position(x0 + (x1 - x0) * 0.1, y0, z))
        far = stage.estimate_move_s(start, Position(x1, y1, z))
        assert 0.0 <= near <= far < math.inf
        assert stage.estimate_move_s(start, start) <= near

    def test_close_twice_is_safe(self, stage: Stage) -> None:
        """close() may be called again (the scan's teardown always calls it)."""
        stage.close()
        stage.close()


class CameraContract:
    """The camera contract. Provide a ``camera`` fixture that yields a connected camera."""

    @pytest.fixture
    def camera(self) -> Any:
        raise NotImplementedError("a CameraContract subclass must provide a 'camera' fixture")

    def test_satisfies_the_camera_protocol(self, camera: Camera) -> None:
        """The object has everything the scan engine calls, and a name."""
        assert isinstance(camera, Camera)
        assert isinstance(camera.name, str) and camera.name
        rows, cols = camera.shape
        assert rows > 0 and cols > 0

    def test_snap_returns_a_frame_of_the_announced_shape(self, camera: Camera) -> None:
        """Frames are (rows, cols) or (rows, cols, 3), uint8 or uint16, and match camera.shape."""
        for _ in range(2):
            frame = camera.snap()
            assert isinstance(frame, np.ndarray)
            assert frame.dtype in (np.uint8, np.uint16), frame.dtype
            assert frame.ndim in (2, 3), frame.shape
            if frame.ndim == 3:
                assert frame.shape[2] == 3, frame.shape
            assert tuple(frame.shape[:2]) == tuple(camera.shape)

    def test_frame_time_is_finite(self, camera: Camera) -> None:
        """frame_time_s is what plans add per tile: finite and non-negative."""
        assert 0.0 <= camera.frame_time_s() < math.inf

    def test_a_closed_camera_gives_no_frame(self, camera: Camera) -> None:
        """After close(), snap() raises rather than returning a stale frame; close() twice is safe."""
        camera.close()
        camera.close()
        with pytest.raises((HardwareError, FlakehunterError)):
            camera.snap()


# -- materials ------------------------------------------------------------------------------------------


class MaterialContract:
    """The material contract. Provide a ``material`` fixture that returns the registered `Material`."""

    #: Oxide thicknesses (nm) the monolayer must show a finite contrast on.
    oxides_nm: tuple[float, ...] = (90.0, 285.0)

    @pytest.fixture
    def material(self) -> Any:
        raise NotImplementedError("a MaterialContract subclass must provide a 'material' fixture")

    def test_is_a_material_with_a_registry_name(self, material: Material) -> None:
        """A `flakehunter.materials.Material` whose name is a lower-case identifier and that has a display name."""
        assert isinstance(material, Material), f"{type(material).__name__} is not a flakehunter.materials.Material"
        assert re.match(r"^[a-z0-9][a-z0-9_.-]*$", material.name), material.name
        assert isinstance(material.display_name, str) and material.display_name.strip()

    def test_layer_thickness_and_symmetry_are_physical(self, material: Material) -> None:
        """One layer is 0.1-5 nm thick; straight edges repeat with a period that divides 360°."""
        assert 0.1 <= material.layer_thickness_nm <= 5.0, f"layer_thickness_nm={material.layer_thickness_nm} (nm!)"
        s = material.edge_symmetry_deg
        assert 0 < s <= 180 and abs(360 / s - round(360 / s)) < 1e-9, f"edge_symmetry_deg={s} does not divide 360"
        assert material.thickness_nm(3) == pytest.approx(3 * material.layer_thickness_nm)

    def test_target_layers_are_layer_counts(self, material: Material) -> None:
        """``target_layers`` lists distinct layer counts >= 1, ascending."""
        layers = tuple(material.target_layers)
        assert layers and all(isinstance(n, int) and n >= 1 for n in layers), layers
        assert list(layers) == sorted(set(layers)), layers

    def test_index_over_the_visible_is_physical(self, material: Material) -> None:
        """For 1..5 layers the index is finite over 400-720 nm, n > 0 and κ >= 0 (n + iκ, κ absorbs)."""
        from flakehunter.optics import WAVELENGTHS_NM

        for layers in range(1, 6):
            index = np.asarray(material.index(WAVELENGTHS_NM, layers))
            assert index.shape == WAVELENGTHS_NM.shape, f"{layers} layers: index shape {index.shape}"
            assert np.all(np.isfinite(index)), f"{layers} layers: index not finite"
            assert np.all(index.real > 0), f"{layers} layers: n <= 0"
            assert np.all(index.imag >= 0), (
                f"{layers} layers: κ < 0 at {WAVELENGTHS_NM[np.argmin(index.imag)]:.0f} nm; flakehunter writes the "
                "index n + iκ with κ >= 0 absorbing (a table in the n - iκ convention needs its κ negated)"
            )

    def test_monolayer_contrast_is_finite_and_visible(self, material: Material) -> None:
        """The thin-film RGB contrast of a monolayer is finite, above 0.1 % and below 100 % in some channel."""
        from flakehunter.optics import layer_contrast

        for oxide_nm in self.oxides_nm:
            contrast = np.asarray(layer_contrast(material, 1, oxide_nm))
            assert contrast.shape == (3,) and np.all(np.isfinite(contrast)), contrast
            assert 1e-3 < np.abs(contrast).max() < 1.0, f"{oxide_nm} nm oxide: monolayer contrast {contrast}"

    def test_the_simulator_images_a_monolayer_with_the_predicted_contrast(self, material: Material) -> None:
        """A 60 µm monolayer rendered by the simulator shows the thin-film contrast of its index (± 0.02).

        The material must be registered (the simulator looks it up by name), so this also checks the plugin's
        entry point and hook.
        """
        from flakehunter.optics import layer_contrast
        from flakehunter.testing.simulated import SimulatedScope

        layout = {
            "material": material.name, "bounds_um": [0, 0, 400, 400], "nominal_oxide_nm": 90.0, "oxide_nm": 90.0,
            "oxide_gradient_nm_per_mm": [0.0, 0.0],
            "focus": {"z_at_centre_um": 0.0, "dz_dx_um_per_mm": 0.0, "dz_dy_um_per_mm": 0.0},
            "flakes": [{"id": 1, "kind": "thin", "layers": 1, "theta_deg": 0.0, "straight_edges": True,
                        "polygon_um": [[[170, 170], [230, 170], [230, 230], [170, 230]]]}],
        }
        scope = SimulatedScope(material.name, seed=1, layout=layout, shape=(120, 120), flicker=0.0,
                               read_noise_e=0.0, vignetting_a=0.0, vignetting_b=0.0, colour_tilt=0.0)
        frame = scope.snap_at(200.0, 200.0).astype(float)
        rows, cols = np.mgrid[0:120, 0:120]
        pixel = scope.transform.pixel_size_um
        inside = (np.abs(rows - 60) < 20 / pixel) & (np.abs(cols - 60) < 20 / pixel)
        outside = (np.abs(rows - 60) > 40 / pixel) | (np.abs(cols - 60) > 40 / pixel)
        measured = np.median(frame[inside], axis=0) / np.median(frame[outside], axis=0) - 1
        expected = layer_contrast(material, 1, 90.0)
        assert measured == pytest.approx(expected, abs=0.02), f"simulated {measured}, thin-film model {expected}"


# -- detectors ------------------------------------------------------------------------------------------

#: Rendered contract frames by (material, oxide): the same seeded frames for every test of a run.
_FRAMES: dict[tuple[str, float], tuple[np.ndarray, float]] = {}


def contract_frame(material: str, oxide_nm: float) -> tuple[np.ndarray, float]:
    """A seeded simulated RGB frame (uint8, 300 x 400 px) of thin flakes of ``material``, and its pixel size."""
    key = (material, oxide_nm)
    if key not in _FRAMES:
        from flakehunter.testing.simulated import SimulatedScope

        chip = {"size_um": [600.0, 600.0], "edge_margin_um": 20, "thin_flakes": 14, "thick_flakes": 3,
                "multilayer_flakes": 1, "residue_blobs": 2, "dust": 10, "min_spacing_um": 8}
        scope = SimulatedScope(material, oxide_nm=oxide_nm, seed=7, chip=chip, shape=(300, 400))
        _FRAMES[key] = (scope.snap_at(300.0, 300.0), scope.transform.pixel_size_um)
    return _FRAMES[key]


class DetectorContract:
    """The detector contract. Provide a ``detector`` fixture that returns a detector built for `material`
    on `oxide_nm` (use `detection_context` for its context)."""

    #: Material and nominal oxide the contract's simulated frames show (the detector must be built for them).
    material: str = "graphene"
    oxide_nm: float = 90.0

    @pytest.fixture
    def detector(self) -> Any:
        raise NotImplementedError("a DetectorContract subclass must provide a 'detector' fixture")

    def detection_context(self, **changes: Any) -> Any:
        """The `DetectionContext` the contract's frames call for (material from the registry, 1.15 µm pixels)."""
        from flakehunter.analysis.detector import DetectionContext
        from flakehunter.registry import get_registry

        values: dict[str, Any] = {"material": get_registry().material(self.material), "oxide_nm": self.oxide_nm,
                                  "pixel_size_um": 1.15, "device": "cpu", **changes}
        return DetectionContext(**values)

    def _run(self, detector: Any, image: np.ndarray, pixel_size_um: float = 1.15) -> list[Any]:
        from flakehunter.image_metadata import ImageMeta

        found = detector.detect(image, ImageMeta(pixel_size_um=pixel_size_um), [])
        assert isinstance(found, list), f"detect() returned {type(found).__name__}, not a list"
        return found

    def _check(self, detections: list[Any], shape: tuple[int, ...]) -> None:
        from flakehunter.analysis.detector import Detection

        rows, cols = shape[:2]
        for d in detections:
            assert isinstance(d, Detection), f"{type(d).__name__} is not a flakehunter.analysis.Detection"
            assert 0 <= d.row < rows and 0 <= d.col < cols, f"centre ({d.row}, {d.col}) outside {rows} x {cols}"
            assert d.area_px > 0, d
            assert 0.0 <= d.score <= 1.0, f"score {d.score} outside [0, 1]"
            assert d.layers is None or (isinstance(d.layers, int) and d.layers >= 1), d.layers
            assert isinstance(d.layer_class, str) and d.layer_class, d.layer_class
            r0, c0, r1, c1 = d.bbox
            assert 0 <= r0 <= r1 <= rows and 0 <= c0 <= c1 <= cols, f"bbox {d.bbox} outside {rows} x {cols}"
            if d.orientation_deg is not None:
                assert math.isfinite(d.orientation_deg), d.orientation_deg

    def test_satisfies_the_detector_protocol(self, detector: Any) -> None:
        """The object has ``name`` and ``detect``."""
        from flakehunter.analysis.detector import Detector

        assert isinstance(detector, Detector)
        assert isinstance(detector.name, str) and detector.name

    def test_detections_describe_regions_of_the_image(self, detector: Any) -> None:
        """On a simulated RGB frame every detection lies in the image, with an area, a score in [0, 1], an
        integer layer count or None, and a layer class."""
        frame, pixel = contract_frame(self.material, self.oxide_nm)
        self._check(self._run(detector, frame, pixel), frame.shape)

    def test_mono_and_16_bit_images_are_accepted(self, detector: Any) -> None:
        """(rows, cols) mono frames and uint16 frames are analysed too (the formats cameras deliver)."""
        frame, pixel = contract_frame(self.material, self.oxide_nm)
        mono = np.round(frame.astype(float) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        wide = frame.astype(np.uint16) * 257
        for image in (mono, wide):
            self._check(self._run(detector, image, pixel), image.shape)

    def test_bare_substrate_gives_no_detection(self, detector: Any) -> None:
        """A flat, noisy frame of bare substrate yields no detection."""
        rng = np.random.default_rng(3)
        blank = np.clip(rng.normal([140.0, 135.0, 150.0], 2.0, size=(300, 400, 3)), 0, 255).astype(np.uint8)
        found = self._run(detector, blank)
        assert found == [], f"{len(found)} detections on bare substrate, e.g. {found[0]}"

    def test_state_round_trips(self, detector: Any) -> None:
        """A `StatefulDetector` restores what `state()` returned (resumed runs depend on it)."""
        from flakehunter.analysis.detector import StatefulDetector

        if not isinstance(detector, StatefulDetector):
            pytest.skip("not a StatefulDetector")
        frame, pixel = contract_frame(self.material, self.oxide_nm)
        self._run(detector, frame, pixel)
        detector.load_state(detector.state())
