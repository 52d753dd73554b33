"""reports.agreement: rank correlations against scipy, bootstrap intervals, top-k overlap, regret, fidelity levels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports.agreement import (
    MIN_SHARED,
    agree,
    bootstrap_interval,
    fidelity_levels,
    fidelity_ranks,
    front_mask,
    kendall_tau,
    paired,
    seed_means,
    spearman_rho,
    top_k,
    top_k_overlap,
)
from reports.demo import make_frame
from reports.pareto import pareto_mask


def _cases():
    rng = np.random.default_rng(7)
    out = []
    for n in (3, 4, 7, 11, 30):
        x = rng.normal(size=n)
        out.append((x, x + rng.normal(0, 0.8, n)))
        ties = rng.integers(0, 3, n).astype(float)  # heavy ties on one side
        out.append((ties, ties + rng.integers(0, 2, n)))
    out.append((np.array([1.0, 2, 3, 4, 5]), np.array([5.0, 4, 3, 2, 1])))  # perfectly reversed
    return out


@pytest.mark.parametrize("x, y", _cases())
def test_point_estimates_match_scipy_including_ties(x, y):
    assert kendall_tau(x, y) == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)  # tau-b, scipy's default
    assert spearman_rho(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)


def test_large_inputs_match_scipy_too():
    rng = np.random.default_rng(3)
    x = rng.normal(size=400)
    y = np.round(x + rng.normal(size=400), 1)
    assert kendall_tau(x, y) == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)


def test_constant_side_gives_nan_not_an_error():
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3])) and np.isnan(spearman_rho([2, 2, 2], [3, 1, 2]))


@pytest.mark.parametrize("statistic, point", [("kendall", kendall_tau), ("spearman", spearman_rho)])
def test_bootstrap_interval_holds_the_estimate_and_is_deterministic_per_seed(statistic, point):
    rng = np.random.default_rng(11)
    x = rng.normal(size=15)
    y = x + rng.normal(0, 0.7, 15)
    lo, hi = bootstrap_interval(x, y, statistic, resamples=1000, seed=0)
    assert lo < point(x, y) < hi and -1 <= lo and hi <= 1
    assert (lo, hi) == bootstrap_interval(x, y, statistic, resamples=1000, seed=0)
    assert (lo, hi) != bootstrap_interval(x, y, statistic, resamples=1000, seed=1)
    # more noise: a wider interval
    noisy = x + rng.normal(0, 3.0, 15)
    wide = bootstrap_interval(x, noisy, statistic, resamples=1000, seed=0)
    assert wide[1] - wide[0] > hi - lo


def test_bootstrap_of_perfect_agreement_is_a_point_and_of_too_little_data_is_nan():
    x = np.arange(8.0)
    assert bootstrap_interval(x, 2 * x + 1, "kendall", resamples=200) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_interval([1.0], [2.0])))


def test_top_k_on_hand_made_data():
    keys = ["a", "b", "c", "d", "e", "f"]
    low = [6, 5, 4, 3, 2, 1]  # a b c d e f
    high = [5, 6, 1, 4, 3, 2]  # b a d e f c
    assert top_k(low, keys, 3, maximize=True) == ["a", "b", "c"]
    assert top_k(high, keys, 3, maximize=True) == ["b", "a", "d"]
    assert top_k_overlap(low, high, keys, 1, maximize=True) == 0.0
    assert top_k_overlap(low, high, keys, 2, maximize=True) == 1.0
    assert top_k_overlap(low, high, keys, 3, maximize=True) == pytest.approx(2 / 3)
    # minimising the same numbers reverses both orders: bottom 3 are f e d / c f e
    assert top_k_overlap(low, high, keys, 3, maximize=False) == pytest.approx(2 / 3)
    # equal values are ordered by key, so a tie does not make the answer depend on row order
    assert top_k([1, 1, 0], ["z", "y", "x"], 1, maximize=True) == ["y"]


def test_agree_regret_winner_rank_top_k_and_nan_pairs():
    keys = ["a", "b", "c", "d", "e", "f", "g"]
    low = [6, 5, 4, 3, 2, 1, np.nan]  # g has no low score: dropped
    high = [70.0, 75.0, 60.0, 72.0, 65.0, 61.0, 99.0]
    a = agree(low, high, keys, "top1", maximize=True, resamples=300)
    assert a.n == 6 and a.enough
    assert a.tau == pytest.approx(sps.kendalltau(low[:6], high[:6]).statistic)
    assert a.tau_lo <= a.tau <= a.tau_hi and a.rho_lo <= a.rho <= a.rho_hi
    assert a.winner == "a" and a.winner_rank == 3 and a.regret == pytest.approx(5.0)  # best is b (75), a has 70
    assert sorted(a.top_k) == [1, 3, 5] and a.top_k[1] == 0.0 and a.top_k[3] == pytest.approx(2 / 3)
    # minimising: the low winner is f (1) whose high value 61 is 1 worse than the best (c, 60)
    m = agree(low, high, keys, "latency_ms", maximize=False, resamples=300)
    assert m.winner == "f" and m.winner_rank == 2 and m.regret == pytest.approx(1.0)


def test_fewer_than_three_shared_architectures_give_no_numbers():
    a = agree([1.0, 2.0, np.nan], [2.0, 1.0, 3.0], ["a", "b", "c"], "top1", True)
    assert a.n == 2 < MIN_SHARED and not a.enough
    assert np.isnan(a.tau) and np.isnan(a.rho_lo) and a.top_k == {} and a.winner == ""


def test_levels_ranks_and_seed_means_from_a_trials_table():
    frame = make_frame([
        {"pattern": "M M", "seed": 0, "top1": 50.0, "fidelity_label": "supernet", "fidelity_rank": -1},
        {"pattern": "M A", "seed": 0, "top1": 55.0, "fidelity_label": "supernet", "fidelity_rank": -1},
        {"pattern": "A A", "seed": 0, "top1": 52.0, "fidelity_label": "supernet"},  # rank from the label
        {"pattern": "M M", "seed": 0, "top1": 70.0, "fidelity_label": "full", "fidelity_rank": 1000},
        {"pattern": "M M", "seed": 1, "top1": 72.0, "fidelity_label": "full", "fidelity_rank": 1000},
        {"pattern": "M A", "seed": 0, "top1": 75.0},  # an older trial: no fidelity, counts as full
        {"pattern": "A A", "state": "RUNNING", "fidelity_rank": 1000},
        {"pattern": "timm:resnet18", "top1": 90.0, "is_baseline": True},
    ])
    assert fidelity_ranks(frame).tolist() == [-1, -1, -1, 1000, 1000, 1000, 1000, 1000]
    levels = fidelity_levels(frame)
    assert [(lv.rank, lv.label, lv.trials, lv.architectures) for lv in levels] == [
        (-1, "supernet", 3, 3), (1000, "full", 3, 2)]
    ranks = fidelity_ranks(frame)
    low = seed_means(frame[ranks == -1], ["top1"])
    high = seed_means(frame[ranks == 1000], ["top1"])
    assert "h-timm:resnet18" not in set(high["key"])  # baselines are not scored by the cheap method
    both = paired(low, high, "top1")
    assert both["pattern"].tolist() == ["M A", "M M"]
    assert both["low"].tolist() == [55.0, 50.0] and both["high"].tolist() == [75.0, 71.0]


def test_front_mask_matches_the_full_non_dominated_sort():
    rng = np.random.default_rng(5)
    points = np.round(rng.normal(size=(700, 2)), 1)  # rounded: many duplicates and ties
    points[1] = points[0]
    points[2] = [points[0, 0], points[0, 1] + 1]  # same x, worse y: dominated
    assert front_mask(points, chunk=64).tolist() == pareto_mask(points).tolist()
    three = rng.normal(size=(200, 3))
    assert front_mask(three).tolist() == pareto_mask(three).tolist()


def test_seed_means_of_an_empty_table():
    frame = make_frame([{"pattern": "M", "state": "FAIL"}])
    assert seed_means(frame, ["top1"]).empty
    assert fidelity_levels(frame) == [] and fidelity_levels(pd.DataFrame(columns=frame.columns)) == []
