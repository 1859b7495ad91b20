"""``flakehunter new-plugin NAME --kind material|detector|stage|camera``: scaffold an installable plugin package.

The package it writes (``DIR/flakehunter-NAME/``) installs with ``pip install -e``, registers through the
``flakehunter`` entry point, and ships tests that pass at once with the contract suites and fixtures of
`flakehunter.testing` (docs/plugin-authoring.md). The files come from the templates in
``flakehunter/templates/`` (``common/`` plus one folder per kind): ``${...}`` placeholders are filled in, a
``MODULE`` path segment becomes the package's module name, and ``.tmpl`` is dropped.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated

import typer

from flakehunter.cli._common import reports_errors

KINDS = ("material", "detector", "stage", "camera")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_PREFIX = "flakehunter-"


def register(app: typer.Typer) -> None:
    app.command("new-plugin")(new_plugin)


@dataclass(frozen=True)
class PluginNames:
    """The names a plugin goes by: its registry/entry-point name, distribution, module and class prefix."""

    name: str
    dist: str
    module: str
    cls: str

    @classmethod
    def from_argument(cls, text: str) -> PluginNames:
        """``mote2`` or ``flakehunter-mote2`` -> mote2, flakehunter-mote2, flakehunter_mote2, Mote2."""
        from flakehunter.errors import InputError

        name = text.strip()
        if name.startswith(_PREFIX):
            name = name[len(_PREFIX):]
        if not _NAME.match(name):
            raise InputError(
                f"NAME: {text!r} is not a plugin name: use lower-case letters, digits, '-' and '_', starting with "
                "a letter (e.g. mote2, acme-stage)"
            )
        parts = re.split(r"[-_]", name)
        return cls(
            name=name,
            dist=f"{_PREFIX}{name}",
            module="flakehunter_" + name.replace("-", "_"),
            cls="".join(p[:1].upper() + p[1:] for p in parts if p),
        )


def _template_files(kind: str) -> dict[str, Traversable]:
    """Relative output path (with placeholders) -> template file: ``common/`` overlaid by the kind's folder."""
    root = resources.files("flakehunter") / "templates"
    files: dict[str, Traversable] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".tmpl"):
                files[prefix + entry.name[: -len(".tmpl")]] = entry

    for part in ("common", kind):
        walk(root / part, "")
    return files


def render_plugin(names: PluginNames, kind: str, target: Path, *, display: str | None = None) -> list[Path]:
    """Write the ``kind`` package for ``names`` into the new folder ``target``; return the files written."""
    from flakehunter import __version__

    values = {
        "name": names.name,
        "dist": names.dist,
        "module": names.module,
        "cls": names.cls,
        "upper": names.name.upper(),
        "display": display or names.name,
        "kind": kind,
        "description": f"flakehunter plugin: the {kind} {display or names.name}",
        "flakehunter_version": __version__,
    }
    written = []
    for relative, template in _template_files(kind).items():
        path = target / "/".join(names.module if part == "MODULE" else part for part in relative.split("/"))
        text = string.Template(template.read_text(encoding="utf-8")).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


@reports_errors
def new_plugin(
    name: Annotated[str, typer.Argument(help="Plugin name, e.g. mote2 (the package is flakehunter-NAME).",
                                        show_default=False)],
    kind: Annotated[str, typer.Option("--kind", "-k", help="What it adds: material, detector, stage or camera.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create the package folder in.")] = Path("."),
    display: Annotated[
        str | None, typer.Option("--display-name", help="How people write the material (e.g. MoTe2).")
    ] = None,
) -> None:
    """Scaffold an installable plugin package whose tests pass at once (docs/plugin-authoring.md)."""
    from flakehunter.errors import InputError
    from flakehunter.registry import get_registry

    if kind not in KINDS:
        raise InputError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    names = PluginNames.from_argument(name)
    registry = get_registry()
    if names.name in registry.names(kind):
        source = registry.source(kind, names.name)
        raise InputError(
            f"NAME: {kind} '{names.name}' is already registered by {source['package']} (plugin "
            f"'{source['plugin']}'); choose another name"
        )
    target = out / names.dist
    if target.exists():
        raise InputError(f"--out: {target} already exists; choose another folder or name")
    written = render_plugin(names, kind, target, display=display)
    typer.echo(f"Created {target} ({kind} plugin '{names.name}', {len(written)} files). Next:")
    typer.echo(f"  pip install -e {target}")
    typer.echo(f"  pytest {target}")
    typer.echo(f"  flakehunter plugins          # lists '{names.name}'")
