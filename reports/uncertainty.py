"""Intervals per architecture, ties with the Pareto front, and what the data can and cannot tell.

Two kinds of figures carry two kinds of uncertainty:
- seed-dependent figures (top-1, loss, ...): a 95% t-interval over seeds, and a percentile bootstrap
  where n >= 5. One seed gives no interval: such a figure cannot be told apart from any other.
- per-architecture measurements (throughput, latency, ...): the measured spread when the trials carry
  it (`throughput_lo`/`throughput_hi`), else a t-interval over separate measurements of the seeds, else
  none: the value is then compared as a point, and the report says that its spread was not recorded.

A dominated architecture whose intervals overlap a front point's on every objective is "tied" with the
front: the data cannot tell it from that point. A front point is "resolved" when no architecture is tied
with it; a dominated one when it is tied with no front point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hybridlab.metrics import METRICS, Objective
from reports.stats import bootstrap_interval, intervals_overlap, t_interval

# Trial columns that carry the measured spread of a per-architecture figure (results-file contract).
INTERVAL_COLUMNS: dict[str, tuple[str, str]] = {"throughput_img_s": ("throughput_lo", "throughput_hi")}


def seed_dependent(name: str) -> bool:
    """Figures that change from seed to seed (unknown columns are assumed to)."""
    metric = METRICS.get(name)
    return metric is None or not metric.per_architecture


def metric_interval(group: pd.DataFrame, name: str) -> dict[str, float]:
    """`lo`/`hi` (95%) and, for seed-dependent figures with n >= 5, `boot_lo`/`boot_hi`, for one architecture."""
    values = pd.to_numeric(group[name], errors="coerce").astype(float).dropna().to_numpy()
    out = {"lo": math.nan, "hi": math.nan}
    columns = INTERVAL_COLUMNS.get(name)
    if columns and all(c in group.columns for c in columns):
        lo = pd.to_numeric(group[columns[0]], errors="coerce").astype(float).dropna()
        hi = pd.to_numeric(group[columns[1]], errors="coerce").astype(float).dropna()
        if len(lo) and len(hi):
            return {"lo": float(lo.min()), "hi": float(hi.max())}  # the envelope of the seeds' measurements
    if not seed_dependent(name) and len(np.unique(values)) < 2:
        return out  # one shared measurement: its spread is unknown, not zero
    _, out["lo"], out["hi"] = t_interval(values)
    if seed_dependent(name):
        out["boot_lo"], out["boot_hi"] = bootstrap_interval(values)
    return out


def noisy_flag(group: pd.DataFrame) -> tuple[bool, str]:
    """Whether any trial's throughput record is marked noisy, and the reasons given (unique, in order)."""
    if "noisy" not in group.columns:
        return False, ""
    flags = [_truthy(v) for v in group["noisy"]]
    reasons: list[str] = []
    if "noisy_reason" in group.columns:
        for flag, reason in zip(flags, group["noisy_reason"]):
            text = "" if _missing(reason) else str(reason).strip()
            if flag and text and text not in reasons:
                reasons.append(text)
    return any(flags), "; ".join(reasons)


def bounds(row: pd.Series, name: str) -> tuple[float, float]:
    """The interval used to compare architectures: unknown for a seed figure without one (NaN: unbounded),
    the point itself for a measurement without a recorded spread."""
    lo, hi = row.get(f"{name}_lo", math.nan), row.get(f"{name}_hi", math.nan)
    lo, hi = float(lo) if not _missing(lo) else math.nan, float(hi) if not _missing(hi) else math.nan
    if not (np.isfinite(lo) and np.isfinite(hi)) and not seed_dependent(name):
        mean = float(row.get(f"{name}_mean", math.nan))
        return mean, mean
    return lo, hi


def overlaps(a: pd.Series, b: pd.Series, objectives: Sequence[Objective]) -> bool:
    """Whether two architectures' intervals overlap on every objective."""
    return all(intervals_overlap(bounds(a, o.name), bounds(b, o.name)) for o in objectives)


def mark_ties(arch: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """Add `tied` (a dominated architecture the intervals cannot separate from a front point), `tied_with`
    (how many front points, or for a front point how many tied architectures) and `resolved`."""
    arch = arch.copy()
    n = len(arch)
    tied = np.zeros(n, dtype=bool)
    tied_with = np.zeros(n, dtype=int)
    if n and len(objectives) >= 2:
        ranks = arch["rank"].to_numpy(dtype=float)
        front = [i for i in range(n) if ranks[i] == 1]
        for i in range(n):
            if not np.isfinite(ranks[i]) or ranks[i] == 1:
                continue
            hits = [j for j in front if overlaps(arch.iloc[i], arch.iloc[j], objectives)]
            if hits:
                tied[i] = True
                tied_with[i] = len(hits)
                for j in hits:
                    tied_with[j] += 1
    arch["tied"] = tied
    arch["tied_with"] = tied_with
    ranked = arch["rank"].notna() & (len(objectives) >= 2) if n else pd.Series([], dtype=bool)  # one objective: no front
    # A seed-dependent objective without an interval (one seed) cannot support any place: neither on the front nor
    # below it, so such rows are not called resolved (unknown) whatever the other objectives show.
    unknown = [any(seed_dependent(o.name) and not np.isfinite(bounds(arch.iloc[i], o.name)).all() for o in objectives)
               for i in range(n)]
    arch["resolved"] = pd.array([bool(tw == 0) if r and not u else pd.NA
                                 for r, tw, u in zip(ranked, tied_with, unknown)], dtype="boolean")
    return arch


def best_of(arch: pd.DataFrame, objective: Objective) -> tuple[pd.Series | None, int]:
    """The architecture with the best mean of `objective`, and how many others its interval cannot separate."""
    col = f"{objective.name}_mean"
    if not len(arch) or col not in arch.columns:
        return None, 0
    values = arch[col].astype(float)
    if not values.notna().any():
        return None, 0
    best = arch.loc[values.idxmax() if objective.maximize else values.idxmin()]
    others = [r for _, r in arch.iterrows() if r["key"] != best["key"] and np.isfinite(float(r[col]))]
    tied = sum(intervals_overlap(bounds(best, objective.name), bounds(r, objective.name)) for r in others)
    return best, tied


def interval_source(frame: pd.DataFrame, name: str) -> str:
    """How the intervals of `name` were made, in words (for notes and the summary)."""
    if seed_dependent(name):
        return "95% t-interval over seeds (percentile bootstrap too where n ≥ 5)"
    columns = INTERVAL_COLUMNS.get(name)
    if columns and all(c in frame.columns for c in columns) and pd.to_numeric(frame[columns[0]], errors="coerce").notna().any():
        kind = ""
        if "throughput_interval" in frame.columns:
            kinds = sorted({str(v) for v in frame["throughput_interval"] if not _missing(v) and str(v)})
            kind = f" ({', '.join(kinds)})" if kinds else ""
        return f"measured spread{kind}, from the trials' {columns[0]}/{columns[1]}"
    return ("no recorded measurement spread: an interval over seeds where they were measured separately, "
            "else the value alone")


def _missing(value: Any) -> bool:
    try:
        return value is None or value is pd.NA or math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if value is None or value is pd.NA:
        return False
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False
