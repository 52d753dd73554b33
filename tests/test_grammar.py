"""The pattern grammar: valid/invalid corpus, canonical form, round trips and error columns."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks import ModelSpec, canonical, parse
from blocks.grammar import BlockSpec, Pattern
from hybridlab.errors import ConfigError, PatternError

VALID = {
    "C | C*3 | M*4 A*4 | M*2 A*2": "C | C*3 | M*4 A*4 | M*2 A*2",
    "MMAA": "M*2 A*2",
    "M*2 A*2": "M*2 A*2",
    "(M)*2 (A)*2": "M*2 A*2",
    "M M A A": "M*2 A*2",
    "C|C*3|(A M)*4|M*2A*2": "C | C*3 | (A M)*4 | M*2 A*2",
    "A M A M A M A M": "(A M)*4",
    "((M A)*2 C)*2": "(M A M A C)*2",
    "M*2 A*2 M*2 A*2": "(M*2 A*2)*2",
    "M[d_state=16] M[d_state=8]": "M[d_state=16] M",
    "M[conv=causal,branch=none]*2": "M[branch=none,conv=causal]*2",
    "M[branch=none, conv=causal] M[conv=causal ,branch=none]": "M[branch=none,conv=causal]*2",
    "M[ branch = gate ]": "M[branch=gate]",
    "A[window=7]": "A[window=7]",
    "A[window=0]": "A",
    "A[qkv_bias=false]": "A[qkv_bias=false]",
    "A[qkv_bias=true]": "A",
    "M[expand=2,d_conv=4]": "M[d_conv=4,expand=2]",
    "  C  |  M  ": "C | M",
    "C*1": "C",
    "(C)": "C",
}

INVALID = [
    ("C | C*3 | Q*4", 11, "unknown block 'Q' (known: A, C, G, H, M, Md, S, V)"),
    ("", 0, "empty pattern"),
    ("   ", 0, "empty pattern"),
    ("C | | M", 5, "stage 2 is empty"),
    ("C |", 4, "stage 2 is empty"),
    ("| C", 1, "stage 1 is empty"),
    ("M*", 3, "expected a repetition count"),
    ("M*0", 3, "at least 1"),
    ("M*4097", 3, "repetition count 4097 is too large (max 4096)"),
    ("M*0000001", 3, "more than 6 digits"),
    ("M*²", 3, "expected a repetition count after '*', got '²'"),
    ("M*1²", 4, "unexpected '²'"),
    ("²", 1, "unexpected '²'"),
    ("(M*1000)*5", 10, "too many blocks: 5000 or more (a pattern has at most 4096)"),
    ("M*4096 | C", 10, "too many blocks: 4097 or more"),
    ("M[d_state=" + "1" * 65 + "]", 11, "longer than 64 characters"),
    ("M[ｄ_state=8]", 3, "expected an option name, got 'ｄ'"),
    ("(M A", 1, "unclosed '('"),
    ("M A)", 4, "unmatched ')'"),
    ("()", 1, "empty group"),
    ("M[d_state=abc]", 11, "expected an integer, got 'abc'"),
    ("M[d_state=2.5]", 11, "expected an integer"),
    ("M[foo=1]", 3, "unknown option 'foo' for block 'M'"),
    ("C[d_state=8]", 3, "unknown option 'd_state' for block 'C'"),
    ("M[d_state=1000]", 11, "above the maximum 256"),
    ("M[d_state=0]", 11, "below the minimum 1"),
    ("M[conv=sideways]", 8, "'sideways' is not one of regular, causal"),
    ("A[qkv_bias=maybe]", 12, "expected true or false"),
    ("M4", 2, "write repetition as M*4"),
    ("M[d_state=8", 2, "unclosed '['"),
    ("M[]", 2, "empty options"),
    ("M[d_state]", 10, "expected '='"),
    ("M[d_state=]", 11, "expected a value"),
    ("A[window=-1]", 10, "below the minimum 0"),
    ("M[conv=causal,conv=regular]", 15, "given twice"),
    ("*3", 1, "'*' must follow a block"),
    ("C ; M", 3, "unexpected ';'"),
    ("m", 1, "unexpected 'm'"),
    ("M[d_state=8;]", 12, "expected ',' or ']'"),
]


@pytest.mark.parametrize("text,expected", sorted(VALID.items()))
def test_valid_patterns_have_expected_canonical_form(text: str, expected: str) -> None:
    assert canonical(text) == expected
    assert parse(expected) == parse(text)


@pytest.mark.parametrize("text,col,message", INVALID)
def test_invalid_patterns_name_problem_and_column(text: str, col: int, message: str) -> None:
    with pytest.raises(PatternError) as info:
        parse(text)
    err = info.value
    assert message in str(err)
    assert err.col == col
    assert "\n" not in str(err)
    assert str(err).startswith(f"pattern error at col {col}:" if col else "pattern error:")


def test_readme_example_message() -> None:
    with pytest.raises(PatternError, match=r"^pattern error at col 7: unknown block 'Q' \(known: A, C, G, H, M, Md, S, V\)$"):
        parse("C | C Q*3")  # col 7 is the Q


# --- size limits: refused while reading, before anything is expanded --------------------------------

def test_nested_repetition_is_refused_before_expansion() -> None:
    """Three nested counts of 1000 would be 10^9 blocks; the second count already exceeds the cap."""
    with pytest.raises(PatternError, match=r"^pattern error at col 13: too many blocks: 1000000 or more"):
        parse("(((M)*1000)*1000)*1000")


def test_counts_are_bounded_by_digits_not_by_python_int_limits() -> None:
    with pytest.raises(PatternError, match="repetition count is too large"):
        parse("M*" + "9" * 5000)  # int() of this many digits raises ValueError in Python 3.11


@pytest.mark.parametrize("depth", [33, 500, 5000])
def test_deep_nesting_is_a_pattern_error(depth: int) -> None:
    with pytest.raises(PatternError, match="groups are nested more than 32 deep") as info:
        parse("(" * depth + "M" + ")" * depth)
    assert info.value.col == 33


def test_nesting_up_to_the_limit_parses() -> None:
    assert parse("(" * 32 + "M A" + ")" * 32) == parse("M A")
    assert parse("(" * 12 + "M" + ")*2" * 12) == parse("M*4096")


def test_many_leaves_are_refused_at_the_first_block_over_the_cap() -> None:
    with pytest.raises(PatternError, match="too many blocks: 4097 or more") as info:
        parse("M" * 100_000)
    assert info.value.col == 4097


def test_long_names_are_cut_in_messages() -> None:
    with pytest.raises(PatternError) as info:
        parse("Q" + "x" * 10_000)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("text", ["(M*1000)*4", "M*4096", "(M A)*2048", "(M*2 A)*1365 C", "C | (M*1000)*4"])
def test_canonical_form_of_large_valid_patterns_parses(text: str) -> None:
    """The canonical form folds runs into one count; that count is within MAX_REPEAT."""
    assert parse(canonical(text)) == parse(text)


def test_spaces_and_equivalent_forms_are_equal() -> None:
    assert parse("MMAA") == parse("M*2 A*2") == parse("(M)*2 (A)*2") == parse("M M (A A)")


def test_depths_and_symbols() -> None:
    p = parse("C | C*3 | M*4 A*4 | M*2 A*2")
    assert p.depths == (1, 3, 8, 4)
    assert p.symbols() == ("C", "CCC", "MMMMAAAA", "MMAA")
    assert p.stages[2][0] == BlockSpec("M")


def test_options_resolve_defaults() -> None:
    block = parse("M[d_state=16]").stages[0][0]
    assert block.options == (("d_state", 16),)
    opts = block.resolved_options()
    assert opts["d_state"] == 16 and opts["conv"] == "regular" and opts["branch"] == "concat"


def test_default_valued_options_are_dropped() -> None:
    assert parse("M[d_state=8,conv=regular]") == parse("M")


def test_parse_is_idempotent_on_pattern_objects() -> None:
    p = parse("C | M")
    assert parse(p) is p
    with pytest.raises(PatternError):
        parse(42)  # type: ignore[arg-type]


# --- property-based round trip -------------------------------------------------------------------
# Random syntax trees rendered to text with random spacing; the expected block sequence is computed
# from the tree independently of the parser.

_OPTS = {
    "M": [("d_state", st.sampled_from([1, 4, 8, 16])), ("conv", st.sampled_from(["regular", "causal"])),
          ("branch", st.sampled_from(["concat", "gate", "none"])), ("window", st.integers(0, 9))],
    "A": [("qkv_bias", st.booleans()), ("window", st.integers(0, 9))],
    "C": [],
}
_DEFAULTS = {"d_state": 8, "conv": "regular", "branch": "concat", "window": 0, "qkv_bias": True}


@st.composite
def _block(draw):
    symbol = draw(st.sampled_from(sorted(_OPTS)))
    chosen = draw(st.lists(st.sampled_from(_OPTS[symbol]), unique_by=lambda o: o[0], max_size=3)) if _OPTS[symbol] else []
    values = [(name, draw(strategy)) for name, strategy in chosen]
    text = symbol
    if values:
        rendered = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values]
        text += "[" + ",".join(rendered) + "]"
    expected = BlockSpec(symbol, tuple(sorted((k, v) for k, v in values if _DEFAULTS[k] != v)))
    return text, [expected]


def _item(inner):
    @st.composite
    def build(draw):
        text, seq = draw(inner)
        if draw(st.booleans()):
            count = draw(st.integers(1, 3))
            bare = " " not in text and "*" not in text  # `M*2*3` is not valid: repeat a group instead
            return f"{text}*{count}" if bare and draw(st.booleans()) else f"({text})*{count}", seq * count
        return text, seq

    return build()


def _join(parts):
    return st.lists(parts, min_size=1, max_size=3).map(
        lambda xs: (" ".join(t for t, _ in xs), [b for _, s in xs for b in s])
    )


_ITEMS = st.recursive(_item(_block()), lambda inner: _item(_join(inner)), max_leaves=6)
_STAGE = _join(_ITEMS)


@settings(max_examples=300, deadline=None)
@given(st.lists(_STAGE, min_size=1, max_size=4))
def test_round_trip_property(stages) -> None:
    text = " | ".join(t for t, _ in stages)
    expected = Pattern(tuple(tuple(seq) for _, seq in stages))
    parsed = parse(text)
    assert parsed == expected
    assert parse(canonical(text)) == parsed
    assert canonical(canonical(text)) == canonical(text)


# --- ModelSpec ------------------------------------------------------------------------------------

def test_spec_hash_is_stable_and_sensitive() -> None:
    a = ModelSpec.create("C | C*3 | M*4 A*4 | M*2 A*2")
    b = ModelSpec.create("C|CCC|MMMMAAAA|MMAA")
    assert a == b and a.arch_hash() == b.arch_hash()
    assert a.arch_hash() == "2a6688c732b4"  # pinned: changing the hash invalidates every stored result
    assert a.with_settings(dim=96).arch_hash() != a.arch_hash()
    assert ModelSpec.create("C | C*3 | (A M)*4 | M*2 A*2").arch_hash() != a.arch_hash()


def test_spec_validation_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^num_heads: stage 3: 7 heads do not divide width 320"):
        ModelSpec.create("C | C*3 | M*4 A*4 | M*2 A*2", num_heads=[2, 4, 7, 16])
    with pytest.raises(ConfigError, match="num_heads: has 4 entries but the pattern has 3 stages"):
        ModelSpec.create("C | C | M A")
    with pytest.raises(ConfigError, match="unknown model setting 'depths'"):
        ModelSpec.create("C | C | M A | A", depths=[1, 1, 2, 1])
    with pytest.raises(ConfigError, match="stem_stride: must be one of 1, 2, 4"):
        ModelSpec.create("C | C | M A | A", stem_stride=3)
    with pytest.raises(ConfigError, match="dim: expected an integer"):
        ModelSpec.create("C | C | M A | A", dim="wide")


def test_heads_only_checked_where_attention_is_used() -> None:
    # Stage 3 has no attention block: 7 heads need not divide its width.
    spec = ModelSpec.create("C | C | M*2 | A", num_heads=[1, 1, 7, 8])
    assert spec.num_heads == (1, 1, 7, 8)
