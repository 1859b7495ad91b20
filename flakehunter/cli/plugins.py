"""``flakehunter plugins``: what is installed, from which package, and what it registered.

``--check`` is for plugin authors and for CI: every plugin is loaded, every problem (import error, rejected
contribution, misspelt hook, command clash) is a failure, and every plugin that ships contract tests
(entry-point group ``flakehunter_contract_tests``, see docs/plugin-authoring.md) has them run by pytest
against the installed package. Exit 0 when all is well, 1 otherwise.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from flakehunter.cli._common import reports_errors

#: Longest a plugin's contract tests may run under ``--check`` (seconds).
CHECK_TIMEOUT_S = 900


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


@reports_errors
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Fail on any plugin problem and run every plugin's shipped contract tests.")
    ] = False,
    tests: Annotated[bool, typer.Option("--tests/--no-tests", help="With --check: run the contract tests.")] = True,
) -> None:
    """List every plugin with its package, version, hooks and what it registered."""
    import logging

    from flakehunter.registry import get_registry

    if check:
        logging.getLogger("flakehunter.registry").setLevel(logging.ERROR)  # problems are reported below, once
    registry = get_registry()
    registered: dict[str, list[str]] = {}
    for kind, contributions in registry.contributions.items():
        for name, c in sorted(contributions.items()):
            registered.setdefault(c.plugin, []).append(f"{kind} {name}")
    rows: list[dict[str, Any]] = [  # JSON rows
        {
            "name": p.name,
            "package": p.package,
            "version": p.version,
            "registered": registered.get(p.name, []),
            "hooks": list(p.hooks),
        }
        for p in registry.plugins
    ]
    problems = [{"plugin": p.plugin, "package": p.package, "problem": p.message} for p in registry.problems]
    if check:
        _check(rows, problems, as_json, tests)
        return
    if as_json:
        typer.echo(json.dumps({"plugins": rows, "problems": problems}, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title="flakehunter plugins")
    for column in ("plugin", "package", "version", "registered", "hooks"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["package"], r["version"], "\n".join(r["registered"]), "\n".join(r["hooks"]))
    console = Console()
    console.print(table)
    for p in problems:
        console.print(f"[yellow]problem:[/] plugin '{p['plugin']}' ({p['package']}): {p['problem']}")


def _check(rows: list[dict[str, Any]], problems: list[dict[str, str]], as_json: bool, run_tests: bool) -> None:
    """``--check``: one line per plugin (ok / FAILED / problem), contract tests run; exit 1 on any failure."""
    from flakehunter.registry import BUILTIN_PACKAGE, allowed_plugins, contract_tests

    shipped = contract_tests()
    loaded = {r["name"] for r in rows}
    allowed = allowed_plugins()
    for name, (module, package) in sorted(shipped.items()):
        if allowed is not None and name not in allowed:
            continue  # FLAKEHUNTER_LOAD_PLUGINS leaves it out
        if name not in loaded and not any(p["plugin"] == name for p in problems):
            problem = f"ships contract tests ({module}) but no 'flakehunter' entry point named '{name}'"
            problems.append({"plugin": name, "package": package, "problem": problem})
    failed = bool(problems)
    for row in rows:
        own = [p["problem"] for p in problems if p["plugin"] == row["name"]]
        row["problems"] = own
        test = shipped.get(row["name"])
        if test is None or not run_tests:
            row["tests"] = {"status": "none" if test is None else "skipped",
                            "module": None if test is None else test[0]}
        else:
            row["tests"] = run_contract_tests(row["name"], test[0])
        failed = failed or bool(own) or row["tests"]["status"] == "failed"
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "plugins": rows, "problems": problems}, indent=2))
    else:
        for row in rows:
            builtin = row["package"] == BUILTIN_PACKAGE
            verdict = "FAILED" if row["problems"] or row["tests"]["status"] == "failed" else "ok"
            what = ", ".join(row["registered"]) or "no contributions"
            tests = row["tests"]
            if tests["status"] == "none":
                note = "tests in flakehunter's own suite" if builtin else "ships no contract tests"
            elif tests["status"] == "skipped":
                note = f"contract tests {tests['module']} not run (--no-tests)"
            else:
                note = f"contract tests {tests['status']}: {tests['summary']}"
            typer.echo(f"{verdict:6} plugin '{row['name']}' ({row['package']} {row['version']}): {what}; {note}")
        for p in problems:
            typer.echo(f"FAILED plugin '{p['plugin']}' ({p['package']}): {p['problem']}")
        typer.echo("all plugins ok" if not failed else "plugin check failed")
    if failed:
        raise typer.Exit(1)


def run_contract_tests(name: str, module: str) -> dict[str, Any]:
    """Run the test package ``module`` of plugin ``name`` with pytest in a subprocess, strictly, with only that
    plugin next to the built-ins; return its status ("passed"/"failed"), summary line and output tail."""
    import os
    import subprocess
    import sys
    import tempfile
    from importlib.metadata import entry_points
    from pathlib import Path

    from flakehunter.registry import STRICT_ENV
    from flakehunter.testing.pytest_plugin import UNDER_TEST_ENV

    plugin_module = "flakehunter.testing.pytest_plugin"
    autoloaded = (not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
                  and any(ep.value == plugin_module for ep in entry_points(group="pytest11")))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--flakehunter-plugin", name,
               "--pyargs", module]
    if not autoloaded:
        command[3:3] = ["-p", plugin_module]
    env = {**os.environ, STRICT_ENV: "1", UNDER_TEST_ENV: name}
    with tempfile.TemporaryDirectory(prefix="flakehunter-check-") as folder:
        Path(folder, "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # no ini of the caller's folder
        try:
            result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                                    timeout=CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "module": module, "summary": f"timed out after {CHECK_TIMEOUT_S} s",
                    "output": ""}
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else (result.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "passed" if result.returncode == 0 else "failed", "module": module, "summary": summary,
            "output": "\n".join((result.stdout + result.stderr).splitlines()[-40:])}
