"""The names inside ``RUN_DIR/report/`` (the run directory's own names live in `flakehunter.run.layout`).

::

    index.html            the self-contained page: summary, overview, gallery, filters (and review when served)
    overview.png          the whole chip, flat-field corrected, candidates marked by layer class, scale bar
    overview-base.jpg     the same mosaic without marks, under the page's clickable markers
    overview.json         where the mosaic lies on the stage: origin_um, um_per_px, shape
    candidates.png        score against area of every candidate, by layer class
    crops/<id>.jpg        each candidate's crop with its crystal axis drawn
    gradcam/<id>.jpg      a detector's Grad-CAM overlay of the candidate, where it left one
    evaluation/...        copies of RUN_DIR/evaluation/**/*.png (evaluate, evaluate-model)
"""

from __future__ import annotations

INDEX = "index.html"
OVERVIEW_PNG = "overview.png"
OVERVIEW_BASE = "overview-base.jpg"
OVERVIEW_JSON = "overview.json"
CANDIDATES_PLOT = "candidates.png"
CROPS = "crops"
GRADCAM = "gradcam"
EVALUATION = "evaluation"


def crop_name(candidate_id: int) -> str:
    """Relative path (inside report/) of a candidate's crop."""
    return f"{CROPS}/{candidate_id}.jpg"


def gradcam_name(candidate_id: int) -> str:
    """Relative path (inside report/) of a candidate's Grad-CAM thumbnail."""
    return f"{GRADCAM}/{candidate_id}.jpg"
