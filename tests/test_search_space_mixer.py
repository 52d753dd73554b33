"""`search_space.layout.mixer` as a list: the mixer becomes a dimension, one candidate per mixer."""

from __future__ import annotations

import optuna
import pytest

from blocks import ModelSpec
from hybridlab.errors import ConfigError
from search_space import SearchSpace

BASE = ModelSpec.create("C | C*3 | M*4 A*4 | M*2 A*2", dim=16, in_dim=8, num_heads=[1, 1, 2, 2], num_classes=10)
ZOO = ["M", "V", "S", "Md", "G", "H"]


def _space(mixer, **layout) -> SearchSpace:
    return SearchSpace.from_config({"layout": {"stages": [3, 4], "family": ["attn_last_half"], "mixer": mixer, **layout}},
                                   BASE)  # fmt: skip


def test_one_candidate_per_mixer_in_last_half_placement() -> None:
    cands = _space(ZOO).candidates()
    assert [c.label for c in cands] == [f"attn_last_half/{m}" for m in ZOO]
    assert [c.spec.pattern for c in cands] == [f"C | C*3 | {m}*4 A*4 | {m}*2 A*2" for m in ZOO]
    assert all(c.family == "attn_last_half" for c in cands)
    assert [c.params["mixer"].canonical() for c in cands] == ZOO


def test_a_single_mixer_keeps_its_old_labels_and_params() -> None:
    """One block text (the old form) adds no dimension: existing studies keep their labels and trial params."""
    for mixer in ("V", ["V"]):
        cand = _space(mixer).candidates()
        assert [c.spec.pattern for c in cand] == ["C | C*3 | V*4 A*4 | V*2 A*2"]
    (old,) = _space("V").candidates()
    assert old.label == "attn_last_half" and "mixer" not in old.params
    (listed,) = _space(["V"]).candidates()
    assert listed.label == "attn_last_half/V"


def test_labels_name_options_and_combine_with_families() -> None:
    space = SearchSpace.from_config(
        {"layout": {"stages": [4], "family": ["attn_last_half", "attn_first_half"], "mixer": ["M", "S[d_state=4]"]}},
        BASE,
    )
    labels = [c.label for c in space.candidates()]
    assert labels == ["attn_last_half/M", "attn_last_half/S[d_state=4]", "attn_first_half/M",
                      "attn_first_half/S[d_state=4]"]  # fmt: skip
    assert space.candidates()[3].spec.pattern == "C | C*3 | M*4 A*4 | A*2 S[d_state=4]*2"


def test_mixers_that_give_one_architecture_are_kept_once() -> None:
    """With attention everywhere the mixer does not appear: the candidates collapse to one, first label kept."""
    cands = _space(ZOO, family=["attn_only", "attn_last_half"]).candidates()
    assert [c.label for c in cands] == ["attn_only/M"] + [f"attn_last_half/{m}" for m in ZOO]


def test_suggest_samples_the_mixer_with_optuna() -> None:
    space = _space(["M", "V", "S[d_state=4]"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        cand = space.suggest(trial)
        assert trial.params["mixer"] in {"M", "V", "S[d_state=4]"}  # stored as text
        assert cand.label == f"attn_last_half/{trial.params['mixer']}"
        seen.add(cand.spec.parsed.stages[3][0].canonical())
        study.tell(trial, 0.0)
    assert seen == {"M", "V", "S[d_state=4]"}


@pytest.mark.parametrize(
    ("mixer", "where", "message"),
    [
        (["M", 3], "search_space.layout.mixer[1]", "expected a block"),
        (["M", "Q"], "search_space.layout.mixer[1]", "Q"),
        (["M", "M A"], "search_space.layout.mixer[1]", "expected one block"),
        (["V", "M", "V"], "search_space.layout.mixer[2]", "same block as search_space.layout.mixer[0]"),
        (["M", "M[d_state=8]"], "search_space.layout.mixer[1]", "same block"),  # 8 is M's default
        (["M", "M[bogus=1]"], "search_space.layout.mixer[1]", "bogus"),
        ([], "search_space.layout.mixer", "at least 1"),
    ],
)
def test_bad_mixer_entries_name_their_index(mixer, where, message) -> None:
    with pytest.raises(ConfigError) as info:
        _space(mixer)
    assert info.value.where == where
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_variant_named_mixer_collides_with_the_mixer_dimension() -> None:
    config = {"layout": {"stages": [4], "mixer": ["M", "V"]},
              "variants": {"name": "mixer", "choices": {"small": {"M": {"d_state": 4}}}}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_config(config, BASE)
    assert info.value.where == "search_space.variants.name"
