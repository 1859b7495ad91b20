"""One-line messages for pydantic validation errors: the file, the dotted field, what was expected."""

from __future__ import annotations

import math
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from flakehunter.config_yaml import MAX_YAML_DEPTH
from flakehunter.errors import ConfigError, short_repr


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model in an annotation (``Model``, ``Model | None``), if any."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), None)


def _annotation_at(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The type annotation of the value ``loc`` points to, or None where it cannot tell."""
    current: Any = model
    for item in loc:
        current = _bare(current)
        if isinstance(item, str):
            m = _model_in(current)
            if m is None or item not in m.model_fields:
                return None
            current = m.model_fields[item].annotation
            continue
        origin, args = get_origin(current), get_args(current)
        if args and (origin is list or (origin is tuple and args[-1] is Ellipsis)):
            current = args[0]
        elif origin is tuple and item < len(args):
            current = args[item]
        else:
            return None
    return _bare(current)


def _bare(annotation: Any) -> Any:
    """``X`` for ``Annotated[X, ...]``; anything else unchanged."""
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the model that ``loc`` (minus its last item) points into."""
    current = _model_in(_annotation_at(model, loc[:-1]))
    return sorted(current.model_fields) if current is not None else None


def _expected_list(annotation: Any) -> str | None:
    """'a list of 2 numbers' for a fixed-length tuple annotation; None for anything else."""
    args = tuple(_bare(a) for a in get_args(annotation))
    if get_origin(annotation) is not tuple or not args or Ellipsis in args:
        return None
    numbers = all(a in (int, float) for a in args)
    return f"a list of {len(args)} {'numbers' if numbers else 'values'}"


def format_validation_error(
    exc: ValidationError, path: str | Path | None, model: type[BaseModel], prefix: str = ""
) -> ConfigError:
    """Turn the first pydantic error into a one-line `ConfigError` naming file and field."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    # Union members and "after" validators add their own names to loc; drop those that are not fields.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "tuple["))))
    field = prefix + _field_path(loc) if loc else prefix.rstrip(".") or None
    kind = err["type"]
    got = short_repr(err.get("input"))
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return ConfigError(path, field, f"unknown key{hint}")
    if kind == "missing" and loc and isinstance(loc[-1], int):
        # pydantic reports a short tuple as its first missing item; name the list instead.
        expected = _expected_list(_annotation_at(model, loc[:-1])) or "more items"
        return ConfigError(path, prefix + _field_path(loc[:-1]), f"expected {expected}, got {got}")
    if kind == "missing":
        return ConfigError(path, field, "required field is missing")
    if kind in ("tuple_type", "too_long") and (listed := _expected_list(_annotation_at(model, loc))):
        return ConfigError(path, field, f"expected {listed}, got {got}")
    if kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        limit = err["ctx"]["min_length" if kind == "too_short" else "max_length"]
        return ConfigError(path, field, f"expected {bound} {limit} items, got {err['ctx']['actual_length']}: {got}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return ConfigError(path, field, f"expected a section of key: value pairs, got {got}")
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    else:
        message = message[0].lower() + message[1:]
        if "input" in err and not isinstance(err["input"], dict):
            message += f", got {got}"
    return ConfigError(path, field, message)


def _number_problem(
    raw: Any, value: Any, loc: tuple[Any, ...] = (), depth: int = 0
) -> tuple[tuple[Any, ...], str] | None:
    """The first number in a validated ``value`` that is not finite, or that pydantic made from a
    ``true``/``false`` (a number expected) or from a float (an integer expected), with its location.

    ``raw`` is what was validated, walked alongside ``value``; this catches what a plugin's own
    ``Options`` model lets through (it need not forbid NaN or bools).
    """
    if depth > 2 * MAX_YAML_DEPTH:
        return None
    if isinstance(value, BaseModel):
        if not isinstance(raw, dict):
            return None
        for name, info in type(value).model_fields.items():
            key = info.alias or name
            if key in raw and (found := _number_problem(raw[key], getattr(value, name), (*loc, key), depth + 1)):
                return found
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return loc, f"expected a finite number, got {short_repr(raw)}"
        if isinstance(raw, bool):
            return loc, f"expected a number, got {raw!r}"
    elif isinstance(value, int) and isinstance(raw, bool | float):
        return loc, f"expected an integer, got {short_repr(raw)}"
    elif isinstance(value, dict) and isinstance(raw, dict):
        for key, item in value.items():
            if key in raw and (found := _number_problem(raw[key], item, (*loc, key), depth + 1)):
                return found
    elif isinstance(value, list | tuple) and isinstance(raw, list | tuple) and len(value) == len(raw):
        for i, (r, v) in enumerate(zip(raw, value, strict=True)):
            if found := _number_problem(r, v, (*loc, i), depth + 1):
                return found
    return None


def check_numbers(raw: Any, value: Any, path: str | Path | None, prefix: str = "") -> None:
    if found := _number_problem(raw, value):
        loc, message = found
        raise ConfigError(path, (prefix + _field_path(loc)) if loc else prefix.rstrip(".") or None, message)


