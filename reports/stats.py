"""The statistics behind honest report figures: intervals over seeds, paired comparisons, power.

Plain functions on sequences of numbers (no pandas), so each can be checked against scipy directly.
- `t_interval`: mean and 95% Student-t interval over seeds (n >= 2).
- `bootstrap_interval`: percentile bootstrap 95% interval of the mean (n >= 5; seeded, so reproducible).
- `paired_difference`: candidate minus default, seed by seed, with its t-interval; "resolved" when the
  interval excludes 0. Seeds train on the same data order for every candidate, so pairing removes the
  seed-to-seed part of the noise.
- `minimum_detectable_difference` / `seeds_needed`: the paired t-test's power (noncentral t) at a given
  spread of the paired differences: the smallest gap n seeds resolve, and the seeds a gap needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_MIN_N = 5
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
MAX_SEEDS = 1000  # seeds_needed gives up beyond this


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, lo, hi): the Student-t interval of the mean; lo and hi are NaN with fewer than two values."""
    x = _clean(values)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(sps.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def bootstrap_interval(values: Sequence[float], confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; NaN below `BOOTSTRAP_MIN_N` values (too few to resample)."""
    x = _clean(values)
    if len(x) < BOOTSTRAP_MIN_N:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Paired:
    """Candidate minus default over the seeds both have."""

    n: int
    mean: float
    lo: float
    hi: float
    sd: float  # sample std of the paired differences (NaN below two pairs)
    seeds: tuple[int, ...]

    @property
    def resolved(self) -> bool:
        """The 95% interval excludes 0 (False when it cannot be computed)."""
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi) and (self.lo > 0 or self.hi < 0))


def paired_difference(candidate: Mapping[int, float], default: Mapping[int, float],
                      confidence: float = CONFIDENCE) -> Paired:
    """Mean paired difference (candidate - default) over shared seeds, with its t-interval."""
    seeds = tuple(sorted(s for s in candidate if s in default
                         and np.isfinite(candidate[s]) and np.isfinite(default[s])))
    diffs = np.array([candidate[s] - default[s] for s in seeds], dtype=float)
    mean, lo, hi = t_interval(diffs, confidence)
    sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else math.nan
    return Paired(len(seeds), mean, lo, hi, sd, seeds)


def paired_power(gap: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs to detect a true mean difference `gap`."""
    if n < 2 or not np.isfinite(sd) or sd <= 0:
        return math.nan
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    shift = abs(gap) / (sd / math.sqrt(n))
    power = float(sps.nct.sf(crit, df, shift) + sps.nct.cdf(-crit, df, shift))
    if not math.isfinite(power):  # scipy's noncentral t is NaN far in its tail at df 1: integrate it directly,
        # T = (Z + shift) / sqrt(V / df) with V ~ chi2(df), so P(|T| > crit) = E_V[Phi(shift - crit s) + Phi(-shift - crit s)]
        def given(v: float) -> float:
            s = math.sqrt(v / df)
            return (sps.norm.cdf(shift - crit * s) + sps.norm.cdf(-shift - crit * s)) * sps.chi2.pdf(v, df)

        power = float(integrate.quad(given, 0.0, math.inf, limit=200)[0])
    return power


def minimum_detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true paired difference that n seeds find with the given power (NaN when unknown)."""
    if n < 2 or not np.isfinite(sd) or sd <= 0:
        return math.nan
    upper = sd
    while paired_power(upper, sd, n, alpha) < power:
        upper *= 2
    return float(optimize.brentq(lambda g: paired_power(g, sd, n, alpha) - power, 0.0, upper, xtol=1e-10 * sd))


def seeds_needed(gap: float, sd: float, alpha: float = ALPHA, power: float = POWER,
                 limit: int = MAX_SEEDS) -> int | None:
    """Seeds (pairs) for the paired t-test to resolve `gap` with the given power; None when unknown or over
    `limit` (a zero gap never resolves)."""
    if not np.isfinite(gap) or gap == 0 or not np.isfinite(sd) or sd <= 0:
        return None
    for n in range(2, limit + 1):
        if paired_power(gap, sd, n, alpha) >= power:
            return n
    return None


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """(pooled sample std, degrees of freedom) over groups of at least two values; (NaN, 0) when none."""
    ss, df = 0.0, 0
    for group in groups:
        x = _clean(group)
        if len(x) > 1:
            ss += float(((x - x.mean()) ** 2).sum())
            df += len(x) - 1
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share a point; an unknown (NaN) bound counts as unbounded."""
    a_lo, a_hi = (-math.inf if not np.isfinite(a[0]) else a[0]), (math.inf if not np.isfinite(a[1]) else a[1])
    b_lo, b_hi = (-math.inf if not np.isfinite(b[0]) else b[0]), (math.inf if not np.isfinite(b[1]) else b[1])
    return a_lo <= b_hi and b_lo <= a_hi
