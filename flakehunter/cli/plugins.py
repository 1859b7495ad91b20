"""``flakehunter plugins``: what is installed, from which package, and what it registered."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from flakehunter.cli._common import reports_errors


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


@reports_errors
def plugins(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """List every plugin with its package, version, hooks and what it registered."""
    from flakehunter.registry import get_registry

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
