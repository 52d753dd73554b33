"""Paper tables: one row per architecture, the ablation table, the unfinished trials.

Each table is built once as text cells (`Table`) and written as Markdown and HTML from the same cells;
the CSV files keep full precision in separate mean/std columns for further analysis.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hybridlab.metrics import METRICS, Objective, display_name
from reports.pareto import aggregate

DASH = "–"

# Percent figures (accuracies): two decimals, differences in percentage points.
PERCENT: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.display.endswith("(%)"))
FIXED_DECIMALS: tuple[str, ...] = (*PERCENT, "val_loss")


@dataclass
class Table:
    """Header, text rows and per-column alignment ('l' or 'r'); plus notes printed under the table."""

    columns: list[str]
    rows: list[list[str]]
    align: list[str]
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        def cell(text: str) -> str:
            return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(cell(c) for c in self.columns) + " |",
                 "|" + "|".join(("---:" if a == "r" else ":---") for a in self.align) + "|"]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        text = "\n".join(lines) + "\n"
        if self.notes:
            text += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return text

    def to_html(self, css_class: str = "table") -> str:
        head = "".join(f'<th class="{a}">{html.escape(c)}</th>' for c, a in zip(self.columns, self.align))
        body = "\n".join(
            "<tr>" + "".join(f'<td class="{a}">{html.escape(str(c))}</td>' for c, a in zip(row, self.align)) + "</tr>"
            for row in self.rows
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        out = f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'
        return out + (f'<ul class="notes">{notes}</ul>' if notes else "")


# -- number formatting -----------------------------------------------------------------------------
def _missing(value: Any) -> bool:
    try:
        return value is None or value is pd.NA or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def fmt_sig(value: Any, scale: float = 1.0) -> str:
    """Three significant figures, at most one decimal above 10 (31.8, 4.52, 0.0523, 228)."""
    if _missing(value):
        return DASH
    x = float(value) / scale
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_metric(name: str, mean: Any, std: Any = None) -> str:
    """A metric in its readable unit; accuracies get `mean ± std` with two decimals."""
    if _missing(mean):
        return DASH
    metric = METRICS.get(name)
    scale = metric.scale if metric else 1.0
    if name in FIXED_DECIMALS:
        text = f"{float(mean):.2f}"
        return text if _missing(std) else f"{text} ± {float(std):.2f}"
    text = fmt_sig(mean, scale)
    if (metric is not None and metric.dtype == "int") or _missing(std):
        return text
    decimals = len(text.split(".")[1]) if "." in text else 0
    return f"{text} ± {float(std) / scale:,.{decimals}f}"


def header(name: str) -> str:
    return display_name(name)


def fmt_rank(rank: Any, baseline: bool) -> str:
    if baseline:
        return "baseline" if _missing(rank) else f"{int(rank)} (baseline)"
    return DASH if _missing(rank) else str(int(rank))


# -- architecture table ----------------------------------------------------------------------------
TABLE_METRICS = ("params", "macs", "flops", "throughput_img_s", "latency_ms", "top1")


def architecture_table(arch: pd.DataFrame, objectives: Sequence[Objective]) -> Table:
    """Rank, pattern, family, params, MACs, FLOPs, img/s, latency, top-1 mean ± std, n (+ other objectives)."""
    metrics = [m for m in TABLE_METRICS if f"{m}_mean" in arch.columns]
    metrics += [o.name for o in objectives if o.name not in metrics and f"{o.name}_mean" in arch.columns]
    columns = ["Rank", "Pattern", "Family"] + [header(m) for m in metrics] + ["n"]
    align = ["r", "l", "l"] + ["r"] * len(metrics) + ["r"]
    rows = []
    for _, r in arch.iterrows():
        name = r["pattern"] or r["label"] or r["key"]
        rows.append([fmt_rank(r["rank"], bool(r["is_baseline"])), name, r["family"] or DASH]
                    + [fmt_metric(m, r[f"{m}_mean"], r.get(f"{m}_std")) for m in metrics] + [str(int(r["n"]))])
    notes = ["Rank: non-dominated sorting on the per-architecture means "
             f"({', '.join(f'{o.direction} {o.name}' for o in objectives)}); rank 1 is the Pareto front.",
             "Accuracy and speed are mean ± sample std over seeds (n); ± is omitted when n = 1."]
    if (~arch["feasible"].astype(bool)).any() if len(arch) else False:
        notes.append("Architectures violating a constraint are not ranked (–).")
    if arch["is_baseline"].astype(bool).any() if len(arch) else False:
        notes.append("Baselines take part in the ranking as reference points, marked (baseline); a candidate a "
                     "baseline beats is not on the front. The hypervolume counts searched candidates only.")
    return Table(columns, rows, align, notes)


def architecture_csv(arch: pd.DataFrame) -> pd.DataFrame:
    """The CSV twin of the table: full precision, means and stds in their own columns."""
    first = ["rank", "pattern", "family", "label", "is_baseline", "feasible", "n", "seeds", "trials", "key"]
    stats = [c for c in arch.columns if c.endswith("_mean") or c.endswith("_std")]
    out = arch[[c for c in first if c in arch.columns] + stats].copy()
    out = out.rename(columns={"key": "arch_hash"})
    out["rank"] = pd.array([None if _missing(v) else int(v) for v in out["rank"]], dtype="Int64")
    return out


# -- ablation table --------------------------------------------------------------------------------
ABLATION_METRICS = ("params", "macs", "throughput_img_s", "top1")


def ablation_frame(frame: pd.DataFrame, objectives: Sequence[Objective], default_label: str | None,
                   names: Any = None) -> pd.DataFrame:
    """One row per label (default first, then in order of the first trial), with differences to the default.

    `names` (manifest `ablation.names`) is either a mapping label -> row name, or a list giving the row order.
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
    names = list(dict.fromkeys([*ABLATION_METRICS, *(o.name for o in objectives)]))
    for name in names:
        col = f"{name}_mean"
        if col not in by_label.columns:
            continue
        ref = float(base[col].iloc[0]) if len(base) else np.nan
        values = by_label[col].astype(float)
        if name in PERCENT:
            by_label[f"delta_{name}"] = values - ref
        else:
            by_label[f"delta_{name}_pct"] = (values / ref - 1.0) * 100.0 if ref not in (0.0,) else np.nan
    return by_label


