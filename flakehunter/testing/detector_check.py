"""Score a detector on a seeded simulated chip: the detector check plugin authors run in their tests.

`score_detector` runs a real scan (`flakehunter.scan.Scan`) of a small simulated chip with the detector
pipeline you name, then matches the candidates against the run's ``truth.json`` with
`flakehunter.analysis.evaluation` (the same scoring as ``flakehunter evaluate``)::

    score = score_detector("mydetector", material="graphene", seed=3, out_dir=tmp_path)
    assert score.recall >= 0.9 and score.layers_right >= 0.9, score.line()

The chip is dense in thin flakes (about 45 per mm², 1-3 layers weighted as the simulator's defaults) so that
a ~1.2 x 1.2 mm scan of ~12 tiles scores on a few dozen targets in seconds. The detector must be in the
registry the scan sees: the process-wide one (`flakehunter.registry.get_registry`), which the pytest
plugin's ``flakehunter_registry`` fixture sets up with the plugin under test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Thin flakes per mm² of the check's chip; thick flakes, few-layer flakes, residue and dust scale with it.
DENSITY_PER_MM2 = 45.0


@dataclass(frozen=True)
class DetectorScore:
    """How a detector did on one simulated scan.

    Attributes:
        recall: share of the target flakes (``layers``, at least ``min_area_um2``) with a candidate on them.
        layers_right: share of the found targets whose candidate reports their true layer count.
        precision: share of the candidates reported with a target layer count that lie on such a flake.
        truth_flakes: number of target flakes; found: how many of them were found.
        candidates: every candidate the scan wrote; tiles: tiles scanned; run_dir: the run directory.
        summary: the full `flakehunter.analysis.evaluation.summarize` result.
    """

    recall: float
    layers_right: float
    precision: float
    truth_flakes: int
    found: int
    candidates: int
    tiles: int
    run_dir: Path
    summary: dict[str, Any]

    def line(self) -> str:
        """One line for a test's failure message or a benchmark's log."""
        return (f"recall {self.recall:.3f} ({self.found}/{self.truth_flakes}), layers right {self.layers_right:.3f}, "
                f"precision {self.precision:.3f}, {self.candidates} candidates in {self.tiles} tiles ({self.run_dir})")


def check_config(
    detectors: Sequence[dict[str, Any]], *, material: str, oxide_nm: float, seed: int, size_um: float,
    shape: tuple[int, int], pixel_size_um: float, chip: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The scan config of the check: a ``size_um`` square chip under the simulated stage and camera."""
    area_mm2 = (size_um / 1000.0) ** 2
    spec: dict[str, Any] = {
        "origin_um": [0, 0], "size_um": [size_um, size_um], "edge_margin_um": 40,
        "thin_flakes": round(DENSITY_PER_MM2 * area_mm2), "thick_flakes": round(15 * area_mm2),
        "multilayer_flakes": round(4 * area_mm2), "residue_blobs": round(4 * area_mm2), "dust": round(20 * area_mm2),
        "min_spacing_um": 12,
    }
    spec.update(chip or {})
    return {
        "name": "detector-check",
        "seed": seed,
        "stage": {"plugin": "simulator", "limits_um": {"x_um": [-1000, size_um + 1000],
                                                       "y_um": [-1000, size_um + 1000], "z_um": [-200, 200]},
                  "options": {"time_scale": 0}},
        "camera": {"plugin": "simulator", "options": {"shape": list(shape), "chip": spec}},
        "optics": {"pixel_size_um": pixel_size_um},
        "region": {"rectangle": {"corner1_um": [0, 0], "corner2_um": [size_um, size_um]}},
        "overlap_percent": 10,
        "order": "snake",
        "focus": {"mode": "none", "z_um": 0},
        "material": {"name": material, "oxide_nm": oxide_nm},
        "detectors": [dict(d) for d in detectors],
    }


def score_run(run_dir: str | Path, *, layers: Sequence[int] = (1, 2), min_area_um2: float = 50.0,
              tolerance_um: float = 3.0, symmetry_deg: float = 30.0) -> dict[str, Any]:
    """`summarize` of a simulated run against its ``truth.json``, plus ``layers_right`` (see `DetectorScore`)."""
    from flakehunter.analysis.evaluation import found_as, load_truth, match, summarize
    from flakehunter.candidates import read_candidates

    run_dir = Path(run_dir)
    m = match(read_candidates(run_dir), load_truth(run_dir), tolerance_um=tolerance_um)
    summary = summarize(m, layers=layers, min_area_um2=min_area_um2, symmetry_deg=symmetry_deg)
    wanted = set(layers)
    found = [i for i, f in enumerate(m.truth)
             if f.layers in wanted and f.area_um2 >= min_area_um2 and m.flake_candidates.get(i)]
    right = [i for i in found if (c := found_as(m, i)) is not None and c.layers == m.truth[i].layers]
    summary["layers_right"] = len(right) / len(found) if found else math.nan
    summary["candidates"] = len(m.candidates)
    return summary


def score_detector(
    detector: str | Sequence[dict[str, Any]],
    *,
    out_dir: str | Path,
    options: dict[str, Any] | None = None,
    material: str = "graphene",
    oxide_nm: float = 90.0,
    seed: int = 0,
    layers: Sequence[int] = (1, 2),
    min_area_um2: float = 50.0,
    size_um: float = 1200.0,
    shape: tuple[int, int] = (400, 600),
    pixel_size_um: float = 1.15,
    chip: dict[str, Any] | None = None,
) -> DetectorScore:
    """Scan a seeded simulated chip of ``material`` with ``detector`` and score it against the truth.

    ``detector`` is a registered detector name (with ``options``) or a list of config sections
    (``[{"name": "contrast"}, {"name": "mine", "options": {...}}]``) for a pipeline. ``chip`` overrides the
    simulator's chip spec (`flakehunter.hardware.simulator.chip.ChipSpec` fields). The run goes to
    ``out_dir/run``; the config to ``out_dir/check.yaml``.
    """
    import yaml

    from flakehunter.registry import get_registry
    from flakehunter.scan import Scan

    sections = [{"name": detector, "options": options or {}}] if isinstance(detector, str) else list(detector)
    config = check_config(sections, material=material, oxide_nm=oxide_nm, seed=seed, size_um=size_um, shape=shape,
                          pixel_size_um=pixel_size_um, chip=chip)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "check.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    run_dir = out / "run"
    result = Scan(path, run_dir, device="cpu").run()
    symmetry = get_registry().material(material).edge_symmetry_deg
    summary = score_run(run_dir, layers=layers, min_area_um2=min_area_um2, symmetry_deg=symmetry)
    return DetectorScore(
        recall=summary["recall"], layers_right=summary["layers_right"], precision=summary["precision"],
        truth_flakes=summary["truth_flakes"], found=summary["found"], candidates=summary["candidates"],
        tiles=int(result["items_total"]), run_dir=run_dir, summary=summary,
    )
