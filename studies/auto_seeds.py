"""`seeds: auto`: which candidates get another seed, decided from the seeds they already have.

A first round gives every row (grid cell or baseline) the `initial` seeds. After each round, a row gets
one more seed only while its top-1 interval (a t-interval at the study's confidence) still overlaps
the default (ablation) row's, or a front row's where the top-1 order decides which of the two
dominates: then the data cannot yet say which is better. The default row gets every seed another
row gets, so paired comparisons (same seed, same data order) stay complete. Rows stop at `max` seeds
and the study at `budget` trials; when the budget cannot pay for every unresolved row, the widest
intervals go first.

Everything here is a pure function over {row: values}, so it is tested on fake values; the study side
(reading trials, queuing the seeds) is `studies.planning.plan_more_seeds`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scipy import stats

from hybridlab.metrics import Objective


@dataclass(frozen=True)
class Interval:
    """Mean of a row's seed values and its two-sided t-interval (infinite with a single value)."""

    mean: float
    lo: float
    hi: float
    n: int

    def overlaps(self, other: Interval) -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def text(self) -> str:
        if self.n < 2:
            return f"{self.mean:.2f} (1 seed, no interval yet)"
        return f"[{self.lo:.1f}, {self.hi:.1f}]"


def t_interval(values: Sequence[float], confidence: float) -> Interval:
    """The mean's t-interval; n = 1 gives (-inf, inf), since one seed says nothing about the spread."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = float(statistics.fmean(values))
    if n < 2:
        return Interval(mean, -math.inf, math.inf, 1)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def _better_or_equal(a: Mapping[str, float], b: Mapping[str, float], objectives: Sequence[Objective]) -> bool:
    """a is at least as good as b on every objective both have (`sign` turns each into one to minimise)."""
    return all(o.sign * a[o.name] <= o.sign * b[o.name] for o in objectives if o.name in a and o.name in b)


def front(means: Mapping[str, Mapping[str, float]], objectives: Sequence[Objective]) -> set[str]:
    """Rows no other row dominates (at least as good on every objective, better on one), on the means."""
    def dominates(a: str, b: str) -> bool:
        return _better_or_equal(means[a], means[b], objectives) and any(
            o.sign * means[a][o.name] < o.sign * means[b][o.name]
            for o in objectives if o.name in means[a] and o.name in means[b])

    return {r for r in means if not any(dominates(o, r) for o in means if o != r)}


def unresolved(
    values: Mapping[str, Sequence[float]],
    default: str | None,
    objectives: Sequence[Objective],
    confidence: float = 0.95,
    others: Mapping[str, Mapping[str, float]] | None = None,
    metric: str = "top1",
) -> dict[str, str]:
    """Rows whose comparison with the default row or a front row is not resolved yet, with the reason.

    `values`: the seed-dependent metric (top-1) per row; `others`: each row's other objectives (per
    architecture, e.g. throughput). Rows with no value are left out.
    """
    intervals = {k: t_interval(v, confidence) for k, v in values.items() if len(v)}
    others = others or {}
    rest = [o for o in objectives if o.name != metric]
    means = {k: {**{o.name: others[k][o.name] for o in rest if o.name in others.get(k, {})}, metric: iv.mean}
             for k, iv in intervals.items()}
    ranked = next((o for o in objectives if o.name == metric), Objective(metric, "maximize"))
    on_front = front(means, [ranked, *rest])
    reasons: dict[str, str] = {}
    if default in intervals:
        ref = intervals[default]
        for key, iv in intervals.items():
            if key != default and iv.overlaps(ref):
                reasons[key] = f"interval {iv.text()} overlaps default row {default} {ref.text()}"
    for f in sorted(on_front):
        for key, iv in intervals.items():
            if key == f or not iv.overlaps(intervals[f]):
                continue
            if _better_or_equal(means[f], means[key], rest):  # the top-1 order decides whether f dominates it
                reasons.setdefault(key, f"interval {iv.text()} overlaps front row {f} {intervals[f].text()}")
                reasons.setdefault(f, f"front row; interval {intervals[f].text()} overlaps {key} {iv.text()}")
    return reasons


@dataclass
class Decision:
    """The seeds to add this round ({row: (seed, reason)}) and, when none, why the study stops."""

    added: dict[str, tuple[int, str]] = field(default_factory=dict)
    stopped: str | None = None


def next_seeds(
    planned: Mapping[str, Sequence[int]],
    values: Mapping[str, Sequence[float]],
    default: str | None,
    objectives: Sequence[Objective],
    *,
    max_seeds: int,
    budget: int | None = None,
    confidence: float = 0.95,
    others: Mapping[str, Mapping[str, float]] | None = None,
    metric: str = "top1",
) -> Decision:
    """One round's decision: one more seed for every unresolved row below `max_seeds`, within `budget`.

    `planned`: every row's seeds already planned (finished or not; a row's next seed is the smallest
    one it lacks); the budget counts them all. Deterministic, so two workers deciding the same round
    decide alike.
    """
    reasons = unresolved(values, default, objectives, confidence, others, metric)
    if not reasons:
        return Decision(stopped="resolved: every interval is clear of the default row and the front")
    capped = sorted(k for k in reasons if len(planned.get(k, ())) >= max_seeds)
    want = {k: r for k, r in reasons.items() if k not in capped}
    if want and default is not None and default in values and default not in want:
        if len(planned.get(default, ())) < max_seeds:
            want[default] = "paired reference for " + ", ".join(sorted(want))
    if not want:
        return Decision(stopped=f"max seeds ({max_seeds}) reached for every unresolved row: {', '.join(capped)}")
    widths = {k: t_interval(values[k], confidence).width if values.get(k) else math.inf for k in want}
    order = sorted(want, key=lambda k: (k != default, -widths[k], k))
    if budget is not None:
        left = budget - sum(len(s) for s in planned.values())
        order = order[: max(left, 0)]
        if order == [default] and len(want) > 1:  # a reference alone compares nothing
            order = []
        if not order:
            return Decision(stopped=f"budget spent ({budget} trials) with {len(reasons)} rows unresolved")
    added = {}
    for key in order:
        have = set(planned.get(key, ()))
        seed = next(s for s in range(max_seeds) if s not in have)
        added[key] = (seed, want[key])
    return Decision(added=added)


__all__ = ["Decision", "Interval", "front", "next_seeds", "t_interval", "unresolved"]
