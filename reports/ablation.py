"""The ablation table: one row per variant (label), compared with the default row seed by seed.

A seed trains on the same data order for every variant, so the accuracy difference to the default is
taken seed by seed (`reports.stats.paired_difference`): the mean paired difference with its 95%
t-interval, "resolved" only when the interval excludes 0. From the spread of those paired differences
(pooled over the rows) come the minimum detectable difference at the study's seed count and the seeds
each observed gap would need. Measured figures (throughput) are compared as a ratio of means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hybridlab.metrics import Objective
from reports.pareto import aggregate, finished_rows
from reports.stats import ALPHA, MAX_SEEDS, POWER, minimum_detectable_difference, paired_difference, seeds_needed
from reports.tables import DASH, PERCENT, Table, fmt_interval, header
from reports.uncertainty import seed_dependent

ABLATION_METRICS = ("params", "macs", "throughput_img_s", "top1")


def paired_metric(frame: pd.DataFrame, objectives: Sequence[Objective]) -> str | None:
    """The figure compared seed by seed: the first seed-dependent objective, else top-1 when recorded."""
    for name in [o.name for o in objectives] + ["top1"]:
        if seed_dependent(name) and name in frame.columns and pd.to_numeric(frame[name], errors="coerce").notna().any():
            return name
    return None


def ablation_frame(frame: pd.DataFrame, objectives: Sequence[Objective], default_label: str | None,
                   names: Any = None) -> pd.DataFrame:
    """One row per label (default first, then in order of the first trial), with differences to the default.

    `names` (manifest `ablation.names`) is either a mapping label -> row name, or a list giving the row order.
    For the paired figure p: `delta_p` (mean paired difference), `delta_p_lo/_hi/_sd`, `paired_n`,
    `resolved` and `seeds_needed`; other figures get `delta_<m>` (pp) or `delta_<m>_pct` from the means.
    """
    by_label = aggregate(frame, objectives, by="label")
    by_label = by_label[~by_label["is_baseline"].astype(bool)] if len(by_label) else by_label
    if by_label.empty:
        return by_label.assign(name=pd.Series([], dtype=object))
    order = {str(n): i for i, n in enumerate(names)} if isinstance(names, (list, tuple)) else {}
    by_label = by_label.assign(_o=[order.get(lab, len(order)) for lab in by_label["label"]])
    by_label = by_label.sort_values(["_o", "first_trial", "key"], kind="stable").drop(columns="_o")
    rename = {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}
    by_label["name"] = [rename.get(lab, lab) or "(no label)" for lab in by_label["label"]]
    is_default = by_label["label"] == (default_label or "")
    by_label = pd.concat([by_label[is_default], by_label[~is_default]]).reset_index(drop=True)
    base = by_label[by_label["label"] == default_label] if default_label else by_label.iloc[0:0]
    for name in dict.fromkeys([*ABLATION_METRICS, *(o.name for o in objectives)]):
        col = f"{name}_mean"
        if col not in by_label.columns:
            continue
        ref = float(base[col].iloc[0]) if len(base) else np.nan
        values = by_label[col].astype(float)
        if name in PERCENT:
            by_label[f"delta_{name}"] = values - ref
        else:
            by_label[f"delta_{name}_pct"] = (values / ref - 1.0) * 100.0 if ref not in (0.0,) else np.nan
    metric = paired_metric(frame, objectives)
    if metric is not None and len(base):
        _add_paired(by_label, frame, metric, str(default_label))
    if "delta_throughput_img_s_pct" in by_label.columns and len(base):
        _add_relative_throughput(by_label, frame, str(default_label))
    return by_label


def _add_relative_throughput(abl: pd.DataFrame, frame: pd.DataFrame, default_label: str) -> None:
    """Δ throughput from `throughput_rel` (measured side by side with the reference row) when recorded: a
    ratio taken in one session survives a busy machine better than two absolute figures."""
    if "throughput_rel" not in frame.columns:
        return
    done = finished_rows(frame)
    done = done[~done["is_baseline"].astype(bool)]
    cols = {c: pd.to_numeric(done[c], errors="coerce").astype(float) if c in done.columns else None
            for c in ("throughput_rel", "throughput_rel_lo", "throughput_rel_hi")}
    rel = cols["throughput_rel"]
    if rel is None or not rel.notna().any():
        return
    by = {lab: (float(rel[idx].mean()),
                float(cols["throughput_rel_lo"][idx].min()) if cols["throughput_rel_lo"] is not None else np.nan,
                float(cols["throughput_rel_hi"][idx].max()) if cols["throughput_rel_hi"] is not None else np.nan)
          for lab, idx in done.groupby("label").groups.items() if rel[idx].notna().any()}
    if default_label not in by or not by[default_label][0]:
        return
    ref = by[default_label][0]
    pct = [(by[lab][0] / ref - 1) * 100 if lab in by else np.nan for lab in abl["label"]]
    lo = [(by[lab][1] / ref - 1) * 100 if lab in by and lab != default_label else np.nan for lab in abl["label"]]
    hi = [(by[lab][2] / ref - 1) * 100 if lab in by and lab != default_label else np.nan for lab in abl["label"]]
    abl["delta_throughput_img_s_pct"] = pct
    abl["delta_throughput_img_s_pct_lo"], abl["delta_throughput_img_s_pct_hi"] = lo, hi
    abl["throughput_from"] = "throughput_rel"


def _seed_values(frame: pd.DataFrame, label: str, metric: str) -> dict[int, float]:
    """seed -> value of one label's finished candidate trials (repeats of a seed averaged)."""
    done = finished_rows(frame)
    done = done[(done["label"] == label) & ~done["is_baseline"].astype(bool)]
    values = pd.to_numeric(done[metric], errors="coerce").astype(float)
    keep = done["seed"].notna() & values.notna()
    return {int(s): float(v) for s, v in values[keep].groupby(done.loc[keep, "seed"].astype(int)).mean().items()}


