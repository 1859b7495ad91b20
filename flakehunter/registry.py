"""Plugin discovery and the registry of stages, cameras, detectors and materials.

Every plugin, built-in or third-party, is found the same way: an entry point in the
``flakehunter`` group. Loading is defensive (a plugin that raises on import is reported and
skipped) unless ``FLAKEHUNTER_STRICT_PLUGINS=1``, which re-raises so that plugin authors see
their traceback. ``FLAKEHUNTER_LOAD_PLUGINS=name,name`` limits which entry points load (an empty
value loads none), which helps when one misbehaves.

Every hook is called through pluggy's hook callers, one plugin at a time (a subset hook caller
per plugin), so that hook wrappers and tracing work, each ``register`` callback knows which plugin
and package it serves, and one plugin's exception never stops another's. A hook implementation
whose name matches no hook spec (a typo) is reported, as pluggy's ``check_pending`` would.

Every problem is one line that names the plugin, its package and what was wrong: an import error with the
file and line it came from, a factory that cannot be called as ``factory(options, context)`` or whose
``Options`` is no pydantic model, a material whose numbers are not physical, a name another package took.
A plugin may ship contract tests (entry-point group ``flakehunter_contract_tests``, same name as its
``flakehunter`` entry point, value a test package); ``flakehunter plugins --check`` runs them.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import numbers
import os
import re
import threading
import traceback
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from flakehunter import hookspecs
from flakehunter.errors import InputError, PluginError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "flakehunter"
#: Entry points naming the test package a plugin ships (``flakehunter plugins --check`` runs it).
CONTRACT_TESTS_GROUP = "flakehunter_contract_tests"
STRICT_ENV = "FLAKEHUNTER_STRICT_PLUGINS"
LOAD_ENV = "FLAKEHUNTER_LOAD_PLUGINS"
BUILTIN_PACKAGE = "flakehunter"

#: Kind of contribution -> the register hook that supplies it.
KINDS = {
    "stage": "register_stages",
    "camera": "register_cameras",
    "detector": "register_detectors",
    "material": "register_materials",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
#: Entry-point name -> (distribution, version) of every loaded plugin.
_DISTS: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin: its entry-point name, distribution and version."""

    name: str
    package: str
    version: str
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class Contribution:
    """A named stage, camera, detector or material, and who supplied it."""

    kind: str
    name: str
    obj: Any
    plugin: str
    package: str


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that failed to load, or a contribution the registry rejected."""

    plugin: str
    package: str
    message: str


@dataclass
class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    plugins: list[PluginInfo] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)
    contributions: dict[str, dict[str, Contribution]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )

    def names(self, kind: str) -> list[str]:
        return sorted(self.contributions[kind])

    def get(self, kind: str, name: str) -> Contribution:
        """The contribution called ``name``; an InputError lists what exists otherwise."""
        try:
            return self.contributions[kind][name]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none"
            raise InputError(f"unknown {kind} '{name}' (available: {available})") from None

    def material(self, name: str) -> Any:
        return self.get("material", name).obj

    def source(self, kind: str, name: str) -> dict[str, str]:
        """Which plugin and package supplied ``name`` (for manifests); "?" where nothing did."""
        c = self.contributions[kind].get(name)
        return {"name": name, "plugin": c.plugin if c else "?", "package": c.package if c else "?"}

    def plugin_versions(self) -> dict[str, str]:
        """Entry-point name -> "package version" of every loaded plugin."""
        return {p.name: f"{p.package} {p.version}".strip() for p in self.plugins}

    def add(self, kind: str, plugin: str, package: str, name: str, obj: Any) -> None:
        """The body of every ``register`` callback: validate, refuse clashes, record the source."""
        if not isinstance(name, str) or not _NAME.match(name):
            self._reject(plugin, package, f"{kind} name {name!r} is not a lower-case identifier")
            return
        if kind == "material":
            if getattr(obj, "name", None) != name:
                self._reject(plugin, package, f"material '{name}' must be a Material named '{name}'")
                return
            problem = material_problem(obj)
            if problem is not None:
                self._reject(plugin, package, f"material '{name}' is malformed: {problem}")
                return
        elif not callable(obj):
            self._reject(plugin, package, f"{kind} '{name}' must be a callable factory")
            return
        else:
            problem = factory_problem(obj)
            if problem is not None:
                self._reject(plugin, package, f"{kind} '{name}': {problem}")
                return
        existing = self.contributions[kind].get(name)
        if existing is not None:
            self._reject(
                plugin,
                package,
                f"{kind} '{name}' is already registered by {existing.package} "
                f"(plugin '{existing.plugin}'); ignored",
            )
            return
        self.contributions[kind][name] = Contribution(kind, name, obj, plugin, package)

    def _reject(self, plugin: str, package: str, message: str) -> None:
        if _strict():
            raise PluginError(f"plugin '{plugin}' ({package}): {message}")
        log.warning("plugin '%s' (%s): %s", plugin, package, message)
        self.problems.append(PluginProblem(plugin, package, message))


#: Wavelengths (nm) at which a material's index is probed when it registers.
_PROBE_NM = (450.0, 550.0, 650.0)


def material_problem(material: Any) -> str | None:
    """What is wrong with a registered material, in a few words; None when it looks physical.

    Checks the fields of `flakehunter.materials.Material` and probes its index at 450, 550 and 650 nm for
    1 and 2 layers: finite, n > 0, κ >= 0 (flakehunter writes n + iκ; a table in the n - iκ convention
    shows up here as κ < 0).
    """
    import numpy as np

    from flakehunter.materials import Material

    if not isinstance(material, Material):
        return f"expected a flakehunter.materials.Material, got {type(material).__name__}"
    if not isinstance(material.display_name, str) or not material.display_name.strip():
        return "display_name is empty"
    thickness = material.layer_thickness_nm
    if not isinstance(thickness, numbers.Real) or not math.isfinite(thickness) or not 0 < thickness <= 10:
        return f"layer_thickness_nm must be a thickness in nm in (0, 10], got {thickness!r}"
    symmetry = material.edge_symmetry_deg
    if not isinstance(symmetry, numbers.Real) or not math.isfinite(symmetry) or not 0 < symmetry <= 360:
        return f"edge_symmetry_deg must be in (0, 360], got {symmetry!r}"
    layers = material.target_layers
    if not layers or not all(isinstance(n, numbers.Integral) and n >= 1 for n in layers):
        return f"target_layers must list layer counts >= 1, got {layers!r}"
    if not callable(material.index):
        return "index must be a function index(wavelength_nm, layers) -> n + iκ"
    probe = np.array(_PROBE_NM)
    for n_layers in (1, 2):
        try:
            value = np.asarray(material.index(probe, n_layers), dtype=complex)
        except Exception as exc:
            return f"index(wavelength_nm, {n_layers}) raised {type(exc).__name__}: {exc}"
        if value.shape != probe.shape:
            return f"index(wavelength_nm, {n_layers}) returned shape {value.shape} for {probe.shape} wavelengths"
        if not np.all(np.isfinite(value)):
            return f"index(wavelength_nm, {n_layers}) is not finite at {_PROBE_NM} nm: {value}"
        if np.any(value.real <= 0):
            return f"index(wavelength_nm, {n_layers}) has n <= 0 at {_PROBE_NM} nm: {value}"
        if np.any(value.imag < 0):
            return (f"index(wavelength_nm, {n_layers}) has κ < 0 ({value}); flakehunter uses n + iκ with κ >= 0 "
                    "absorbing: negate the imaginary part of an n - iκ table")
    return None


def factory_problem(factory: Any) -> str | None:
    """What is wrong with a stage, camera or detector factory; None when it can be called as
    ``factory(options, context)`` and its ``Options`` (if any) is a pydantic model class."""
    from pydantic import BaseModel

    label = getattr(factory, "__qualname__", None) or type(factory).__name__
    options = getattr(factory, "Options", None)
    if options is not None and not (isinstance(options, type) and issubclass(options, BaseModel)):
        return f"{label}.Options must be a pydantic model class, got {options!r}"
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None  # a builtin or C callable: nothing to check
    try:
        signature.bind(None, None)
    except TypeError:
        params = ", ".join(str(p.replace(annotation=inspect.Parameter.empty)) for p in signature.parameters.values())
        return f"factory {label}({params}) cannot be called as factory(options, context)"
    return None


def _origin(exc: BaseException) -> str:
    """`` (at FILE:LINE)`` of the innermost frame outside importlib, where a plugin's import failed."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {os.path.basename(exc.filename)}:{exc.lineno})"
    if not frames:
        return ""
    return f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})"


