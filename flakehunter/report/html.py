"""``index.html``: one self-contained page (style and script inline, pictures as relative files under report/).

Sections: the summary (tiles, area, duration, calibration and each detector's ladder, candidates per
class, tiles with warnings), the overview with clickable markers (or why there is none), the filters,
the gallery, the evaluation plots, and the review bar. The candidates travel as JSON inside the page;
every text from the run is escaped. `with_verdicts` and `with_token` rewrite the two blocks the review
server changes, so it never needs to rebuild the page.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from flakehunter.report.page_assets import CSS, JS
from flakehunter.report.rundata import RunData
from flakehunter.report.style import class_order, colour_hex
from flakehunter.report.verdicts import Verdict

VERDICTS_OPEN = '<script id="fh-verdicts" type="application/json">'
TOKEN_META = '<meta name="fh-review-token" content="">'
_VERDICTS_RE = re.compile(re.escape(VERDICTS_OPEN) + r".*?</script>", re.S)


@dataclass
class PageParts:
    """What the builder made that the page shows."""

    candidates: list[dict[str, Any]]
    overview: dict[str, Any] | None = None  # {"image", "rows", "cols", "um_per_px", "scale_um", "scale_label"}
    no_overview: str = ""
    flat_field: str = ""
    plot: str | None = None
    evaluation: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _json_block(value: Any) -> str:
    """JSON safe inside a <script> element (no "</script>" or "<!--" can appear)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def verdicts_json(verdicts: dict[int, Verdict]) -> dict[str, Any]:
    return {str(cid): v.to_record() for cid, v in verdicts.items()}


def with_verdicts(page: str, verdicts: dict[int, Verdict]) -> str:
    """The page with its verdict block replaced by ``verdicts``."""
    block = VERDICTS_OPEN + _json_block(verdicts_json(verdicts)) + "</script>"
    return _VERDICTS_RE.sub(lambda _: block, page, count=1)


def with_token(page: str, token: str) -> str:
    """The page with the review token filled in (the served page records verdicts; the file never does)."""
    return page.replace(TOKEN_META, f'<meta name="fh-review-token" content="{_e(token)}">', 1)


def render(data: RunData, parts: PageParts) -> str:
    """The whole page."""
    m = data.manifest or {}
    title = f"flakehunter {data.kind} {m.get('run_id', '')}".strip()
    classes = class_order({c["cls"] for c in parts.candidates})
    page_data = {"candidates": parts.candidates, "classes": classes,
                 "colours": {c: colour_hex(c) for c in classes}}
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self' data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'\">",
        TOKEN_META,
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1><p>{_e(data.run.path)} · {_e(m.get('status', 'no manifest'))}</p></header>",
        "<main>",
        _summary(data, parts),
        _overview(parts),
        _filters(classes, parts.candidates),
        '<section><h2>Candidates</h2><div id="gallery"></div></section>',
        _evaluation(parts),
        "</main>",
        _review_bar(),
        f'<script id="fh-data" type="application/json">{_json_block(page_data)}</script>',
        VERDICTS_OPEN + _json_block(verdicts_json(data.verdicts)) + "</script>",
        f"<script>{JS}</script>",
        "</body></html>",
    ])


# ------------------------------------------------------------------------------------------- summary


