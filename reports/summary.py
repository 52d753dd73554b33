"""What the data can and cannot tell, in plain sentences (the report's summary.md and its first section).

Every claim a report makes (a front, a best architecture, an ablation difference) is checked against
the intervals of `reports.uncertainty` and `reports.ablation`; the sentences say which claims hold and
which the data cannot support, and how many seeds would settle them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hybridlab.metrics import Objective
from reports.ablation import ablation_power
from reports.stats import MAX_SEEDS
from reports.tables import PERCENT, fmt_interval, header
from reports.uncertainty import best_of, interval_source, seed_dependent


def findings(frame: pd.DataFrame, arch: pd.DataFrame, objectives: Sequence[Objective],
             abl: pd.DataFrame | None = None, default_label: str | None = None) -> list[str]:
    """The summary sentences, in reading order; empty when nothing finished."""
    if arch.empty:
        return []
    out = [_seeds(arch, objectives)]
    if len(objectives) >= 2:
        out.append(_front(arch))
    best = _best(arch, objectives[0])
    if best:
        out.append(best)
    for o in objectives:
        if not seed_dependent(o.name):
            out.append(f"{header(o.name)}: {interval_source(frame, o.name)}.")
    if "noisy" in arch.columns and arch["noisy"].fillna(False).astype(bool).any():
        k = int(arch["noisy"].fillna(False).astype(bool).sum())
        out.append(f"{k} architecture{'s were' if k > 1 else ' was'} measured under contention (marked noisy): "
                   "their throughput may be too low.")
    if abl is not None and default_label:
        out += _ablation(abl, default_label)
    return [s for s in out if s]


def _seeds(arch: pd.DataFrame, objectives: Sequence[Objective]) -> str:
    n = arch["n"].astype(int)
    text = f"Seeds per architecture: {n.min()}" + (f" to {n.max()}" if n.max() != n.min() else "") + "."
    seeded = [o.name for o in objectives if seed_dependent(o.name)]
    single = int((n < 2).sum())
    if seeded and single:
        text += (f" {single} architecture{'s have' if single > 1 else ' has'} one seed: no interval on "
                 f"{', '.join(seeded)}, so {'they' if single > 1 else 'it'} cannot be told apart from the others there.")
    return text


def _front(arch: pd.DataFrame) -> str:
    front = arch[arch["rank"] == 1]
    dominated = arch[arch["rank"] > 1]
    tied = int(arch["tied"].astype(bool).sum()) if "tied" in arch.columns else 0
    text = (f"The Pareto front holds {len(front)} of {len(arch)} architectures (ranked on the means; the front "
            "points are not ordered among themselves).")
    if tied:
        text += (f" {tied} of the {len(dominated)} dominated architectures overlap a front point's interval on every "
                 "objective: they are marked tied, and the data cannot tell them from the front.")
    unknown = int(arch["resolved"].isna().sum()) if "resolved" in arch.columns and arch["rank"].notna().any() else 0
    if unknown:
        text += (f" {unknown} ranked architecture{'s lack' if unknown > 1 else ' lacks'} an interval on a seed-dependent "
                 "objective (one seed), so the data cannot support their places: the front is a ranking of means.")
    elif not tied and len(dominated):
        text += " Every dominated architecture is separated from each front point by at least one interval."
    return text


def _best(arch: pd.DataFrame, objective: Objective) -> str:
    best, tied = best_of(arch, objective)
    if best is None:
        return ""
    name = best["pattern"] or best["label"] or best["key"]
    value = fmt_interval(objective.name, best[f"{objective.name}_mean"], best.get(f"{objective.name}_lo"),
                         best.get(f"{objective.name}_hi"))
    text = f"Best {header(objective.name)}: {name}, {value}."
    if tied:
        return text + (f" The intervals of {tied} other architecture{'s' if tied > 1 else ''} overlap it, so the "
                       f"best on {objective.name} is not resolved.")
    return text + " No other architecture's interval overlaps it."


def _ablation(abl: pd.DataFrame, default_label: str) -> list[str]:
    power = ablation_power(abl)
    if power is None:
        return []
    name, unit = header(power.metric).split(" (")[0], "pp" if power.metric in PERCENT else ""
    if not np.isfinite(power.sd):
        return [f"Ablation: no variant shares two seeds with the default ({default_label}), so no {name} "
                "difference can be resolved; run 2 or more seeds per variant."]
    out = [f"Ablation: {power.resolved} of {power.compared} variants differ from the default ({default_label}) in "
           f"{name} by more than their paired 95% interval; the others are not resolved. At {power.seeds} seeds the "
           f"minimum detectable difference is {power.mdd:.2f} {unit} (power 0.8)."]
    pending = abl[abl["resolved"].notna() & ~abl["resolved"].fillna(True).astype(bool)]
    if len(pending):
        parts = []
        for _, r in pending.iterrows():
            need = r["seeds_needed"]
            seeds = "unknown" if need is pd.NA else (f"more than {MAX_SEEDS}" if int(need) > MAX_SEEDS else str(int(need)))
            parts.append(f"{r['name']} ({float(r[f'delta_{power.metric}']):+.2f} {unit}: {seeds} seeds)".replace("-", "−"))
        out.append("Seeds each unresolved gap would need at the observed spread: " + "; ".join(parts) + ".")
    return out
