"""The shape of the code: small modules, a core that never imports a built-in plugin, derived packages."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Folders installed as flakehunter.<name> (setup.py, pyproject's package-dir).
MAPPED = {"plugins": "flakehunter.plugins", "hardware": "flakehunter.hardware"}
MAX_MODULE_LINES = 600


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(
    "path", python_files("flakehunter", "plugins", "hardware"), ids=lambda p: str(p.relative_to(REPO))
)
def test_no_module_is_over_600_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(REPO)} has {lines} lines; split it by concept"


def test_the_core_never_imports_a_built_in_plugin() -> None:
    """flakehunter/ talks to plugins only through the registry; their helpers live with them."""
    offenders = {}
    for path in python_files("flakehunter"):
        bad = sorted(m for m in imported_modules(path) if m.startswith(tuple(f"{v}." for v in MAPPED.values()))
                     or m in MAPPED.values())
        if bad:
            offenders[str(path.relative_to(REPO))] = bad
    assert offenders == {}


def test_the_import_check_catches_a_plugin_import(tmp_path: Path) -> None:
    """The check above can fail: a lazy import inside a function is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from flakehunter.plugins.contrast.detector import ContrastDetector\n")
    assert "flakehunter.plugins.contrast.detector" in imported_modules(sample)


def test_packages_are_derived_from_the_folders() -> None:
    """Every folder with an __init__.py is a package of the distribution; none is listed by hand."""
    assert "packages" not in (REPO / "pyproject.toml").read_text(encoding="utf-8").split("[tool.setuptools]")[1].split(
        "[tool.setuptools.package-data]")[0].replace("package-dir", ""), "the list lives in setup.py, derived"
    sys.path.insert(0, str(REPO))
    try:
        from setuptools import find_packages

        expected = set(find_packages(str(REPO), include=["flakehunter", "flakehunter.*"]))
        for folder in MAPPED:
            expected |= {f"flakehunter.{p}" for p in find_packages(str(REPO), include=[folder, f"{folder}.*"])}
    finally:
        sys.path.remove(str(REPO))
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in REPO.glob("**/__init__.py")
               if not any(part.startswith(".") or part in ("build", "tests", "examples") for part in p.parts)}
    on_disk = {f"flakehunter.{name}" if name.split(".")[0] in MAPPED else name for name in on_disk}
    assert expected == on_disk
    import importlib

    for package in sorted(expected):
        importlib.import_module(package)  # each one imports as installed