def _rows(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _summary(data: RunData, parts: PageParts) -> str:
    m = data.manifest or {}
    s = m.get("summary") or {}
    plan = (m.get("inputs") or {}).get("plan") or {}
    counts = s.get("counts") or {}
    run_rows: list[tuple[str, str]] = [("kind", _e(data.kind)), ("run id", _e(m.get("run_id", "–")))]
    items = s.get("items_total", len(data.images))
    noun = "tiles" if data.kind == "scan" else "files"
    grid = f" ({_e(plan['grid'])})" if plan.get("grid") else ""
    run_rows.append((noun, f"{_e(items)}{grid}; " + ", ".join(f"{_e(v)} {_e(k)}" for k, v in counts.items() if v)))
    run_rows.append(("area", _area(data, plan)))
    run_rows.append(("duration", _duration(s)))
    run_rows.append(("started", _e(m.get("created", "–"))))
    dropped = _e(s.get("duplicates_dropped", 0))
    run_rows.append(("candidates", f"{len(data.candidates)} (duplicates dropped: {dropped})"))
    if parts.flat_field:
        run_rows.append(("overview flat field", _e(parts.flat_field)))
    blocks = [f"<div><h3>Run</h3>{_rows(run_rows)}</div>", _per_class(data, parts),
              _calibration(m.get("calibration") or {})]
    return ('<section id="summary"><h2>Summary</h2><div class="cols">' + "".join(blocks) + "</div>"
            + _warnings(data, s, parts) + "</section>")


def _area(data: RunData, plan: dict[str, Any]) -> str:
    if plan.get("region_area_mm2") is not None:
        return f"{plan['region_area_mm2']:.2f} mm² region, {plan.get('imaged_area_mm2', 0):.2f} mm² imaged"
    total = sum(i.shape[0] * i.shape[1] * i.pixel_size_um**2 for i in data.images if i.shape and i.pixel_size_um)
    return f"{total / 1e6:.2f} mm² imaged" if total else "unknown (no pixel size)"


def _duration(s: dict[str, Any]) -> str:
    wall = s.get("wall_s")
    if wall is None:
        return "–"
    text = f"{_hms(float(wall))}"
    timings = s.get("timings") or {}
    if timings:
        text += " (" + ", ".join(f"{_e(k.removesuffix('_s'))} {_hms(float(v))}" for k, v in timings.items()) + ")"
    return text


def _hms(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    h, rest = divmod(round(seconds), 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


def _per_class(data: RunData, parts: PageParts) -> str:
    count = Counter(c["cls"] for c in parts.candidates)
    good = Counter(c.layer_class for c in data.candidates if (v := data.verdicts.get(c.id)) and v.verdict == "good")
    rows = "".join(
        f'<tr><td><span class="swatch" style="background:{colour_hex(k)}"></span>{_e(k)}</td>'
        f'<td class="num">{count[k]}</td><td class="num">{good[k] or ""}</td></tr>'
        for k in class_order(set(count)))
    head = "<tr><th>class</th><th>found</th><th>good</th></tr>"
    return f"<div><h3>Candidates per class</h3><table>{head}{rows}</table></div>"


def _calibration(cal: dict[str, Any]) -> str:
    rows = [("material", _e(cal.get("material", "–"))), ("nominal oxide", f"{_e(cal.get('nominal_oxide_nm', '–'))} nm")]
    t = cal.get("transform") or {}
    if t:
        rows.append(("pixel size", f"{_e(t.get('pixel_size_um'))} µm, rotation {_e(t.get('rotation_deg', 0))}°, "
                                   f"flips rows {_e(t.get('flip_rows'))} cols {_e(t.get('flip_cols'))}"))
    out = f"<div><h3>Calibration</h3>{_rows(rows)}"
    for report in cal.get("detectors") or []:
        if not isinstance(report, dict):
            continue
        scalars = [(k, _e(v)) for k, v in report.items() if isinstance(v, str | int | float | bool) and k != "detector"]
        out += f"<h4>{_e(report.get('detector', 'detector'))}</h4>{_rows(scalars)}"
        ladder = report.get("ladder")
        if isinstance(ladder, list) and ladder and all(isinstance(r, dict) for r in ladder):
            out += _ladder(ladder)
        out += f"<details><summary>full report</summary><pre>{_e(json.dumps(report, indent=1))}</pre></details>"
    return out + "</div>"


def _ladder(ladder: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in ladder for k in r))
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f'<td class="num">{_e(_short(r.get(k)))}</td>' for k in keys) + "</tr>"
                   for r in ladder)
    return f"<table><tr>{head}</tr>{body}</table>"


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def _warnings(data: RunData, s: dict[str, Any], parts: PageParts) -> str:
    warned = [i for i in data.images if i.warnings]
    bad = s.get("bad_inputs") or {}
    if not (warned or bad or parts.unreadable):
        return "<p class=\"note\">No tile or file has a warning.</p>"
    rows = [(i.key, _e("; ".join(i.warnings))) for i in warned]
    rows += [(k, _e(v)) for k, v in bad.items()]
    rows += [(k, _e(f"the report could not read it: {v}")) for k, v in parts.unreadable.items() if k not in bad]
    return f"<h3>Tiles and files with warnings ({len(rows)})</h3>{_rows(rows)}"


