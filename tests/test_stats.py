"""reports.stats against scipy: t-intervals, paired comparisons, bootstrap, power and seeds needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from reports.stats import (
    bootstrap_interval,
    intervals_overlap,
    minimum_detectable_difference,
    paired_difference,
    paired_power,
    pooled_sd,
    seeds_needed,
    t_interval,
)

ACC = [71.2, 73.9, 72.4, 70.8, 74.1, 72.0]


def test_t_interval_matches_scipy():
    mean, lo, hi = t_interval(ACC)
    ref = sps.t.interval(0.95, len(ACC) - 1, loc=np.mean(ACC), scale=sps.sem(ACC))
    assert mean == pytest.approx(np.mean(ACC)) and (lo, hi) == pytest.approx(ref, rel=1e-12)
    assert t_interval([70.0])[0] == 70.0 and math.isnan(t_interval([70.0])[1])  # one seed: no interval
    assert all(math.isnan(v) for v in t_interval([]))
    assert t_interval([1.0, float("nan"), 3.0])[0] == 2.0  # missing values are dropped


def test_paired_difference_matches_ttest_rel():
    default = {0: 72.0, 1: 74.5, 2: 71.0, 3: 73.2, 9: 80.0}
    candidate = {0: 71.1, 1: 73.0, 2: 70.6, 3: 72.9, 5: 60.0}  # seeds 5 and 9 have no partner
    paired = paired_difference(candidate, default)
    assert paired.seeds == (0, 1, 2, 3) and paired.n == 4
    c = [candidate[s] for s in paired.seeds]
    d = [default[s] for s in paired.seeds]
    result = sps.ttest_rel(c, d)
    ci = result.confidence_interval(0.95)
    assert paired.mean == pytest.approx(np.mean(np.subtract(c, d)))
    assert (paired.lo, paired.hi) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert paired.resolved == (result.pvalue < 0.05)
    noisy = paired_difference({0: 70.0, 1: 75.0, 2: 71.0}, {0: 72.0, 1: 72.0, 2: 72.0})
    assert noisy.lo < 0 < noisy.hi and not noisy.resolved  # contains 0: not resolved
    assert not paired_difference({0: 70.0}, {0: 72.0}).resolved  # one pair: no interval


def test_bootstrap_matches_scipy_percentile_bootstrap():
    x = np.array([71.2, 73.9, 72.4, 70.8, 74.1, 72.0, 75.3, 69.9])
    lo, hi = bootstrap_interval(x)
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=10_000,
                        random_state=np.random.default_rng(1)).confidence_interval
    width = ref.high - ref.low
    assert abs(lo - ref.low) < 0.05 * width and abs(hi - ref.high) < 0.05 * width  # different streams, same law
    assert bootstrap_interval(x) == (lo, hi)  # seeded: reproducible
    assert all(math.isnan(v) for v in bootstrap_interval(x[:4]))  # n < 5: no bootstrap


def test_power_mdd_and_seeds_needed_agree_with_the_noncentral_t():
    sd = 2.0
    # power straight from scipy's paired t-test distribution: P(|T| > t_crit) under a shift of gap/(sd/sqrt(n))
    n, gap = 6, 2.5
    crit = sps.t.ppf(0.975, n - 1)
    nc = gap / (sd / math.sqrt(n))
    assert paired_power(gap, sd, n) == pytest.approx(sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc))
    mdd = minimum_detectable_difference(sd, n)
    assert paired_power(mdd, sd, n) == pytest.approx(0.8, abs=1e-6)
    # the normal approximation (z_0.975 + z_0.8) * sd / sqrt(n) is a lower bound for the t-test's MDD
    assert mdd > (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sd / math.sqrt(n)
    needed = seeds_needed(1.0, sd)
    assert paired_power(1.0, sd, needed) >= 0.8 > paired_power(1.0, sd, needed - 1)
    assert seeds_needed(0.0, sd) is None and seeds_needed(1.0, float("nan")) is None
    assert seeds_needed(0.001, sd, limit=50) is None  # out of reach
    assert math.isnan(minimum_detectable_difference(sd, 1))


def test_two_seeds_have_a_finite_minimum_detectable_difference():
    # with one degree of freedom scipy's noncentral t is NaN far in the tail (CIFAR-10 study, 2 seeds per row)
    mdd = minimum_detectable_difference(0.5, 2)
    assert math.isfinite(mdd) and paired_power(mdd, 0.5, 2) == pytest.approx(0.8, abs=1e-6)
    assert mdd > minimum_detectable_difference(0.5, 3) > minimum_detectable_difference(0.5, 10)
    assert paired_power(11.455, 1.0, 2) == pytest.approx(0.7963, abs=1e-3)  # the shift where scipy gave NaN


def test_pooled_sd_and_overlap():
    sd, df = pooled_sd([[1.0, 3.0], [10.0, 10.0, 13.0], [5.0]])
    ss = 2.0 + ((np.array([10.0, 10.0, 13.0]) - 11.0) ** 2).sum()
    assert df == 3 and sd == pytest.approx(math.sqrt(ss / 3))
    assert intervals_overlap((1, 2), (2, 3)) and not intervals_overlap((1, 2), (2.5, 3))
    assert intervals_overlap((float("nan"), float("nan")), (5, 6))  # unknown: cannot be told apart