def ablation_table(abl: pd.DataFrame, objectives: Sequence[Objective], default_label: str | None) -> Table:
    metrics = [m for m in ABLATION_METRICS if f"{m}_mean" in abl.columns]
    metrics += [o.name for o in objectives if o.name not in metrics and f"{o.name}_mean" in abl.columns]
    deltas = [(m, f"delta_{m}" if m in PERCENT else f"delta_{m}_pct") for m in metrics
              if m in PERCENT or m in (o.name for o in objectives)]
    deltas = sorted(((m, c) for m, c in deltas if c in abl.columns), key=lambda mc: mc[0] not in PERCENT)
    columns = ["Variant", "Pattern"] + [header(m) for m in metrics] + ["n"]
    columns += [f"Δ {header(m).split(' (')[0]} ({'pp' if m in PERCENT else '%'})" for m, _ in deltas]
    align = ["l", "l"] + ["r"] * (len(metrics) + 1 + len(deltas))
    rows = []
    for _, r in abl.iterrows():
        name = r["name"]
        if default_label and r["label"] == default_label:
            name += " (default)"
        row = [name, r["pattern"] or DASH] + [fmt_metric(m, r[f"{m}_mean"], r.get(f"{m}_std")) for m in metrics]
        row.append(str(int(r["n"])))
        for m, c in deltas:
            row.append(_fmt_delta(r[c], "pp" if m in PERCENT else "%", is_default=r["label"] == default_label))
        rows.append(row)
    notes = [f"Δ: difference to the default row ({default_label})." if default_label else
             "No default row (manifest ablation.default_label is not set)."]
    if default_label and default_label not in set(abl["label"]):
        notes = [f"The default row {default_label!r} has no finished trial yet, so no differences are shown."]
    return Table(columns, rows, align, notes)


def _fmt_delta(value: Any, unit: str, is_default: bool) -> str:
    if is_default:
        return "0" if not _missing(value) else DASH
    if _missing(value):
        return DASH
    v = float(value)
    text = f"{v:+.2f}" if unit == "pp" else f"{v:+.1f}"
    return text.replace("-", "−")


def ablation_csv(abl: pd.DataFrame) -> pd.DataFrame:
    first = ["name", "label", "pattern", "n", "seeds", "trials"]
    stats = [c for c in abl.columns if c.endswith("_mean") or c.endswith("_std") or c.startswith("delta_")]
    return abl[[c for c in first if c in abl.columns] + stats].reset_index(drop=True)


# -- unfinished trials -----------------------------------------------------------------------------
UNFINISHED = ("RUNNING", "WAITING", "FAIL", "PRUNED")


def unfinished_table(frame: pd.DataFrame) -> Table:
    rows_frame = frame[frame["state"].isin(UNFINISHED)].sort_values("number", kind="stable")
    columns = ["Trial", "State", "Pattern", "Label", "Seed", "Reason", "Started"]
    rows = []
    for _, r in rows_frame.iterrows():
        seed = r["seed"]
        rows.append([str(int(r["number"])), r["state"], r["pattern"] or DASH, r["label"] or DASH,
                     DASH if _missing(seed) else str(int(seed)), r["fail_reason"] or DASH,
                     (r["datetime_start"] or DASH)[:19]])
    return Table(columns, rows, ["r", "l", "l", "l", "r", "l", "l"])

