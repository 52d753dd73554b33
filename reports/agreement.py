"""Does a cheap ranking predict the expensive one? Agreement between two fidelities of the same architectures.

A study may score the same architectures twice: with supernet weights and stand-alone, at a halving rung
and at the end, or in a low-resolution proxy study and a full one. Pairs are matched by a key (arch_hash
by default) and each side is the architecture's mean over seeds. For one objective this module gives

- Kendall's tau-b and Spearman's rho (ties handled as `scipy.stats.kendalltau` / `spearmanr` do), each with
  a percentile bootstrap 95% interval that resamples architectures (seeded, fixed number of resamples, so
  the same data always gives the same interval);
- top-k overlap: |top-k by the low score ∩ top-k by the high score| / k over the shared architectures;
- regret: the high-fidelity score lost by taking the low-fidelity winner instead of the true best.

Fewer than `MIN_SHARED` shared architectures give no statistics (a rank correlation of two points means
nothing). Pure numpy/scipy/pandas: no model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata

from hybridlab.fidelity import FULL, SUPERNET, rank_of
from reports.pareto import finished_rows

MIN_SHARED = 3
RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
TOP_KS = (1, 3, 5, 10)
_CHUNK_CELLS = 4_000_000  # resamples x pairs held in memory at once
_PAIRWISE_LIMIT = 10_000  # above this many pairs, tau is computed per resample in O(n log n) by scipy


# -- the statistics ---------------------------------------------------------------------------------
def _pair_signs(values: np.ndarray) -> np.ndarray:
    """Sign of every pairwise difference (i < j) of each row: shape (rows, n*(n-1)/2), int8."""
    n = values.shape[1]
    i, j = np.triu_indices(n, 1)
    return np.sign(values[:, i] - values[:, j]).astype(np.int8)


def _tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair; NaN where one side is constant."""
    sx, sy = _pair_signs(x), _pair_signs(y)
    score = (sx.astype(np.int64) * sy).sum(axis=1)
    denom = np.sqrt(np.count_nonzero(sx, axis=1).astype(float) * np.count_nonzero(sy, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, score / np.where(denom > 0, denom, 1.0), np.nan)


def _rho_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (Pearson on average ranks); NaN where one side is constant."""
    rx = rankdata(x, axis=1) - (x.shape[1] + 1) / 2
    ry = rankdata(y, axis=1) - (y.shape[1] + 1) / 2
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)


STATISTICS = {"kendall": _tau_b_rows, "spearman": _rho_rows}


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (scipy's default variant) of two equally long score lists."""
    if len(x) * (len(x) - 1) // 2 > _PAIRWISE_LIMIT:
        return float(kendalltau(np.asarray(x, float), np.asarray(y, float)).statistic)
    return float(_tau_b_rows(np.asarray(x, float)[None, :], np.asarray(y, float)[None, :])[0])


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho with average ranks for ties."""
    return float(_rho_rows(np.asarray(x, float)[None, :], np.asarray(y, float)[None, :])[0])


def bootstrap_interval(x: Sequence[float], y: Sequence[float], statistic: str = "kendall",
                       resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of a rank correlation, resampling the pairs (architectures) with
    replacement. Resamples where one side is constant are left out; NaN when none is left."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(resamples, n))
    pairs = n * (n - 1) // 2
    per_chunk = max(1, _CHUNK_CELLS // max(1, pairs))
    stat = STATISTICS[statistic]
    if statistic == "kendall" and pairs > _PAIRWISE_LIMIT:
        values = np.array([kendalltau(x[i], y[i]).statistic for i in index], dtype=float)
    else:
        values = np.concatenate([stat(x[index[s:s + per_chunk]], y[index[s:s + per_chunk]])
                                 for s in range(0, resamples, per_chunk)])
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def top_k(values: Sequence[float], keys: Sequence[str], k: int, maximize: bool) -> list[str]:
    """The keys of the k best values; equal values are ordered by key, so the choice is deterministic."""
    sign = -1.0 if maximize else 1.0
    order = sorted(range(len(values)), key=lambda i: (sign * float(values[i]), str(keys[i])))
    return [str(keys[i]) for i in order[:k]]


def top_k_overlap(low: Sequence[float], high: Sequence[float], keys: Sequence[str], k: int, maximize: bool) -> float:
    """|top-k(low) ∩ top-k(high)| / k over the same architectures."""
    k = min(k, len(keys))
    if k <= 0:
        return float("nan")
    return len(set(top_k(low, keys, k, maximize)) & set(top_k(high, keys, k, maximize))) / k


@dataclass
class Agreement:
    """Agreement of one objective between a low and a high fidelity, over `n` shared architectures."""

    metric: str
    maximize: bool
    n: int
    tau: float = float("nan")
    tau_lo: float = float("nan")
    tau_hi: float = float("nan")
    rho: float = float("nan")
    rho_lo: float = float("nan")
    rho_hi: float = float("nan")
    top_k: dict[int, float] = field(default_factory=dict)
    winner: str = ""  # the low-fidelity winner's key
    winner_rank: int = 0  # its place at high fidelity (1 = also the best there)
    regret: float = float("nan")  # high-fidelity score lost by taking it (>= 0; 0 = it is also the high best)

    @property
    def enough(self) -> bool:
        return self.n >= MIN_SHARED


def agree(low: Sequence[float], high: Sequence[float], keys: Sequence[str], metric: str, maximize: bool,
          resamples: int = RESAMPLES, seed: int = SEED) -> Agreement:
    """Every statistic of the module for one objective; pairs with a NaN on either side are dropped."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    keys = np.asarray([str(k) for k in keys], dtype=object)
    keep = np.isfinite(low) & np.isfinite(high)
    low, high, keys = low[keep], high[keep], keys[keep]
    out = Agreement(metric=metric, maximize=maximize, n=len(keys))
    if not out.enough:
        return out
    out.tau, out.rho = kendall_tau(low, high), spearman_rho(low, high)
    out.tau_lo, out.tau_hi = bootstrap_interval(low, high, "kendall", resamples, seed)
    out.rho_lo, out.rho_hi = bootstrap_interval(low, high, "spearman", resamples, seed)
    out.top_k = {k: top_k_overlap(low, high, keys, k, maximize) for k in TOP_KS if k < out.n}
    winner = top_k(low, keys, 1, maximize)[0]
    at = high[list(keys).index(winner)]
    best = high.max() if maximize else high.min()
    out.winner, out.regret = winner, float(abs(best - at))
    out.winner_rank = 1 + int(np.sum(high > at) if maximize else np.sum(high < at))
    return out


def front_mask(points: np.ndarray, chunk: int = 256) -> np.ndarray:
    """True for non-dominated rows of minimisation points (equal points do not dominate each other).

    Only the front, in chunks: O(n^2) comparisons but little memory, fast for a few thousand supernet scores.
    """
    points = np.asarray(points, float)
    out = np.zeros(len(points), dtype=bool)
    if points.ndim == 2 and points.shape[1] == 2 and len(points):
        return _front_2d(points[:, 0], points[:, 1])
    for s in range(0, len(points), chunk):
        block = points[s:s + chunk, None, :]
        le = np.all(points[None, :, :] <= block, axis=2)
        lt = np.any(points[None, :, :] < block, axis=2)
        out[s:s + chunk] = ~np.any(le & lt, axis=1)
    return out


def _front_2d(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two objectives in O(n log n): a point is on the front when it has the lowest y of its x and a y
    below every point with a smaller x."""
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    group_min = np.minimum.reduceat(ys, starts)
    before = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]
    sizes = np.diff(np.r_[starts, len(xs)])
    keep = (ys == np.repeat(group_min, sizes)) & (ys < np.repeat(before, sizes))
    out = np.zeros(len(x), dtype=bool)
    out[order] = keep
    return out


# -- fidelity levels of a trials table --------------------------------------------------------------
@dataclass(frozen=True)
class Level:
    """One fidelity of a study: its rank, a label for people, and how many finished trials and architectures."""

    rank: int
    label: str
    trials: int
    architectures: int


def fidelity_ranks(frame: pd.DataFrame) -> pd.Series:
    """Each row's fidelity rank (`hybridlab.fidelity.rank_of`: trials without one count as full)."""
    labels = frame["fidelity_label"] if "fidelity_label" in frame.columns else pd.Series("", index=frame.index)
    ranks = frame["fidelity_rank"] if "fidelity_rank" in frame.columns else pd.Series(np.nan, index=frame.index)
    values = [rank_of(str(lab) if isinstance(lab, str) else None, None if pd.isna(r) else r)
              for lab, r in zip(labels, ranks)]
    return pd.Series(values, index=frame.index, dtype=int)


def fidelity_levels(frame: pd.DataFrame) -> list[Level]:
    """The fidelities among the finished searched trials, lowest first (baselines are trained in full and do
    not make a fidelity of their own)."""
    done = finished_rows(frame)
    if "is_baseline" in done.columns:
        done = done[~done["is_baseline"].astype(bool)]
    if done.empty:
        return []
    ranks = fidelity_ranks(done)
    out = []
    for rank in sorted(set(ranks)):
        rows = done[ranks == rank]
        labels = [lab for lab in rows.get("fidelity_label", pd.Series(dtype=str)) if isinstance(lab, str) and lab]
        label = max(sorted(set(labels)), key=labels.count) if labels else _default_label(rank)
        out.append(Level(rank, label, len(rows), int(arch_keys(rows).nunique())))
    return out


def _default_label(rank: int) -> str:
    return SUPERNET if rank == rank_of(SUPERNET, None) else FULL if rank == rank_of(None, None) else f"rank {rank}"


def arch_keys(frame: pd.DataFrame, by: str = "arch_hash") -> pd.Series:
    """The matching key of each row: `by` (arch_hash, pattern or label), falling back to the pattern."""
    keys = [str(k) if isinstance(k, str) and k else (f"pattern:{p}" if p else f"trial:{n}")
            for k, p, n in zip(frame[by], frame["pattern"], frame["number"])]
    return pd.Series(keys, index=frame.index, dtype=object)


def seed_means(frame: pd.DataFrame, metrics: Sequence[str], by: str = "arch_hash") -> pd.DataFrame:
    """One row per searched architecture of the finished trials: key, pattern, label and the mean of each
    metric over seeds (baselines are left out: no cheap method scores them)."""
    done = finished_rows(frame)
    done = done[~done["is_baseline"].astype(bool)] if "is_baseline" in done.columns else done
    columns = ["key", "pattern", "label", *metrics]
    if done.empty:
        return pd.DataFrame(columns=columns)
    values = {m: pd.to_numeric(done[m], errors="coerce").astype(float) if m in done.columns
              else pd.Series(np.nan, index=done.index) for m in metrics}
    table = pd.DataFrame({"key": arch_keys(done, by), "pattern": done["pattern"], "label": done["label"], **values})
    grouped = table.groupby("key", sort=True)
    out = grouped[list(metrics)].mean() if metrics else pd.DataFrame(index=grouped.size().index)
    first = grouped[["pattern", "label"]].first()
    return pd.concat([first, out], axis=1).reset_index()[columns]


def paired(low: pd.DataFrame, high: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Architectures in both seed-mean tables, with their `low` and `high` value of `metric`, sorted by key."""
    cols = ["key", "pattern", "label", metric]
    both = low[cols].merge(high[["key", metric]], on="key", suffixes=("_low", "_high"))
    both = both.rename(columns={f"{metric}_low": "low", f"{metric}_high": "high"})
    return both.sort_values("key", kind="stable").reset_index(drop=True)


MATCH_KEYS = ("arch_hash", "pattern", "label")


def match_rule(frames: Sequence[pd.DataFrame], by: str | None = None) -> tuple[str, int]:
    """How to pair the architectures of separate studies, and how many they share.

    `arch_hash` names the same network only when every setting that enters the hash (image size, say) is
    the same, so a low-resolution proxy study shares no hash with the full one. The pattern, then the
    ablation label, name the layout instead; a key is usable only when, inside each study, one key value
    means one architecture. Without `by`, the usable key sharing the most architectures wins (arch_hash
    first on a tie); ("", 0) when none is usable.
    """
    rows = [_searched(f) for f in frames]
    best, shared_best = "", 0
    for key in (by,) if by else MATCH_KEYS:
        if not all(_one_to_one(r, key) for r in rows):
            continue
        sets = [set(arch_keys(r, key)) for r in rows]
        shared = len(set.intersection(*sets)) if sets else 0
        if shared > shared_best or not best:
            best, shared_best = key, shared
    return best, shared_best


def _searched(frame: pd.DataFrame) -> pd.DataFrame:
    done = finished_rows(frame)
    return done[~done["is_baseline"].astype(bool)] if "is_baseline" in done.columns else done


def _one_to_one(rows: pd.DataFrame, key: str) -> bool:
    if key == "arch_hash" or rows.empty:
        return True
    values = rows[[key, "arch_hash"]].astype(str)
    return bool((values.groupby(key)["arch_hash"].nunique() <= 1).all()) and bool(values[key].ne("").all())
