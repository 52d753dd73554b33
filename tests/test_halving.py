"""Successive halving (`strategy: halving`): the section's checks, rung planning, promotion with several
workers on fake trials, a killed study resumed, and one tiny real run continuing a promoted trial."""

from __future__ import annotations

import pytest
from conftest import tiny_raw

from studies.config import StudyConfigError, load_study_config
from studies.strategy import HalvingSettings, budget_fraction, derive_rungs, parse_strategy

# -- the strategy section -------------------------------------------------------------------------------------------


def _config(strategy, **changes):
    return load_study_config("tiny.yaml", raw=tiny_raw(strategy=strategy, **changes))


def _problem(strategy, **changes) -> str:
    with pytest.raises(StudyConfigError) as info:
        _config(strategy, **changes)
    return str(info.value)


def test_no_strategy_section_is_none() -> None:
    assert load_study_config("tiny.yaml", raw=tiny_raw()).strategy is None
    assert parse_strategy(None) is None


def test_halving_defaults_derive_rungs_from_the_full_budget() -> None:
    config = _config("halving", train__epochs=9)
    assert config.strategy == HalvingSettings("halving", eta=3, resource="epochs", rungs=(1, 3, 9))
    assert config.strategy.describe() == "halving (eta 3, epochs rungs 1/3/9)"
    assert _config({"name": "halving", "eta": 2, "min_budget": 2}, train__epochs=8).strategy.rungs == (2, 4, 8)


def test_derived_rungs() -> None:
    assert derive_rungs(9, 3) == (1, 3, 9)
    assert derive_rungs(27, 3, 1) == (1, 3, 9, 27)
    assert derive_rungs(10, 3) == (1, 3, 10)
    assert derive_rungs(20_000, 3, 2_000) == (2_222, 6_667, 20_000)


def test_budget_fraction_counts_continued_epochs_once() -> None:
    # 7 architectures, rungs 1/3/9: 7x1 + 3x2 + 1x6 = 19 of 63 epochs
    assert budget_fraction(HalvingSettings("halving", rungs=(1, 3, 9)), 7) == pytest.approx(19 / 63)
    subset = HalvingSettings("halving", resource="train_subset", rungs=(100, 300, 900))
    assert budget_fraction(subset, 7) == pytest.approx((700 + 900 + 900) / 6300)


@pytest.mark.parametrize(("strategy", "changes", "message"), [
    ({"name": "halving", "eta": 1}, {}, "strategy.eta: must be >= 2, got 1"),
    ({"name": "halving", "rungs": [3, 1]}, {}, "strategy.rungs[1]: rungs must increase, got 1 after 3"),
    ({"name": "halving", "rungs": [1, 3]}, {"train__epochs": 9},
     "strategy.rungs: the last rung must be the full budget train.epochs = 9, got 3"),
    ("halving", {"train__epochs": 1}, "strategy: train.epochs = 1 leaves no lower rung at eta 3"),
    ({"name": "one_way"}, {}, "strategy.name: unknown strategy 'one_way' (known: halving"),
    ({"eta": 3}, {}, "strategy.name: missing 'name'"),
    ({"name": "halving", "rungs": [1, 3], "min_budget": 1}, {}, "strategy: give rungs or min_budget, not both"),
    ({"name": "halving", "speed": 1}, {}, "strategy.speed: unknown key 'speed'"),
    ({"name": "halving", "resource": "train_subset"}, {}, "strategy.resource: resource train_subset needs data.train_subset"),
    ({"name": "halving", "resource": "img_size", "rungs": [8, 16]}, {}, "strategy.rungs[0]: stage 2 window 4 is larger"),
    ({"name": "halving", "rungs": [1, 3]}, {"train__epochs": 3, "sampler": "tpe", "n_trials": 3},
     "strategy: halving promotes within a planned grid: needs sampler grid, got tpe"),
    ({"name": "halving", "rungs": [1, 3]}, {"train__epochs": 3, "seeds": "auto"}, "not seeds: auto"),
])
def test_bad_sections_are_one_line_naming_the_key(strategy, changes, message) -> None:
    text = _problem(strategy, **changes)
    assert message in text
    assert len([line for line in text.splitlines() if "strategy" in line]) == 1


def test_other_resources_take_their_full_budget_from_the_data() -> None:
    subset = _config({"name": "halving", "resource": "train_subset", "eta": 2}, data__train_subset=64)
    assert subset.strategy.rungs == (16, 32, 64)
    size = _config({"name": "halving", "resource": "img_size", "rungs": [16, 32]}, data__img_size=32)
    assert size.strategy.rungs == (16, 32)