def contract_tests() -> dict[str, tuple[str, str]]:
    """Plugin name -> (test package, distribution) of every ``flakehunter_contract_tests`` entry point."""
    out: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=CONTRACT_TESTS_GROUP):
        out.setdefault(ep.name, (ep.value, _distribution(ep)[0]))
    return out


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def allowed_plugins() -> set[str] | None:
    """The entry-point names ``FLAKEHUNTER_LOAD_PLUGINS`` allows; None when it is not set (all load)."""
    return _allowed()


def _allowed() -> set[str] | None:
    value = os.environ.get(LOAD_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _distribution(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", ""
    return dist.metadata["Name"] or dist.name, dist.version


def load_entry_points(pm: pluggy.PluginManager, problems: list[PluginProblem]) -> None:
    """Register every allowed entry point of the ``flakehunter`` group with ``pm``.

    One broken plugin never takes the program down: its import error is recorded in ``problems``
    and the others load (kedro's ``_safe_load_entry_point``), unless strict mode is on.
    """
    allowed = _allowed()
    # Built-ins first, then third-party plugins by name: on a name clash the first registration
    # wins, so a third-party plugin can never take over a built-in name.
    for ep in sorted(
        entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (_distribution(e)[0] != BUILTIN_PACKAGE, e.name)
    ):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.has_plugin(ep.name):
            continue
        package, _ = _distribution(ep)
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:
            if _strict():
                raise
            message = f"failed to load: {type(exc).__name__}: {exc}{_origin(exc)}"
            log.warning("plugin '%s' (%s) %s; skipped", ep.name, package, message)
            problems.append(PluginProblem(ep.name, package, message))
            continue
        _DISTS[ep.name] = _distribution(ep)


def plugin_hook(pm: pluggy.PluginManager, hook_name: str, plugin: object) -> pluggy.HookCaller:
    """The hook caller of ``hook_name`` restricted to one plugin's implementation, inside every wrapper."""
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    wrapping = [i.plugin for i in impls if i.hookwrapper or i.wrapper]
    others = [p for p in pm.get_plugins() if p is not plugin and not any(p is w for w in wrapping)]
    return pm.subset_hook_caller(hook_name, remove_plugins=others)


def _implementers(pm: pluggy.PluginManager, hook_name: str) -> list[tuple[str, object]]:
    """(plugin name, plugin) of every implementation of ``hook_name`` (wrappers aside), in registration order."""
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    return [(i.plugin_name, i.plugin) for i in impls if not (i.hookwrapper or i.wrapper)]


def check_pending(pm: pluggy.PluginManager, problems: list[PluginProblem]) -> None:
    """Report every hook implementation that matches no hook spec (pluggy's ``check_pending``, all at once)."""
    for name in list(vars(pm.hook)):
        if name.startswith("_"):
            continue
        caller = getattr(pm.hook, name)
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            package, _ = _DISTS.get(impl.plugin_name, ("unknown", ""))
            message = f"implements unknown hook '{name}' (misspelt? see flakehunter.hookspecs)"
            if _strict():
                pm.check_pending()  # raises pluggy's PluginValidationError
            problem = PluginProblem(impl.plugin_name, package, message)
            if problem not in problems:
                log.warning("plugin '%s' (%s) %s", impl.plugin_name, package, message)
                problems.append(problem)


def build_registry(pm: pluggy.PluginManager, problems: list[PluginProblem] | None = None) -> Registry:
    """Call every register hook, one plugin at a time through its own hook caller, and collect the results."""
    registry = Registry(problems=list(problems or []))
    for kind, hook_name in KINDS.items():
        for plugin_name, plugin in _implementers(pm, hook_name):  # registration order (pluggy calls LIFO)
            package, _ = _DISTS.get(plugin_name, ("unknown", ""))
            register = functools.partial(registry.add, kind, plugin_name, package)
            try:
                plugin_hook(pm, hook_name, plugin)(register=register)
            except Exception as exc:
                if _strict():
                    raise
                registry.problems.append(
                    PluginProblem(plugin_name, package, f"{hook_name} raised {type(exc).__name__}: {exc}")
                )
    for name, plugin in pm.list_name_plugin():
        if plugin is hookspecs:
            continue
        package, version = _DISTS.get(name, ("unknown", ""))
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or []))
        registry.plugins.append(PluginInfo(name, package, version, hooks))
    registry.plugins.sort(key=lambda p: p.name)
    return registry