# ------------------------------------------------------------------------------------------- the rest


def _overview(parts: PageParts) -> str:
    o = parts.overview
    if o is None:
        return f'<section id="overview-section"><h2>Overview</h2><p class="note">{_e(parts.no_overview)}</p></section>'
    rows, cols = o["rows"], o["cols"]
    width = 100 * o["scale_um"] / (cols * o["um_per_px"])
    return (
        '<section id="overview-section"><h2>Overview</h2>'
        f'<div id="overview"><img id="overview-image" src="{_e(o["image"])}" width="{cols}" height="{rows}" '
        'alt="overview mosaic">'
        f'<svg id="overview-marks" viewBox="-0.5 -0.5 {cols} {rows}" preserveAspectRatio="none"></svg></div>'
        f'<div class="scalebar" style="width:{width:.3f}%"><div></div><span>{_e(o["scale_label"])}</span></div>'
        '<p class="note">Click a marker to show its candidate; the markers follow the filters. '
        "+x runs right, +y down.</p></section>"
    )


def _filters(classes: list[str], candidates: list[dict[str, Any]]) -> str:
    count = Counter(c["cls"] for c in candidates)
    boxes = "".join(
        f'<label><input type="checkbox" data-class="{_e(c)}" checked>'
        f'<span class="swatch" style="background:{colour_hex(c)}"></span>{_e(c)} ({count[c]})</label>'
        for c in classes)
    return (
        '<section><div id="filters">' + boxes +
        '<label>area ≥ <input id="f-min-area" type="number" min="0" step="any"> µm²</label>'
        '<label>area ≤ <input id="f-max-area" type="number" min="0" step="any"> µm²</label>'
        '<label>score ≥ <input id="f-min-score" type="range" min="0" max="1" step="0.01" value="0"> '
        '<span id="f-min-score-value">0.00</span></label>'
        '<label>review <select id="f-review"><option value="all">all</option><option value="good">good</option>'
        '<option value="bad">bad</option><option value="favourite">favourite</option>'
        '<option value="unreviewed">not reviewed</option></select></label>'
        '<label>sort <select id="f-sort"><option value="score">score</option><option value="area">area</option>'
        '<option value="id">id</option></select></label>'
        '<span id="shown"></span></div></section>'
    )


def _evaluation(parts: PageParts) -> str:
    pictures = "".join(f'<figure><img src="{_e(p)}" alt="{_e(p)}" loading="lazy"><figcaption>{_e(p)}</figcaption>'
                       "</figure>" for p in parts.evaluation)
    plot = (f'<figure><img src="{_e(parts.plot)}" alt="candidates by class"><figcaption>candidates: score against '
            "area, by class</figcaption></figure>") if parts.plot else ""
    if not (pictures or plot):
        return ""
    return f'<section class="evaluation"><h2>Plots</h2><div class="cols">{plot}{pictures}</div></section>'


def _review_bar() -> str:
    return (
        '<div id="review"><strong id="review-current">–</strong>'
        '<textarea id="review-notes" placeholder="notes (n), saved when you leave the field"></textarea>'
        '<span class="keys">j/→ next · k/← previous · g good · b bad · u undecided · f favourite · n notes</span>'
        '<span id="review-status"></span></div>'
    )