def _add_paired(abl: pd.DataFrame, frame: pd.DataFrame, metric: str, default_label: str) -> None:
    default = _seed_values(frame, default_label, metric)
    results = {lab: paired_difference(_seed_values(frame, lab, metric), default)
               for lab in abl["label"] if lab != default_label}
    pooled, _ = pooled_paired_sd(results.values())
    base_mean = float(abl.loc[abl["label"] == default_label, f"{metric}_mean"].iloc[0])
    records = []
    for lab, mean in zip(abl["label"], abl[f"{metric}_mean"].astype(float)):
        if lab == default_label:
            records.append((0.0, np.nan, np.nan, np.nan, len(default), pd.NA, pd.NA))
            continue
        r = results[lab]
        gap = r.mean if r.n else mean - base_mean  # no shared seed: the difference of the means, unpaired
        need: Any = pd.NA
        if np.isfinite(gap) and np.isfinite(pooled):
            found = seeds_needed(gap, pooled)
            need = found if found is not None else MAX_SEEDS + 1
        records.append((gap, r.lo, r.hi, r.sd, r.n, r.resolved, need))
    delta, lo, hi, sd, n, resolved, needed = (list(col) for col in zip(*records))
    abl[f"delta_{metric}"] = delta
    abl[f"delta_{metric}_lo"], abl[f"delta_{metric}_hi"], abl[f"delta_{metric}_sd"] = lo, hi, sd
    abl["paired_metric"] = metric
    abl["paired_n"] = n
    abl["resolved"] = pd.array(resolved, dtype="boolean")
    abl["seeds_needed"] = pd.array(needed, dtype="Int64")


def pooled_paired_sd(results: Any) -> tuple[float, int]:
    """Pooled std of the paired differences over the rows with 2+ pairs, and its degrees of freedom."""
    ss = sum((r.n - 1) * r.sd ** 2 for r in results if r.n > 1 and np.isfinite(r.sd))
    df = sum(r.n - 1 for r in results if r.n > 1 and np.isfinite(r.sd))
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)


@dataclass(frozen=True)
class Power:
    """What the ablation can resolve: the pooled paired spread, the seed count, the detectable difference."""

    metric: str
    sd: float
    df: int
    seeds: int
    mdd: float
    resolved: int
    compared: int


def ablation_power(abl: pd.DataFrame) -> Power | None:
    """The ablation's power summary, or None without a paired figure (no default row)."""
    if "paired_metric" not in abl.columns or abl.empty:
        return None
    metric = str(abl["paired_metric"].iloc[0])
    others = abl[abl["resolved"].notna()] if "resolved" in abl.columns else abl.iloc[0:0]
    sd_col = abl[f"delta_{metric}_sd"].astype(float)
    n_col = abl["paired_n"].astype(int)
    ok = sd_col.notna() & (n_col > 1)
    df = int((n_col[ok] - 1).sum())
    sd = math.sqrt(float(((n_col[ok] - 1) * sd_col[ok] ** 2).sum()) / df) if df else math.nan
    seeds = int(np.median(others["paired_n"])) if len(others) else 0
    mdd = minimum_detectable_difference(sd, seeds)
    return Power(metric, sd, df, seeds, mdd, int(others["resolved"].fillna(False).astype(bool).sum()), len(others))


