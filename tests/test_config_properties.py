"""Property: whatever a config says, validation either accepts it with a finite plan or refuses it
with one short line naming a field. No other exception may escape (issue 11).

Configs are mutations of ``configs/demo.yaml``: keys dropped, renamed or added, values replaced by
wrong types, NaN, infinities, huge, tiny and negative numbers, odd strings and nested junk, and
text-level edits (duplicated or deleted lines, junk inserted). Each goes through what
``scan CONFIG --dry-run`` runs, in-process: `parse_yaml`, `parse_config`, `make_plan`, `describe`.
The examples are derandomized, so a failure reproduces on every machine.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from flakehunter.acquisition.plan import make_plan  # noqa: E402
from flakehunter.config import parse_config  # noqa: E402
from flakehunter.config_yaml import parse_yaml  # noqa: E402
from flakehunter.errors import ConfigError  # noqa: E402
from flakehunter.registry import get_registry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASE: dict[str, Any] = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
BASE["budget"] = {"max_tiles": 3000}  # valid mutants then plan in milliseconds; the budget itself is mutated too

Path_ = tuple[Any, ...]


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


EXISTING = _paths(BASE)
#: Keys the demo leaves out, so that mutants also reach the focus, wafer, polygon and file options.
OPTIONAL: list[tuple[Path_, Any]] = [
    (("focus",), {"mode": "plane", "points_um": [[0, 0, 0], [10000, 0, 5], [0, 10000, -5]]}),
    (("focus",), {"mode": "map", "grid": [3, 3], "range_um": 100, "coarse_step_um": 10, "fine_step_um": 2}),
    (("focus",), {"mode": "autofocus", "map_points_um": [[1000, 1000], [9000, 9000]], "every_n_tiles": 5}),
    (("region",), {"wafer": {"center_um": [5000, 5000], "diameter_um": 10000, "edge_exclusion_um": 500}}),
    (("region",), {"polygon": {"vertices_um": [[0, 0], [10000, 0], [5000, 8000]]}}),
    (("optics", "rotation_deg"), 1.5),
    (("optics", "flatfield"), ["flat.tif"]),
    (("optics", "flip_rows"), True),
    (("camera", "options", "layout"), "layout.json"),
    (("camera", "options", "bit_depth"), 12),
    (("camera", "options", "pixel_size_um"), 1.1),
    (("detectors", 0, "options"), {"profile": "lab.json", "min_area_um2": 10}),
    (("detectors",), [{"name": "contrast"}, {"name": "contrast", "options": {"calibration": "nominal"}}]),
    (("output", "directory"), "runs/x"),
    (("budget", "max_tile_megapixels"), 1.0),
    (("stage", "options", "time_scale"), 0),
]

_SPECIAL = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e-308, 5e-324, 0.0, -0.0, -1, 1e15, -1e15, 1e-4, 1e9,
            2**63, 2**64 + 1, 10**40, 0.5, 1, 3, 7.0]
_STRINGS = ["", " ", "../../../x", ".hidden", "a/b", "a\\b", "\x07bell", "inf", ".nan", "1e-4", "true", "[", "x" * 300,
            "graphene", "simulator", "contrast", "snake", "none", "plane", "µ"]

leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.sampled_from(_SPECIAL),
    st.floats(-1e5, 1e5), st.text(max_size=12), st.sampled_from(_STRINGS),
)
junk = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
pair = st.lists(st.one_of(st.floats(-1e5, 1e5), st.integers(-10, 5000), st.sampled_from(_SPECIAL)), max_size=4)
values = st.one_of(junk, pair, pair.map(lambda p: [p, p, p]))


def _get_parent(data: Any, path: Path_) -> tuple[Any, Any] | None:
    node = data
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return (node, path[-1]) if isinstance(node, dict | list) else None


def _set(data: Any, path: Path_, value: Any) -> None:
    node = data
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return
    fits = isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node)
    if isinstance(node, dict) or fits:
        node[path[-1]] = value


@st.composite
def mutation(draw: Any) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["set", "set", "set", "drop", "rename", "optional", "optional", "scale"]))
    if kind == "optional":
        return kind, draw(st.sampled_from(OPTIONAL))
    path = draw(st.sampled_from(EXISTING))
    if kind == "set":
        return kind, (path, draw(values))
    if kind == "rename":
        return kind, (path, draw(st.text(min_size=1, max_size=10) | st.sampled_from(["x_um", "options", "mode"])))
    if kind == "scale":
        return kind, (path, draw(st.sampled_from([1e-9, 1e-3, 0.5, 2, 1e3, 1e9, -1])))
    return kind, path


def apply(data: dict[str, Any], kind: str, arg: Any) -> None:
    if kind == "optional":
        path, value = arg
        _set(data, path, copy.deepcopy(value))
        return
    path = arg[0] if kind in ("set", "rename", "scale") else arg
    found = _get_parent(data, path)
    if found is None:
        return
    parent, key = found
    try:
        current = parent[key]
    except (KeyError, IndexError, TypeError):
        return
    if kind == "set":
        parent[key] = arg[1]
    elif kind == "drop":
        del parent[key]
    elif kind == "rename" and isinstance(parent, dict):
        parent[arg[1]] = parent.pop(key)
    elif kind == "scale" and isinstance(current, int | float) and not isinstance(current, bool):
        parent[key] = current * arg[1]


JUNK_LINES = ["  - ]", "&a x: *b", "? [a]", "\t", ": :", "x: &a [*a]", "{{{", "\x00", "seed: 1", "name: x"]


@st.composite
def config_text(draw: Any) -> str:
    data = copy.deepcopy(BASE)
    for kind, arg in draw(st.lists(mutation(), min_size=1, max_size=3)):
        apply(data, kind, arg)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    edit = draw(st.sampled_from(["none", "none", "none", "duplicate line", "delete line", "insert junk"]))
    if edit != "none":
        lines = text.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        if edit == "duplicate line":
            lines.insert(i, lines[i])
        elif edit == "delete line":
            del lines[i]
        else:
            lines.insert(i, draw(st.sampled_from(JUNK_LINES)))
        text = "\n".join(lines) + "\n"
    return text


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config's folder, holding the files some mutants name (so those can also be valid)."""
    path = tmp_path_factory.mktemp("mutants")
    (path / "flat.tif").write_bytes(b"II*\x00")
    (path / "lab.json").write_text("{}", encoding="utf-8")
    get_registry()  # plugin imports once, outside the examples
    return path


