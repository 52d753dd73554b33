"""Pattern families: where the attention blocks go in a token stage of depth N.

The first six reproduce MambaVision's Table 5 (paper names in brackets); the `attn_*` families that take
`n_attn` generalise them to any number of attention blocks. Every family returns the stage as a list of
booleans (True = attention) so the same rule works with any mixer/attention symbols.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from hybridlab.errors import ConfigError


@dataclass(frozen=True)
class Family:
    """A placement rule. `default_attn(N)` is the attention count when the study does not choose one."""

    name: str
    place: Callable[[int, int, int], list[bool]]  # (depth, n_attn, seed) -> attention flags
    default_attn: Callable[[int], int]
    takes_n_attn: bool
    takes_seed: bool
    paper: str = ""


def _last(depth: int, k: int, seed: int) -> list[bool]:
    return [False] * (depth - k) + [True] * k


def _first(depth: int, k: int, seed: int) -> list[bool]:
    return [True] * k + [False] * (depth - k)


def _alternate(start_with_attn: bool) -> Callable[[int, int, int], list[bool]]:
    def place(depth: int, k: int, seed: int) -> list[bool]:
        return [(i % 2 == 0) == start_with_attn for i in range(depth)]

    return place


def _spread(depth: int, k: int, seed: int) -> list[bool]:
    """k attention blocks spaced evenly, the last one at the end of the stage."""
    flags = [False] * depth
    for j in range(k):
        flags[depth - 1 - (j * depth) // k] = True
    return flags


def _random_positions(depth: int, k: int, seed: int) -> list[bool]:
    positions = set(random.Random(f"hybridlab-random-{depth}-{k}-{seed}").sample(range(depth), k))
    return [i in positions for i in range(depth)]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("attn_last_half", _last, lambda n: n // 2, False, False, "Last N/2 layers (default): MMMMSSSS"),
        Family("attn_first_half", _first, lambda n: n // 2, False, False, "First N/2 layers: SSSSMMMM"),
        Family("interleave_am", _alternate(True), lambda n: (n + 1) // 2, False, False, "Mixed layers-1: SMSMSMSM"),
        Family("interleave_ma", _alternate(False), lambda n: n // 2, False, False, "Mixed layers-2: MSMSMSMS"),
        Family("attn_last_quarter", _last, lambda n: n // 4, False, False, "Last N/4 layers: MMMMMMSS"),
        Family("random", _random_positions, lambda n: n // 2, True, True, "Random"),
        Family("attn_last", _last, lambda n: n // 2, True, False),
        Family("attn_first", _first, lambda n: n // 2, True, False),
        Family("attn_spread", _spread, lambda n: n // 2, True, False),
        Family("mixer_only", _last, lambda n: 0, False, False),
        Family("attn_only", _last, lambda n: n, False, False),
    )
}

# The paper's Table 5 rows, in the paper's order, with their printed names.
TABLE5 = {
    "random": "Random",
    "attn_first_half": "First N/2 layers",
    "interleave_am": "Mixed layers-1",
    "interleave_ma": "Mixed layers-2",
    "attn_last_quarter": "Last N/4 layers",
    "attn_last_half": "Last N/2 layers (default)",
}


def get_family(name: str, where: str = "search_space.layout.family") -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown pattern family {name!r} (known: {', '.join(FAMILIES)})", where) from None


def stage_layout(
    family: str, depth: int, mixer: str = "M", attention: str = "A", n_attn: int | None = None, seed: int = 0
) -> list[str]:
    """The block texts of one stage, e.g. stage_layout('interleave_am', 4) == ['A', 'M', 'A', 'M']."""
    fam = get_family(family)
    if depth < 1:
        raise ConfigError(f"stage depth must be at least 1, got {depth}", "search_space.layout.depths")
    k = fam.default_attn(depth) if n_attn is None or not fam.takes_n_attn else n_attn
    if not 0 <= k <= depth:
        raise ConfigError(f"n_attn={k} does not fit a stage of depth {depth}", "search_space.layout.n_attn")
    return [attention if flag else mixer for flag in fam.place(depth, k, seed)]
