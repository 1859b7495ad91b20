"""The report page in a real browser: the system's headless Chromium, driven by selenium.

Opened from disk it must run without console errors, show every candidate, place the overview markers
on their flakes, and filter; served by `flakehunter review`, its keys must record verdicts that are in
review.jsonl and on the page after a reload. Skips (saying why) where Chromium or selenium is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import Point

from flakehunter.analysis.evaluation import load_truth, match
from flakehunter.candidates import read_candidates
from flakehunter.report.files import INDEX, OVERVIEW_JSON
from flakehunter.report.server import ReviewServer
from flakehunter.report.verdicts import read_verdicts
from flakehunter.run.layout import RunDirectory
from tests.test_report import overview_polygon
from tests.test_report_fixtures import (
    CHROMEDRIVER,
    CHROMIUM,
    chromium,
    console_errors,
    copy_run,
    page_data,
    small_scan_run,
)

if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
    pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); "
                "apt-get install -y chromium chromium-driver", allow_module_level=True)
pytest.importorskip("selenium", reason="the browser tests drive Chromium with selenium (pip install selenium)")
from selenium.webdriver.support.ui import WebDriverWait  # only once selenium is known to be there


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_scan_run(tmp_path_factory)


def visible_cards(driver: Any) -> list[int]:
    return [int(e.get_attribute("data-id")) for e in driver.find_elements("css selector", "#gallery .card")
            if e.is_displayed()]


def visible_markers(driver: Any) -> list[int]:
    return [int(m.get_attribute("data-id")) for m in driver.find_elements("css selector", "#overview-marks circle")
            if m.value_of_css_property("display") != "none"]


def click(driver: Any, selector: str) -> None:
    element = driver.find_element("css selector", selector)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def set_value(driver: Any, element_id: str, value: str) -> None:
    driver.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                          "e.dispatchEvent(new Event('input'));", element_id, value)


def test_page_from_disk_shows_every_candidate_on_its_flake_and_filters(scan_run: Path) -> None:
    run = RunDirectory(scan_run)
    candidates = read_candidates(run.candidates_jsonl)
    by_id = {c.id: c for c in candidates}
    with chromium() as driver:
        driver.get((run.report / INDEX).as_uri())
        assert console_errors(driver) == []
        assert sorted(visible_cards(driver)) == sorted(by_id)
        assert driver.find_element("id", "shown").text == f"showing {len(candidates)} of {len(candidates)} candidates"
        # Every picture decodes (the gallery loads lazily; ask for all of them now).
        driver.execute_script("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete)"))
        assert driver.execute_script("return Array.from(document.images).every(i => i.naturalWidth > 0)")

        # Markers where the browser drew them, in overview pixels, against the simulator's truth.
        drawn = driver.execute_script("""
            const img = document.getElementById('overview-image').getBoundingClientRect();
            const w = document.getElementById('overview-image').naturalWidth;
            const h = document.getElementById('overview-image').naturalHeight;
            return Array.from(document.querySelectorAll('#overview-marks circle')).map(c => {
              const r = c.getBoundingClientRect();
              return [Number(c.dataset.id), ((r.left + r.right) / 2 - img.left) * w / img.width - 0.5,
                      ((r.top + r.bottom) / 2 - img.top) * h / img.height - 0.5];
            });""")
        assert sorted(i for i, _, _ in drawn) == sorted(c.id for c in candidates if c.positioned)
        georef = json.loads((run.report / OVERVIEW_JSON).read_text())
        m = match(candidates, load_truth(run.truth), tolerance_um=3.0)
        flake_of = {candidates[ci].id: m.truth[fi].polygon for ci, fi in enumerate(m.candidate_flake)
                    if fi is not None}
        assert len(flake_of) >= 10
        for cid, col, row in drawn:
            if cid not in flake_of:
                continue
            flake = flake_of[cid]
            parts = list(flake.geoms) if flake.geom_type == "MultiPolygon" else [flake]
            off = min(overview_polygon(p, georef).distance(Point(col, row)) for p in parts)
            assert off <= 2.0, f"marker {cid} drawn {off:.1f} overview px off its flake"

        # Filters change what is shown: one class off, then a score floor, then an area floor.
        counts: dict[str, int] = {}
        for c in candidates:
            counts[c.layer_class] = counts.get(c.layer_class, 0) + 1
        common = max(counts, key=lambda k: counts[k])
        click(driver, f'#filters input[data-class="{common}"]')
        assert sorted(visible_cards(driver)) == sorted(c.id for c in candidates if c.layer_class != common)
        assert sorted(visible_markers(driver)) == sorted(c.id for c in candidates if c.layer_class != common)
        click(driver, f'#filters input[data-class="{common}"]')
        set_value(driver, "f-min-score", "0.9")
        assert sorted(visible_cards(driver)) == sorted(c.id for c in candidates if c.score >= 0.9)
        set_value(driver, "f-min-score", "0")
        median_area = sorted(c.area_um2 for c in candidates)[len(candidates) // 2]
        set_value(driver, "f-min-area", str(median_area))
        assert sorted(visible_cards(driver)) == sorted(c.id for c in candidates if c.area_um2 >= median_area)
        # Sorted by score, best first.
        set_value(driver, "f-min-area", "")
        shown = visible_cards(driver)
        assert [by_id[i].score for i in shown] == sorted((c.score for c in candidates), reverse=True)

        # Opened from disk the page is read-only: a verdict key says so and writes nothing.
        driver.find_element("tag name", "body").send_keys("g")
        assert "read-only" in driver.find_element("id", "review-status").text
        assert console_errors(driver) == []
    assert not run.review.exists()


def test_review_keys_write_verdicts_that_survive_a_reload(scan_run: Path, tmp_path: Path) -> None:
    run = RunDirectory(copy_run(scan_run, tmp_path / "run"))
    order = [e["id"] for e in sorted(page_data(run.report / INDEX)["candidates"], key=lambda e: (-e["score"], e["id"]))]
    with chromium() as driver, ReviewServer(run.path) as server:
        driver.get(server.url)
        status = driver.find_element("id", "review-status")
        assert "reviewing" in status.text
        body = driver.find_element("tag name", "body")

        def press(keys: str, expect: str) -> None:
            body.send_keys(keys)
            WebDriverWait(driver, 10).until(lambda d: expect in status.text)

        press("g", f"saved #{order[0]} good")
        body.send_keys("j")
        press("b", f"saved #{order[1]} bad")
        body.send_keys("j")
        press("f", f"saved #{order[2]} ★")
        body.send_keys("k")
        body.send_keys("n")
        notes = driver.find_element("id", "review-notes")
        notes.send_keys("torn edge, skip")
        driver.execute_script("document.getElementById('review-notes').blur()")
        WebDriverWait(driver, 10).until(lambda d: (v := read_verdicts(run.review).get(order[1])) is not None
                                        and v.note == "torn edge, skip")
        verdicts = read_verdicts(run.review)
        assert verdicts[order[0]].verdict == "good"
        assert verdicts[order[1]].verdict == "bad" and verdicts[order[1]].note == "torn edge, skip"
        assert verdicts[order[2]].favourite and verdicts[order[2]].verdict is None
        assert len(run.review.read_text().splitlines()) == 4  # appended, one line per change

        driver.refresh()
        card = driver.find_element("id", f"cand-{order[0]}")
        assert card.find_element("css selector", ".badge.good").text == "good"
        assert driver.find_element("id", f"cand-{order[1]}").find_element("css selector", ".notes").text == \
            "torn edge, skip"
        assert "favourite" in driver.find_element("id", f"cand-{order[2]}").text
        click(driver, "#f-review option[value=good]")
        assert visible_cards(driver) == [order[0]]
        assert console_errors(driver) == []
    # Stopping the server wrote the verdicts into the report on disk too.
    assert '"verdict":"good"' in (run.report / INDEX).read_text(encoding="utf-8")
