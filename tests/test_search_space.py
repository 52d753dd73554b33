"""Search spaces: Table 5 families, layouts, free choices, variants, options, constraints, sampling."""

from __future__ import annotations

import optuna
import pytest

from blocks import ModelSpec, parse
from hybridlab.errors import ConfigError
from search_space import FAMILIES, TABLE5, Constraints, SearchSpace, stage_layout

T_BASE = ModelSpec.create("C | C*3 | M*4 A*4 | M*2 A*2", dim=16, in_dim=8, num_heads=[1, 1, 2, 2], num_classes=10)


def test_table5_layouts_match_the_paper_for_depth_8() -> None:
    expected = {
        "attn_last_half": "MMMMAAAA",  # Last N/2 layers (default)
        "attn_first_half": "AAAAMMMM",  # First N/2 layers: SSSSMMMM
        "interleave_am": "AMAMAMAM",  # Mixed layers-1: SMSMSMSM
        "interleave_ma": "MAMAMAMA",  # Mixed layers-2: MSMSMSMS
        "attn_last_quarter": "MMMMMMAA",  # Last N/4 layers: MMMMMMSS
    }
    for family, layout in expected.items():
        assert "".join(stage_layout(family, 8)) == layout
    assert set(TABLE5) <= set(FAMILIES)


def test_official_rule_for_odd_depths() -> None:
    # MambaVision gives the mixers ceil(N/2) blocks: S stage 3 (7) = MMMMAAA, stage 4 (5) = MMMAA
    assert "".join(stage_layout("attn_last_half", 7)) == "MMMMAAA"
    assert "".join(stage_layout("attn_last_half", 5)) == "MMMAA"


def test_random_family_is_seeded_and_keeps_the_count() -> None:
    a = stage_layout("random", 8, seed=3)
    assert a == stage_layout("random", 8, seed=3)
    assert a.count("A") == 4
    layouts = {"".join(stage_layout("random", 8, seed=s)) for s in range(10)}
    assert len(layouts) > 1
    assert stage_layout("random", 8, n_attn=2, seed=1).count("A") == 2


def test_n_attn_families_and_errors() -> None:
    assert "".join(stage_layout("attn_spread", 8, n_attn=2)) == "MMMAMMMA"
    assert "".join(stage_layout("attn_first", 6, n_attn=1)) == "AMMMMM"
    with pytest.raises(ConfigError, match="n_attn=9 does not fit a stage of depth 8"):
        stage_layout("attn_last", 8, n_attn=9)
    with pytest.raises(ConfigError, match="unknown pattern family 'diagonal'"):
        stage_layout("diagonal", 8)


def test_grid_over_table5_enumerates_each_pattern_once() -> None:
    space = SearchSpace.from_config({"layout": {"stages": [3, 4], "family": list(TABLE5)}}, T_BASE)
    cands = space.candidates()
    assert [c.family for c in cands] == list(TABLE5)
    assert len({c.arch_hash for c in cands}) == 6
    by_family = {c.family: c.spec.pattern for c in cands}
    assert by_family["attn_last_half"] == "C | C*3 | M*4 A*4 | M*2 A*2"
    assert by_family["interleave_am"] == "C | C*3 | (A M)*4 | (A M)*2"
    assert by_family["attn_first_half"] == "C | C*3 | A*4 M*4 | A*2 M*2"
    assert by_family["attn_last_quarter"] == "C | C*3 | M*6 A*2 | M*3 A"
    # Same attention count -> same parameters. The paper prints 31.8M for every row of Table 5, but the last-N/4
    # row has fewer attention blocks (each A has ~4C^2 weights, each M ~2C^2), so it is smaller.
    params = {c.family: sum(p.numel() for p in c.spec.build().parameters()) for c in cands}
    assert len({v for k, v in params.items() if k != "attn_last_quarter"}) == 1
    assert params["attn_last_quarter"] < params["attn_last_half"]


def test_duplicates_are_removed_by_architecture() -> None:
    # attn_last and attn_last_half with n_attn = N/2 are the same architecture
    space = SearchSpace.from_config(
        {"layout": {"stages": [4], "family": ["attn_last_half", "attn_last"], "n_attn": [1, 2]}}, T_BASE
    )
    patterns = [c.spec.pattern for c in space.candidates()]
    assert len(patterns) == len(set(patterns)) == 2  # M*2 A*2 (twice) and M*3 A


