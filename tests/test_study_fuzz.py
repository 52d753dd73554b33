"""Study-file fuzzing: a mutated built-in study file loads, or fails with one HybridlabError; nothing else.

Each example takes a built-in study file, replaces, deletes or adds values anywhere in it (wrong types,
NaN, inf, huge integers, long or odd strings, deep nesting), or injects YAML anchors and aliases into its
text, and loads it without touching the data. The default run is a fixed-seed subset that takes seconds;
set HYBRIDLAB_FUZZ_EXAMPLES (e.g. 5000) for a long run.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from hybridlab.errors import HybridlabError
from studies.config import builtin_studies, load_study_config

EXAMPLES = int(os.environ.get("HYBRIDLAB_FUZZ_EXAMPLES", "25"))
LONG = "HYBRIDLAB_FUZZ_EXAMPLES" in os.environ
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# pattern_search (3^12) and attention_placement (2^12) check a free space on every load: the fast subset
# leaves them to the long run
HEAVY = ("pattern_search", "attention_placement")
STUDIES = sorted(n for n in builtin_studies() if LONG or n not in HEAVY)
RAW = {name: yaml.safe_load(path.read_text()) for name, path in builtin_studies().items()}


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


SPECIAL = st.sampled_from([
    math.nan, math.inf, -math.inf, 2**63, -(2**63), 2**53 + 1, 10**400, -1, 0, 1e308, 1e-320, -0.0, True, False,
    None, "", " ", "\n", "auto", "../x", "a/b", "x" * 10_000, "\x00", "1e6", "nan", "²", [], {}, [None], {"": None},
    _deep(40), _deep(200), {"auto": {"initial": 2**70}}, {"auto": None},
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), SPECIAL,
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in the document (mappings and lists), the root's children first."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((*prefix, i))
            out.extend(_paths(value, (*prefix, i)))
    return out


@st.composite
def mutated(draw: Any) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(STUDIES))
    raw = yaml.safe_load(yaml.safe_dump(RAW[name]))  # a fresh copy
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(raw)
        path = draw(st.sampled_from(paths)) if paths else ("name",)
        node = raw
        for part in path[:-1]:
            node = node[part]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if action == "delete" and isinstance(node, dict):
            node.pop(path[-1], None)
        elif action == "add" and isinstance(node, dict):
            node[draw(st.one_of(st.text(max_size=10), st.integers()))] = copy.deepcopy(draw(VALUES))
        else:  # copies: a later mutation must never change the shared SPECIAL values
            node[path[-1]] = copy.deepcopy(draw(VALUES))
    return name, raw


def _load(**kwargs: Any) -> None:
    try:
        load_study_config(check_data=False, **kwargs)
    except HybridlabError as exc:
        lines = str(exc).splitlines()
        assert lines and all(len(line) <= 800 for line in lines), [len(line) for line in lines]


@pytest.mark.slow
@FUZZ
@given(mutated())
def test_mutated_study_files_load_or_fail_with_one_line_each(case) -> None:
    name, raw = case
    _load(name_or_path=f"{name}.yaml", raw=raw)


@FUZZ
@given(st.sampled_from(STUDIES), st.data())
def test_set_overrides_load_or_fail_with_one_line_each(name, data) -> None:
    keys = [".".join(map(str, p)) for p in _paths(RAW[name]) if all(isinstance(x, str) for x in p)]
    key = data.draw(st.one_of(st.sampled_from(keys), st.text(max_size=12)))
    value = data.draw(st.one_of(st.text(max_size=40), st.sampled_from(
        ["nan", ".inf", "-.inf", "1e400", str(2**63), "[1, [2, [3]]]", "{a: 1}", "&x [1]", "*x", "!!python/name:os.system",
         "'", "null", "~", "[" * 100])))
    _load(name_or_path=str(builtin_studies()[name]), overrides=[f"{key}={value}"])


ALIASES = [
    "x_anchor: &a [1, 2, 3]\nx_alias: *a\n",
    "train: &t {epochs: 1}\nmeasure: *t\n",
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]\n",
    "base: &base {epochs: 1}\ntrain:\n  <<: *base\n  lr: 0.1\n",
]


@pytest.mark.parametrize("name", STUDIES)
@pytest.mark.parametrize("extra", ALIASES)
def test_study_files_with_aliases_are_refused_in_one_short_line(tmp_path: Path, name: str, extra: str) -> None:
    path = tmp_path / "aliased.yaml"
    text = builtin_studies()[name].read_text()
    path.write_text(text + "\n" + extra)
    with pytest.raises(HybridlabError) as info:
        load_study_config(str(path), check_data=False)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400 and "anchors and aliases" in message


@seed(0)
@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_as_a_study_file_fail_with_one_line(tmp_path_factory: Any, blob: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "blob.yaml"
    path.write_bytes(blob)
    _load(name_or_path=str(path))
