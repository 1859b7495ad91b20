"""The page's style sheet and script, inlined into ``index.html`` (the page loads nothing from a network).

The script reads the candidates from ``<script id="fh-data">`` and the verdicts from
``<script id="fh-verdicts">``, builds the gallery and the overview markers, applies the filters, and
handles the review keys. It records verdicts only when ``<meta name="fh-review-token">`` carries the
token that ``flakehunter review`` puts there; a page opened from disk is read-only.
"""

CSS = """
:root { --bg:#16171b; --panel:#202228; --text:#e6e6e6; --muted:#9aa0a6; --accent:#6cb4ff;
  --good:#3ccf6e; --bad:#ff5a5a; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--text); }
header { padding:12px 20px; background:var(--panel); border-bottom:1px solid #333; }
header h1 { margin:0; font-size:18px; } header p { margin:2px 0 0; color:var(--muted); }
main { padding:12px 20px 80px; }
section { margin:18px 0; } h2 { font-size:16px; margin:0 0 8px; border-bottom:1px solid #333; padding-bottom:4px; }
table { border-collapse:collapse; } td, th { padding:2px 10px 2px 0; text-align:left; vertical-align:top; }
th { color:var(--muted); font-weight:normal; } .num { text-align:right; font-variant-numeric:tabular-nums; }
.cols { display:flex; flex-wrap:wrap; gap:28px; }
details pre { max-height:300px; overflow:auto; background:#111; padding:8px; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:50%; margin-right:4px; vertical-align:baseline; }
.note { color:var(--muted); font-style:italic; }
#overview { position:relative; display:inline-block; max-width:100%; line-height:0; }
#overview img { width:auto; height:auto; max-width:100%; max-height:80vh; display:block; }
#overview svg { position:absolute; left:0; top:0; width:100%; height:100%; }
#overview circle { fill:transparent; stroke-width:2; vector-effect:non-scaling-stroke; cursor:pointer; }
#overview circle.current { stroke-width:5; }
.scalebar { margin-top:6px; height:14px; position:relative; }
.scalebar div { height:4px; background:#fff; } .scalebar span { font-size:12px; }
#filters { position:sticky; top:0; z-index:5; background:var(--panel); padding:8px 10px; display:flex; flex-wrap:wrap;
  gap:14px; align-items:center; border:1px solid #333; border-radius:6px; }
#filters label { white-space:nowrap; } #filters input[type=number] { width:80px; }
#gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(220px, 1fr)); gap:10px; margin-top:10px; }
.card { background:var(--panel); border:2px solid transparent; border-radius:6px; padding:6px; cursor:pointer; }
.card.current { border-color:var(--accent); } .card[hidden] { display:none; }
.card .pics { display:flex; gap:4px; } .card img { width:100%; max-width:192px; image-rendering:auto; display:block; }
.card .pics.two img { width:50%; }
.card .missing { height:120px; display:flex; align-items:center; justify-content:center; color:var(--muted); }
.card .title { display:flex; justify-content:space-between; font-weight:600; margin-top:4px; }
.card .meta { color:var(--muted); font-size:12px; } .card .notes { font-size:12px; font-style:italic; }
.badge { font-size:11px; padding:0 6px; border-radius:8px; background:#333; }
.badge.good { background:var(--good); color:#000; } .badge.bad { background:var(--bad); color:#000; }
#review { position:fixed; bottom:0; left:0; right:0; background:var(--panel); border-top:1px solid #333;
  padding:6px 20px; display:flex; gap:12px; align-items:center; z-index:10; }
#review textarea { flex:1; height:34px; background:#111; color:var(--text); border:1px solid #444; }
#review .keys { color:var(--muted); font-size:12px; } #review-status { min-width:220px; font-size:12px; }
.evaluation img { max-width:480px; background:#fff; margin:4px; }
"""

