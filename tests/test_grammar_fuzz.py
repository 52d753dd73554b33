"""Fuzzing the pattern grammar: whatever the text, `parse` returns a Pattern or raises PatternError.

Two generators: random strings over the grammar's own characters (plus a few hostile ones), and random
syntax trees with large counts, deep nesting and random option values. For every pattern that parses,
the canonical form must parse to the same Pattern and be a fixed point.

By default a fixed-seed subset runs (a few seconds). Set HYBRIDLAB_FUZZ_EXAMPLES (e.g. 20000) for a long
run with fresh random examples.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.grammar import MAX_BLOCKS, Pattern, canonical, parse
from hybridlab.errors import PatternError

_LONG = int(os.environ.get("HYBRIDLAB_FUZZ_EXAMPLES", "0") or 0)
_FUZZ = settings(
    max_examples=_LONG or 150,
    derandomize=not _LONG,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The grammar's characters, some near misses (lower-case symbols, unknown blocks, unicode digits and
# letters, full-width brackets) and whitespace of several kinds.
_CHARS = "CMAQXx()*|[]=,._+- 0123456789\t\n²٣ｄéZa" + "dstaeconvbrchwiqkxpnfulgm"
_WORDS = [
    "M", "A", "C", "(", ")", "*", "|", " ", "[", "]", "=", ",", "d_state", "window", "conv", "branch",
    "qkv_bias", "expand", "d_conv", "causal", "gate", "none", "true", "0", "1", "8", "1000", "4096", "4097",
    "99999999", "1e5", "-1", "nan", "²",
]


def _check(text: str) -> None:
    """The property every input must satisfy."""
    try:
        pattern = parse(text)
    except PatternError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 300, message
        return
    assert isinstance(pattern, Pattern)
    assert sum(pattern.depths) <= MAX_BLOCKS
    text2 = canonical(pattern)
    again = parse(text2)
    assert again == pattern, (text, text2)
    assert canonical(again) == text2


@_FUZZ
@given(st.text(alphabet=_CHARS, max_size=60))
def test_random_characters_parse_or_raise_pattern_error(text: str) -> None:
    _check(text)


@_FUZZ
@given(st.lists(st.sampled_from(_WORDS), max_size=30).map("".join))
def test_random_tokens_parse_or_raise_pattern_error(text: str) -> None:
    _check(text)


@_FUZZ
@given(st.text(max_size=40))
def test_arbitrary_unicode_parses_or_raises_pattern_error(text: str) -> None:
    _check(text)


# --- random syntax trees -----------------------------------------------------------------------------

_COUNTS = st.one_of(
    st.integers(1, 4), st.integers(1, 5000), st.sampled_from([999, 1000, 1001, 2048, 4095, 4096, 4097])
)
_OPTION_NAMES = ["d_state", "d_conv", "expand", "conv", "branch", "window", "qkv_bias", "bogus"]
_VALUES = st.one_of(
    st.integers(-2, 300).map(str),
    st.sampled_from(["regular", "causal", "concat", "gate", "none", "true", "false", "yes", "0", "1_0", "8.0"]),
    st.text(alphabet="abcz019_.+-eE", min_size=1, max_size=6),
)


@st.composite
def _block(draw) -> str:
    symbol = draw(st.sampled_from(["C", "M", "A", "M", "A"]))
    names = draw(st.lists(st.sampled_from(_OPTION_NAMES), max_size=3))
    if not names:
        return symbol
    return symbol + "[" + ",".join(f"{n}={draw(_VALUES)}" for n in names) + "]"


def _repeat(inner):
    @st.composite
    def build(draw) -> str:
        text = draw(inner)
        if draw(st.booleans()):
            return f"({text})*{draw(_COUNTS)}" if " " in text or "*" in text else f"{text}*{draw(_COUNTS)}"
        return text

    return build()


def _sequence(parts):
    return st.lists(parts, min_size=1, max_size=3).map(" ".join)


_ITEMS = st.recursive(_repeat(_block()), lambda inner: _repeat(_sequence(inner)), max_leaves=12)


@_FUZZ
@given(st.lists(_sequence(_ITEMS), min_size=1, max_size=4).map(" | ".join))
def test_random_trees_parse_or_raise_and_round_trip(text: str) -> None:
    _check(text)


@_FUZZ
@given(st.integers(1, 60), st.lists(st.integers(1, 9), min_size=1, max_size=60))
def test_deep_groups_parse_or_raise(depth: int, counts: list[int]) -> None:
    text = "(" * depth + "M A" + "".join(f")*{counts[i % len(counts)]}" for i in range(depth))
    _check(text)
