"""Shared helpers for the report tests (this module holds no tests).

`small_scan_run` makes one small simulated scan (tests/conftest.py SMALL_SCAN) with its report per test
session; tests that change a run (verdicts, exports) work on a copy (`copy_run`). `chromium` opens the
system's headless Chromium through selenium, and skips (with the reason) where either is missing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SMALL_SCAN

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1400,1000")

_RUNS: dict[str, Path] = {}


def small_scan_run(factory: pytest.TempPathFactory) -> Path:
    """The run directory of a ~20-tile simulated scan, with its report written; shared, so read-only."""
    if "scan" not in _RUNS:
        from flakehunter.report import write_report
        from flakehunter.scan import Scan

        base = factory.mktemp("report-scan")
        config = base / "scan.yaml"
        config.write_text(yaml.safe_dump(SMALL_SCAN), encoding="utf-8")
        summary = Scan(config, base / "run", device="cpu").run()
        # (completed_with_errors too: the report must show a run whatever its detector went through)
        assert summary["status"] in ("completed", "completed_with_errors") and summary["candidates"] >= 10
        write_report(base / "run")
        _RUNS["scan"] = base / "run"
    return _RUNS["scan"]


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a run directory (tiles included) that a test may change."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".flakehunter.*"))
    return dest


def page_data(index: Path) -> dict[str, Any]:
    """The candidates and classes the page carries (its fh-data block)."""
    text = index.read_text(encoding="utf-8")
    start = text.index('<script id="fh-data" type="application/json">') + len(
        '<script id="fh-data" type="application/json">')
    return json.loads(text[start:text.index("</script>", start)])  # type: ignore[no-any-return]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (the system's, driven by the system's chromedriver) with a fresh profile."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); "
                    "apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fh-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The browser console's errors since the last call."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
