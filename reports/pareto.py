"""Per-architecture aggregation over seeds, Pareto dominance and non-dominated sorting.

Trials are grouped by `arch_hash` (falling back to the pattern, then the trial number); each
architecture's objectives are its means over seeds, and the Pareto ranks are computed on those means.
Rank 1 is the front; equal points do not dominate each other, so duplicates share a rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hybridlab.metrics import METRICS, Objective
from reports.uncertainty import mark_ties, metric_interval, noisy_flag


def to_minimization(values: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    """Flip maximised objectives so that smaller is better in every column."""
    signs = np.array([o.sign for o in objectives], dtype=float)
    return np.asarray(values, dtype=float).reshape(-1, len(objectives)) * signs


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """`a` dominates `b` (minimisation): no worse in every objective and better in at least one."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a <= b) and np.any(a < b))


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """Non-dominated sorting of minimisation points: 1 = Pareto front, 2 = front after removing it, ..."""
    points = np.asarray(points, dtype=float)
    n = len(points)
    ranks = np.zeros(n, dtype=int)
    if n == 0:
        return ranks
    le = np.all(points[:, None, :] <= points[None, :, :], axis=2)
    lt = np.any(points[:, None, :] < points[None, :, :], axis=2)
    dominated_by = (le & lt).T  # [i, j]: j dominates i
    count = dominated_by.sum(axis=1)
    remaining = np.ones(n, dtype=bool)
    rank = 0
    while remaining.any():
        rank += 1
        current = remaining & (count == 0)
        ranks[current] = rank
        remaining &= ~current
        count = count - dominated_by[:, current].sum(axis=1)
    return ranks


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """True for the non-dominated points (minimisation)."""
    return nondominated_ranks(points) == 1


def finished_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE trials that carry their own result (trials reusing another's result are not counted twice)."""
    done = frame[frame["state"] == "COMPLETE"]
    if "reused_from" in done.columns:
        done = done[done["reused_from"].isna()]
    return done


def arch_key(frame: pd.DataFrame, by: str = "arch") -> pd.Series:
    """The grouping key: arch_hash, else the pattern, else the trial itself; baselines never merge with candidates.

    With `by="label"` rows are grouped by their ablation label instead.
    """
    keys = []
    for h, pattern, number, base, label in zip(frame["arch_hash"], frame["pattern"], frame["number"],
                                               frame["is_baseline"], frame["label"]):
        if by == "label":
            key = f"label:{label}"
        else:
            key = h or (f"pattern:{pattern}" if pattern else f"trial:{number}")
        keys.append(f"baseline:{key}" if base else key)
    return pd.Series(keys, index=frame.index, dtype=object)


def aggregate(frame: pd.DataFrame, objectives: Sequence[Objective], by: str = "arch") -> pd.DataFrame:
    """One row per architecture: mean/std/n over seeds of each metric, and its Pareto rank.

    Columns: key, pattern, family, label, is_baseline, feasible, n, seeds, trials, `<metric>_mean`,
    `<metric>_std` (sample std, NaN for one seed), `<metric>_lo`/`_hi` (95% interval, see
    `reports.uncertainty`), `<metric>_boot_lo`/`_boot_hi` (seed figures), noisy and noisy_reason (when the
    trials carry them), rank (float; NaN when not ranked), tied, tied_with, resolved. Candidates and
    baselines are ranked together (feasible ones with every objective known); ranks use the means, and
    `tied` marks a dominated architecture whose intervals cannot separate it from a front point.
    """
    done = finished_rows(frame)
    names = [m for m in dict.fromkeys([*(o.name for o in objectives), *METRICS]) if m in done.columns]
    if done.empty:
        cols = ["key", "pattern", "family", "label", "is_baseline", "feasible", "n", "seeds", "trials", "first_trial"]
        cols += [f"{m}_{s}" for m in names for s in ("mean", "std", "lo", "hi")] + ["rank", "tied", "tied_with",
                                                                                   "resolved"]
        return pd.DataFrame(columns=cols)
    done = done.assign(_key=arch_key(done, by)).sort_values("number", kind="stable")
    feasible = done["feasible"] if "feasible" in done.columns else pd.Series(True, index=done.index)
    records = []
    for key, group in done.groupby("_key", sort=True):
        first = group.iloc[0]
        record = {
            "key": key,
            "pattern": first["pattern"],
            "family": first["family"],
            "label": first["label"] or first["family"],
            "is_baseline": bool(first["is_baseline"]),
            "feasible": bool(feasible.loc[group.index].all()),
            "n": len(group),
            "seeds": ",".join(str(s) for s in group["seed"].dropna().tolist()),
            "trials": ",".join(str(int(t)) for t in group["number"].tolist()),
            "first_trial": int(group["number"].min()),
        }
        for m in names:
            values = pd.to_numeric(group[m], errors="coerce").astype(float).dropna()
            record[f"{m}_mean"] = float(values.mean()) if len(values) else np.nan
            record[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            record.update({f"{m}_{k}": v for k, v in metric_interval(group, m).items()})
        if "noisy" in group.columns:
            record["noisy"], record["noisy_reason"] = noisy_flag(group)
        records.append(record)
    arch = pd.DataFrame.from_records(records)
    arch["rank"] = rank_architectures(arch, objectives)
    return sort_architectures(mark_ties(arch, objectives), objectives)


def rankable(arch: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """Architectures that take part in the Pareto ranking: feasible, with every objective known.

    Baselines take part: they are the reference points a reader compares the search against, so a
    candidate a baseline beats is not shown as on the front (tables and plots mark baselines as such).
    """
    if arch.empty:
        return pd.Series(False, index=arch.index)
    known = np.all(np.isfinite(objective_matrix(arch, objectives)), axis=1)
    return pd.Series(known, index=arch.index) & arch["feasible"].astype(bool)


def rank_architectures(arch: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    ranks = pd.Series(np.nan, index=arch.index, dtype=float)
    use = rankable(arch, objectives)
    if use.any():
        points = to_minimization(objective_matrix(arch[use], objectives), objectives)
        ranks[use] = nondominated_ranks(points).astype(float)
    return ranks


def objective_matrix(arch: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    cols = []
    for o in objectives:
        col = f"{o.name}_mean"
        cols.append(arch[col].astype(float).to_numpy() if col in arch.columns else np.full(len(arch), np.nan))
    return np.column_stack(cols) if cols else np.zeros((len(arch), 0))


def sort_architectures(arch: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """Rank first (unranked last, baselines among them last), then the first objective best-first, then the
    key: a total order. Ranked baselines stand among the candidates of their rank."""
    first = objectives[0]
    col = f"{first.name}_mean"
    score = arch[col].astype(float) * first.sign if col in arch.columns else pd.Series(0.0, index=arch.index)
    unranked_baseline = arch["rank"].isna() & arch["is_baseline"].astype(bool)
    order = arch.assign(_r=arch["rank"].fillna(np.inf), _s=score.fillna(np.inf), _b=unranked_baseline.astype(int))
    order = order.sort_values(["_b", "_r", "_s", "key"], kind="stable")
    return order.drop(columns=["_r", "_s", "_b"]).reset_index(drop=True)