def test_depths_variants_options_and_model_choices() -> None:
    space = SearchSpace.from_config(
        {
            "layout": {"stages": [3], "family": ["attn_last_half"], "depths": {3: [2, 4]}},
            "variants": {
                "name": "mixer",
                "choices": {
                    "causal_no_conv2": {"M": {"conv": "causal", "branch": "none"}},
                    "concat": {},
                },
            },
            "options": {"M.d_state": [8, 16]},
            "model": {"dim": [16, 24]},
        },
        T_BASE,
    )
    cands = space.candidates()
    assert len(cands) == 2 * 2 * 2 * 2
    one = next(c for c in cands if c.params == {"family": "attn_last_half", "depth_s3": 2, "mixer": "causal_no_conv2",
                                                 "M.d_state": 16, "dim": 24})
    assert one.spec.pattern == "C | C*3 | M[branch=none,conv=causal,d_state=16] A | M[branch=none,conv=causal,d_state=16]*2 A*2"
    assert one.spec.dim == 24
    assert one.label == "attn_last_half causal_no_conv2 depth_s3=2 M.d_state=16 dim=24"


def test_free_layout_and_suggest_with_optuna() -> None:
    space = SearchSpace.from_config({"free": {"stages": [4], "symbols": ["M", "A", "M[d_state=4]"]}}, T_BASE)
    assert space.size() == 3**4
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(10):
        trial = study.ask()
        cand = space.suggest(trial)
        seen.add(cand.spec.pattern)
        assert cand.family == "free"
        assert parse(cand.spec.pattern).depths == (1, 3, 8, 4)
        study.tell(trial, 0.0)
    assert len(seen) > 3


def test_conditional_dimensions_in_grid_and_suggest() -> None:
    space = SearchSpace.from_config(
        {"layout": {"stages": [3], "family": ["attn_last_half", "random"], "random_seeds": [0, 1, 2]}}, T_BASE
    )
    params = list(space._param_sets())
    assert {"family": "attn_last_half"} in params  # no layout_seed for a deterministic family
    assert sum(1 for p in params if p["family"] == "random") == 3
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(6):
        trial = study.ask()
        cand = space.suggest(trial)
        assert ("layout_seed" in trial.params) == (cand.family == "random")
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    "config,message",
    [
        ({"layout": {"stages": [5]}}, "search_space.layout.stages: stage numbers are 1..4"),
        ({"layout": {"family": ["zigzag"]}}, "unknown pattern family 'zigzag'"),
        ({"layout": {"colour": 1}}, "search_space.layout.colour: unknown key 'colour'"),
        ({"layout": {}, "free": {}}, "use either 'layout' or 'free'"),
        ({"options": {"M.size": [1]}}, "unknown option 'size' for block 'M'"),
        ({"options": {"M.d_state": [0]}}, "below the minimum 1"),
        ({"options": {"d_state": [8]}}, "option keys look like SYMBOL.option"),
        ({"model": {"depth": [2]}}, "cannot search over 'depth'"),
        ({"model": {"dim": [16], "num_heads": [[1, 1, 2, 2], [1, 1, 3, 3]]}}, "3 heads do not divide width 64"),
        ({"layout": {"mixer": "Q"}}, "unknown block 'Q'"),
        ({"variants": {"choices": {}}}, "needs at least one choice"),
    ],
)
def test_bad_spaces_name_the_key(config, message) -> None:
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_config(config, T_BASE)


def test_constraints_values_and_messages() -> None:
    c = Constraints.from_config({"max_params": "5e6", "min_throughput": 100})
    figures = {"params": 6_000_000, "throughput_img_s": 150.0}
    assert c.values(figures) == {"max_params": 1_000_000.0, "min_throughput": -50.0}
    assert c.violated(figures) == ["params 6M > max_params 5M"]
    assert c.violated({"params": 10, "throughput_img_s": 50}) == ["throughput_img_s 50 < min_throughput 100"]
    with pytest.raises(ConfigError, match="constraints.max_size: unknown constraint"):
        Constraints.from_config({"max_size": 1})
    with pytest.raises(ConfigError, match="constraints.max_macs: expected a number"):
        Constraints.from_config({"max_macs": "lots"})


def test_big_spaces_are_checked_on_every_choice_of_every_dimension(monkeypatch) -> None:
    space = SearchSpace.from_config({"free": {"stages": [3, 4], "symbols": ["M", "A", "M[d_state=16]"]}}, T_BASE)
    assert space.size() == 3**12
    seen: dict[str, set] = {}
    real = SearchSpace.candidate

    def record(self, params):
        for key, value in params.items():
            seen.setdefault(key, set()).add(str(value))
        return real(self, params)

    monkeypatch.setattr(SearchSpace, "candidate", record)
    space._check_all_buildable()
    assert len(seen) == 12 and all(len(values) == 3 for values in seen.values())