def broadcast(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> None:
    """Call every implementation of a lifecycle hook, plugin by plugin; one that raises is logged, not fatal."""
    for plugin_name, plugin in _implementers(pm, hook_name):
        try:
            plugin_hook(pm, hook_name, plugin)(**kwargs)
        except Exception:
            if _strict():
                raise
            log.exception("plugin '%s' failed in %s", plugin_name, hook_name)


def add_commands(pm: pluggy.PluginManager, cli: Any, problems: list[PluginProblem]) -> None:
    """Let every plugin add its commands to ``cli`` (a typer app); a name clash is that plugin's problem."""

    def names() -> set[str]:
        return {c.name or c.callback.__name__.replace("_", "-") for c in cli.registered_commands if c.callback} | {
            g.name for g in cli.registered_groups if g.name
        }

    for plugin_name, plugin in _implementers(pm, "register_commands"):
        package, _ = _DISTS.get(plugin_name, ("unknown", ""))
        before_commands, before_groups = list(cli.registered_commands), list(cli.registered_groups)
        taken = names()
        try:
            plugin_hook(pm, "register_commands", plugin)(cli=cli)
        except Exception as exc:
            if _strict():
                raise
            cli.registered_commands[:], cli.registered_groups[:] = before_commands, before_groups
            message = f"register_commands raised {type(exc).__name__}: {exc}"
            problems.append(PluginProblem(plugin_name, package, message))
            continue
        added = [c for c in cli.registered_commands if c not in before_commands]
        added_groups = [g for g in cli.registered_groups if g not in before_groups]
        clash = sorted(
            {c.name or (c.callback.__name__.replace("_", "-") if c.callback else "") for c in added} & taken
            | {g.name for g in added_groups if g.name} & taken
        )
        if clash:
            message = f"command(s) {', '.join(clash)} already exist; ignored"
            if _strict():
                raise PluginError(f"plugin '{plugin_name}' ({package}): {message}")
            log.warning("plugin '%s' (%s): %s", plugin_name, package, message)
            problems.append(PluginProblem(plugin_name, package, message))
            cli.registered_commands[:], cli.registered_groups[:] = before_commands, before_groups


_lock = threading.RLock()  # re-entrant: a register hook may import a module that asks for the registry
_pm: pluggy.PluginManager | None = None
_registry: Registry | None = None
_load_problems: list[PluginProblem] = []


def _plugin_manager() -> pluggy.PluginManager:
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        _load_problems.clear()
        load_entry_points(pm, _load_problems)
        check_pending(pm, _load_problems)
        _pm = pm
    return _pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every allowed entry point loaded (no register hook called yet)."""
    with _lock:
        return _plugin_manager()


def get_registry() -> Registry:
    """The registry built from the process-wide plugin manager (register hooks run on the first call)."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = build_registry(_plugin_manager(), _load_problems)
        return _registry


def register_cli_commands(cli: Any) -> None:
    """Let the loaded plugins add their commands to the ``flakehunter`` typer app."""
    pm = get_plugin_manager()
    add_commands(pm, cli, _load_problems)  # not under the lock: a plugin's command module may import the CLI
    if _registry is not None:
        _registry.problems[:] = [*_registry.problems, *(p for p in _load_problems if p not in _registry.problems)]


def add_plugin(plugin: object, name: str, package: str = "local", version: str = "") -> Registry:
    """Register an in-process plugin object (scripts, notebooks, tests) and rebuild the registry."""
    global _registry
    with _lock:
        pm = _plugin_manager()
        pm.register(plugin, name=name)
        _DISTS[name] = (package, version)
        check_pending(pm, _load_problems)
        _registry = build_registry(pm, _load_problems)
        return _registry


def reset() -> None:
    """Forget the loaded plugins (tests that change the environment call this)."""
    global _pm, _registry
    with _lock:
        _pm = None
        _registry = None
        _DISTS.clear()
        _load_problems.clear()