def ablation_table(abl: pd.DataFrame, objectives: Sequence[Objective], default_label: str | None) -> Table:
    metrics = [m for m in ABLATION_METRICS if f"{m}_mean" in abl.columns]
    metrics += [o.name for o in objectives if o.name not in metrics and f"{o.name}_mean" in abl.columns]
    paired = str(abl["paired_metric"].iloc[0]) if "paired_metric" in abl.columns and len(abl) else None
    deltas = [(m, f"delta_{m}" if m in PERCENT or m == paired else f"delta_{m}_pct") for m in metrics
              if m in PERCENT or m in (o.name for o in objectives)]
    deltas = sorted(((m, c) for m, c in deltas if c in abl.columns), key=lambda mc: (mc[0] != paired, mc[0] not in PERCENT))
    columns = ["Variant", "Pattern"] + [header(m) for m in metrics] + ["n"]
    for m, c in deltas:
        columns.append(f"Δ {header(m).split(' (')[0]} ({'pp' if m in PERCENT else '%' if c.endswith('_pct') else 'abs.'})")
        if m == paired:
            columns += ["Resolved", "Seeds to resolve"]
    align = ["l", "l"] + ["r"] * (len(columns) - 2)
    rows = []
    for _, r in abl.iterrows():
        is_default = bool(default_label) and r["label"] == default_label
        name = r["name"] + (" (default)" if is_default and not str(r["name"]).endswith("(default)") else "")
        row = [name, r["pattern"] or DASH]
        row += [fmt_interval(m, r[f"{m}_mean"], r.get(f"{m}_lo"), r.get(f"{m}_hi")) for m in metrics]
        row.append(str(int(r["n"])))
        for m, c in deltas:
            unit = "%" if c.endswith("_pct") else "pp"
            if m == paired:
                row.append(_fmt_delta(r[c], unit, is_default, r.get(f"{c}_lo"), r.get(f"{c}_hi")))
                row += [DASH, DASH] if is_default else [_fmt_resolved(r), _fmt_needed(r["seeds_needed"])]
            else:
                row.append(_fmt_delta(r[c], unit, is_default, r.get(f"{c}_lo"), r.get(f"{c}_hi")))
        rows.append(row)
    return Table(columns, rows, align, ablation_notes(abl, default_label))


def ablation_notes(abl: pd.DataFrame, default_label: str | None) -> list[str]:
    """What the Δ columns mean, and what the ablation can and cannot resolve, in plain words."""
    if not default_label:
        return ["No default row (manifest ablation.default_label is not set)."]
    if default_label not in set(abl["label"]):
        return [f"The default row {default_label!r} has no finished trial yet, so no differences are shown."]
    notes = [f"Δ: difference to the default row ({default_label})."]
    power = ablation_power(abl)
    if power is None:
        return notes
    name = header(power.metric).split(" (")[0]
    unit = "pp" if power.metric in PERCENT else ""
    notes.append(f"Δ {name}: mean paired difference over the seeds both rows have, with its 95% t-interval; "
                 "Resolved: the interval excludes 0. Other Δ: from the means (measurements are not paired by seed).")
    if "throughput_from" in abl.columns:
        notes.append("Δ Throughput: from throughput_rel, the ratio to the reference row measured side by side in one "
                     "session, with its recorded interval.")
    if not np.isfinite(power.sd):
        notes.append(f"No row has two seeds in common with the default, so the seed spread is unknown and no "
                     f"{name} difference can be resolved: run at least 2 seeds per variant (3 or more to size them).")
        return notes
    notes.append(f"Resolved {power.resolved} of {power.compared} variants. With {power.seeds} paired seeds and the "
                 f"observed spread of paired differences (sd {power.sd:.2f} {unit}, pooled, {power.df} degrees of "
                 f"freedom), the minimum detectable difference is {_num(power.mdd)} {unit} (two-sided α = {ALPHA}, "
                 f"power {POWER}): smaller true differences are likely to be missed.")
    notes.append(f"Seeds to resolve: seeds per variant for a paired t-test to resolve the observed gap at that "
                 f"spread (α = {ALPHA}, power {POWER}); > {MAX_SEEDS} when out of reach.")
    return notes


def _fmt_delta(value: Any, unit: str, is_default: bool, lo: Any = None, hi: Any = None) -> str:
    if is_default:
        return "0" if not _missing(value) else DASH
    if _missing(value):
        return DASH
    places = 2 if unit == "pp" else 1
    text = f"{float(value):+.{places}f}"
    if not _missing(lo) and not _missing(hi):
        text += f" [{float(lo):+.{places}f}, {float(hi):+.{places}f}]"
    return text.replace("-", "−")


def _fmt_resolved(row: pd.Series) -> str:
    value = row.get("resolved")
    if value is None or value is pd.NA:
        return DASH
    if bool(value):
        return "yes"
    return "no (one pair)" if int(row.get("paired_n", 0)) < 2 else "no"


def _fmt_needed(value: Any) -> str:
    if value is None or value is pd.NA:
        return DASH
    return f"> {MAX_SEEDS}" if int(value) > MAX_SEEDS else str(int(value))


def _num(value: float) -> str:
    return "unknown" if not np.isfinite(value) else f"{value:.2f}"


def _missing(value: Any) -> bool:
    try:
        return value is None or value is pd.NA or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def ablation_csv(abl: pd.DataFrame) -> pd.DataFrame:
    first = ["name", "label", "pattern", "n", "seeds", "trials"]
    stats = [c for c in abl.columns if c.endswith(("_mean", "_std", "_lo", "_hi")) or c.startswith("delta_")]
    extra = [c for c in ("paired_metric", "paired_n", "resolved", "seeds_needed", "throughput_from") if c in abl.columns]
    return abl[[c for c in first if c in abl.columns] + list(dict.fromkeys(stats)) + extra].reset_index(drop=True)