def check(text: str, folder: Path) -> str:
    """Validate like ``scan --dry-run``; returns 'valid' or 'refused', or fails the test."""
    path = folder / "wafer.yaml"
    try:
        config = parse_config(parse_yaml(text, path), path)
        plan = make_plan(config, path, get_registry())
        info = plan.describe()
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 500, message
        assert message.startswith(f"{path}: "), message
        names_a_field = bool(exc.field) or exc.message.startswith(("the file is empty", "expected a mapping"))
        assert names_a_field, message
        return "refused"
    # A valid config plans on finite numbers only: nothing downstream runs on NaN or inf.
    json.dumps(info, allow_nan=False)
    assert all(math.isfinite(v) for t in plan.tiles for v in (t.x_um, t.y_um, t.z_um))
    return "valid"


@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=config_text())
def test_mutated_configs_are_valid_or_refused_in_one_line(text: str, folder: Path) -> None:
    check(text, folder)


def test_the_mutants_reach_both_outcomes(folder: Path) -> None:
    """The strategy is not degenerate: some mutants pass, many are refused, by more than one field."""
    outcomes: dict[str, int] = {}
    fields: set[str] = set()

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(text=config_text())
    def probe(text: str) -> None:
        try:
            outcome = check(text, folder)
        except AssertionError:
            raise
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "refused":
            try:
                parse_config(parse_yaml(text, "x.yaml"), "x.yaml")
            except ConfigError as exc:
                fields.add(str(exc.field).split(".")[0].split("[")[0])

    probe()
    assert outcomes.get("valid", 0) >= 5 and outcomes.get("refused", 0) >= 30, outcomes
    assert len(fields) >= 6, fields