JS = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("fh-data").textContent);
  const verdicts = JSON.parse(document.getElementById("fh-verdicts").textContent);
  const token = document.querySelector('meta[name="fh-review-token"]').content;
  const reviewing = token !== "";
  const byId = new Map(data.candidates.map((c) => [c.id, c]));
  const cards = new Map();
  const markers = new Map();
  const $ = (id) => document.getElementById(id);
  let current = null;
  let shown = [];

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const fmt = (v, d) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));

  function buildCard(c) {
    const card = el("div", { class: "card", id: "cand-" + c.id, "data-id": String(c.id) });
    const pics = el("div", { class: c.gradcam ? "pics two" : "pics" });
    if (c.crop) pics.appendChild(el("img", { src: c.crop, alt: "candidate " + c.id, loading: "lazy" }));
    else pics.appendChild(el("div", { class: "missing" }, "no crop"));
    if (c.gradcam) pics.appendChild(el("img", { src: c.gradcam, alt: "Grad-CAM of " + c.id, title: "Grad-CAM",
      loading: "lazy" }));
    card.appendChild(pics);
    const title = el("div", { class: "title" });
    const name = el("span");
    name.appendChild(el("span", { class: "swatch", style: "background:" + data.colours[c.cls] }));
    name.appendChild(document.createTextNode("#" + c.id + " " + c.cls));
    title.appendChild(name);
    title.appendChild(el("span", { class: "score" }, "score " + fmt(c.score, 2)));
    card.appendChild(title);
    const where = c.positioned ? "x " + fmt(c.x, 1) + " µm, y " + fmt(c.y, 1) + " µm"
      : "no stage position (" + fmt(c.x, 1) + ", " + fmt(c.y, 1) + " µm from the image centre)";
    card.appendChild(el("div", { class: "meta" }, where));
    card.appendChild(el("div", { class: "meta" }, "layers " + (c.layers === null ? "–" : c.layers) + ", area " +
      fmt(c.area, 0) + " µm², axis " + (c.axis === null ? "–" : fmt(c.axis, 1) + "°")));
    card.appendChild(el("div", { class: "meta" }, c.image));
    const status = el("div", { class: "meta review-state" });
    card.appendChild(status);
    card.appendChild(el("div", { class: "notes" }));
    card.addEventListener("click", () => select(c.id, false));
    return card;
  }

  function showVerdict(id) {
    const card = cards.get(id);
    const v = verdicts[id];
    const state = card.querySelector(".review-state");
    state.textContent = "";
    if (v && v.verdict) state.appendChild(el("span", { class: "badge " + v.verdict }, v.verdict));
    if (v && v.favourite) state.appendChild(el("span", { class: "badge fav" }, "★ favourite"));
    card.querySelector(".notes").textContent = v && v.note ? v.note : "";
    card.dataset.verdict = v && v.verdict ? v.verdict : "";
  }

  const gallery = $("gallery");
  for (const c of data.candidates) {
    const card = buildCard(c);
    cards.set(c.id, card);
    gallery.appendChild(card);
    showVerdict(c.id);
  }

  const svg = $("overview-marks");
  if (svg) {
    for (const c of data.candidates) {
      if (!c.marker) continue;
      const m = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      m.setAttribute("cx", c.marker[1]);
      m.setAttribute("cy", c.marker[0]);
      m.setAttribute("r", c.radius);
      m.setAttribute("stroke", data.colours[c.cls]);
      m.setAttribute("data-id", String(c.id));
      const t = document.createElementNS("http://www.w3.org/2000/svg", "title");
      t.textContent = "#" + c.id + " " + c.cls + " score " + fmt(c.score, 2);
      m.appendChild(t);
      m.addEventListener("click", () => select(c.id, true));
      svg.appendChild(m);
      markers.set(c.id, m);
    }
  }

  // ---- filters
  const classBoxes = Array.from(document.querySelectorAll("#filters input[data-class]"));
  function passes(c) {
    if (!classBoxes.some((b) => b.checked && b.dataset.class === c.cls)) return false;
    const lo = parseFloat($("f-min-area").value), hi = parseFloat($("f-max-area").value);
    if (!isNaN(lo) && c.area < lo) return false;
    if (!isNaN(hi) && c.area > hi) return false;
    if (c.score < parseFloat($("f-min-score").value)) return false;
    const want = $("f-review").value, v = verdicts[c.id];
    if (want === "good" || want === "bad") return !!v && v.verdict === want;
    if (want === "favourite") return !!v && v.favourite;
    if (want === "unreviewed") return !v || (!v.verdict && !v.favourite);
    return true;
  }
  const sorters = {
    score: (a, b) => b.score - a.score || a.id - b.id,
    area: (a, b) => b.area - a.area || a.id - b.id,
    id: (a, b) => a.id - b.id,
  };
  function apply() {
    $("f-min-score-value").textContent = fmt($("f-min-score").value, 2);
    const sorted = data.candidates.slice().sort(sorters[$("f-sort").value]);
    shown = [];
    for (const c of sorted) {
      const ok = passes(c);
      const card = cards.get(c.id);
      card.hidden = !ok;
      gallery.appendChild(card);
      if (markers.has(c.id)) markers.get(c.id).style.display = ok ? "" : "none";
      if (ok) shown.push(c.id);
    }
    $("shown").textContent = "showing " + shown.length + " of " + data.candidates.length + " candidates";
    if (current !== null && !shown.includes(current)) select(shown.length ? shown[0] : null, false);
  }
  for (const input of document.querySelectorAll("#filters input, #filters select")) {
    input.addEventListener("input", apply);
    input.addEventListener("change", apply);
  }

  // ---- selection and review
  const notes = $("review-notes");
  function say(text) { $("review-status").textContent = text; }
  function select(id, scroll) {
    if (current !== null) {
      cards.get(current).classList.remove("current");
      if (markers.has(current)) markers.get(current).classList.remove("current");
    }
    current = id;
    if (id === null) { $("review-current").textContent = "–"; notes.value = ""; return; }
    const card = cards.get(id), c = byId.get(id);
    card.classList.add("current");
    if (markers.has(id)) markers.get(id).classList.add("current");
    $("review-current").textContent = "#" + id + " " + c.cls;
    notes.value = verdicts[id] && verdicts[id].note ? verdicts[id].note : "";
    if (scroll) card.scrollIntoView({ block: "center" });
  }
  function step(delta) {
    if (!shown.length) return;
    const at = shown.indexOf(current);
    const next = at < 0 ? 0 : Math.min(shown.length - 1, Math.max(0, at + delta));
    select(shown[next], true);
  }
  async function save(change) {
    if (current === null) return;
    if (!reviewing) { say("read-only: run `flakehunter review RUN_DIR` to record verdicts"); return; }
    const id = current;
    const old = verdicts[id] || {};
    const body = { id: id, verdict: old.verdict || null, favourite: !!old.favourite, note: old.note || "" };
    Object.assign(body, change);
    say("saving #" + id + " …");
    try {
      const r = await fetch("api/verdict", { method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", "X-Review-Token": token } });
      const answer = await r.json();
      if (!r.ok) { say("not saved: " + answer.error); return; }
      verdicts[id] = answer;
      showVerdict(id);
      say("saved #" + id + (answer.verdict ? " " + answer.verdict : "") + (answer.favourite ? " ★" : ""));
      apply();
    } catch (err) {
      say("not saved: the review server does not answer");
    }
  }
  notes.addEventListener("change", () => save({ note: notes.value }));
  document.addEventListener("keydown", (e) => {
    const t = e.target.tagName;
    if (t === "INPUT" || t === "TEXTAREA" || t === "SELECT") {
      if (e.key === "Escape" || (e.key === "Enter" && e.ctrlKey)) { e.target.blur(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k === "j" || k === "ArrowRight") step(1);
    else if (k === "k" || k === "ArrowLeft") step(-1);
    else if (k === "g") save({ verdict: "good" });
    else if (k === "b") save({ verdict: "bad" });
    else if (k === "u") save({ verdict: null });
    else if (k === "f") save({ favourite: !(verdicts[current] && verdicts[current].favourite) });
    else if (k === "n") { notes.focus(); e.preventDefault(); }
    else return;
    e.preventDefault();
  });
  notes.disabled = !reviewing;
  say(reviewing ? "reviewing: verdicts are saved to review.jsonl" : "read-only (opened from disk)");
  apply();
  select(shown.length ? shown[0] : null, false);
})();
"""
