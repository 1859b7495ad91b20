"""Reading a config file's YAML, refusing at the door what would hang, exhaust memory or mislead.

Duplicate keys, documents nested deeper than `MAX_YAML_DEPTH` or expanding (through anchors) to more
than `MAX_YAML_VALUES` values, files that are missing, unreadable, not UTF-8 or larger than
`MAX_CONFIG_BYTES` are each a one-line `ConfigError` naming the file and where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flakehunter.errors import ConfigError

#: Largest config file read, in bytes (the YAML parser reads ~1 MB in a few seconds).
MAX_CONFIG_BYTES = 1024 * 1024
#: Deepest nesting of a config document (aliases included), and most values it may expand to.
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 50_000


class _Refused(Exception):
    """A YAML document refused for its shape; ``field`` is the dotted key or ``line L, column C``."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents nested deeper than `MAX_YAML_DEPTH` (before Python's
    recursion limit) or longer than `MAX_YAML_VALUES` while composing, and turns a value that cannot
    be built (an integer of 5000 digits, a 13th month) into an error at its line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self.paths: dict[int, str] = {}  # id(node) -> dotted path, set by parse_yaml after _check_document

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(self._next_event_at(), f"nested deeper than {MAX_YAML_DEPTH} levels")
            if self._nodes > MAX_YAML_VALUES:  # stop reading early: the parser takes ~1 s per 30,000 values
                raise _Refused(self._next_event_at(), f"more than {MAX_YAML_VALUES} values")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _next_event_at(self) -> str:
        """Where the next parser event starts ("line L, column C")."""
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # types-PyYAML leaves it unannotated
        return _where(event.start_mark)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, _Refused):
            raise
        except (ValueError, OverflowError, TypeError, ArithmeticError) as exc:
            where = _where(node.start_mark)
            raise _Refused(self.paths.get(id(node)) or where, f"cannot read the value at {where}: {exc}") from None


def _children(node: yaml.Node) -> list[tuple[Any, yaml.Node]]:
    """(key or index, child) of a node; a mapping's key nodes come with the key ``None``."""
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[Any, yaml.Node]] = []
        for key, value in node.value:
            out += [(None, key), (key.value if isinstance(key, yaml.ScalarNode) else "?", value)]
        return out
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return []


def _join(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)


def _check_document(root: yaml.Node) -> dict[int, str]:
    """Refuse duplicate keys, and anchors that make the document recursive, deeper than
    `MAX_YAML_DEPTH` or larger than `MAX_YAML_VALUES` values once expanded (a "billion laughs").
    Returns the dotted path of each node (by ``id``), for later messages."""
    size: dict[int, float] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    paths: dict[int, str] = {id(root): ""}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: aliases can nest deeper than Python's recursion limit
        node, done = stack.pop()
        key = id(node)
        kids = _children(node)
        if done:
            open_.discard(key)
            size[key] = 1.0 + sum(size[id(k)] for _, k in kids)  # floats: inf at worst, never an overflow error
            depth[key] = 1 + max((depth[id(k)] for _, k in kids), default=0)
            continue
        if key in size:
            continue
        path = paths[key]
        if key in open_:
            raise _Refused(path or _where(node.start_mark), f"recursive YAML alias at {_where(node.start_mark)}")
        open_.add(key)
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], Any] = {}
            for k, _ in node.value:
                if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                    continue
                if (k.tag, k.value) in seen:
                    raise _Refused(
                        _join(path, k.value),
                        f"duplicate key at {_where(k.start_mark)} (first at {_where(seen[k.tag, k.value])})",
                    )
                seen[k.tag, k.value] = k.start_mark
        stack.append((node, True))
        for name, kid in kids:
            if id(kid) not in size:
                paths.setdefault(id(kid), path if name is None else _join(path, name))
                stack.append((kid, False))
    for measure, limit, what in (
        (depth, MAX_YAML_DEPTH, f"nested deeper than {MAX_YAML_DEPTH} levels through aliases"),
        (size, MAX_YAML_VALUES, f"more than {MAX_YAML_VALUES} values (aliases counted as expanded)"),
    ):
        if measure[id(root)] > limit:
            node, path = root, ""
            while isinstance(node, yaml.MappingNode) and node.value:  # blame the key that grows too much
                named = [(n, k) for n, k in _children(node) if n is not None]
                name, kid = max(named, key=lambda nk: measure[id(nk[1])])
                if measure[id(kid)] <= limit and (path or measure is size):
                    break
                node, path = kid, _join(path, name)
            raise _Refused(path or None, what)
    return paths


def read_config_text(path: str | Path) -> str:
    """The text of a config file; missing, unreadable, too large or not UTF-8 is a one-line `ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, None, "is a folder, not a config file") from None
    except PermissionError:
        raise ConfigError(path, None, "cannot read: permission denied") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(path, None, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(path, None, f"larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, None, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None


def parse_yaml(text: str, path: str | Path | None = None) -> Any:
    """Parse one YAML document with `_ConfigLoader` and `_check_document`; errors name line and column."""
    loader: _ConfigLoader | None = None
    try:
        loader = _ConfigLoader(text)  # its reader already refuses some characters
        node = loader.get_single_node()
        if node is None:
            return None
        loader.paths = _check_document(node)
        return loader.construct_document(node)
    except _Refused as exc:
        raise ConfigError(path, exc.field, exc.message) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        raise ConfigError(
            path, f"line {line + 1}, column {column + 1}", f"YAML error: character #x{exc.character:04x} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = _where(mark) if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, where, f"YAML syntax error: {problem}") from None
    except RecursionError:  # a safety net: _ConfigLoader stops nesting well before this
        raise ConfigError(path, None, f"YAML nested deeper than {MAX_YAML_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


