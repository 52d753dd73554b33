"""Paper tables: one row per architecture and the unfinished trials (the ablation table: `reports.ablation`).

Each table is built once as text cells (`Table`) and written as Markdown and HTML from the same cells;
the CSV files keep full precision in separate mean/std columns for further analysis.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hybridlab.metrics import METRICS, Objective, display_name
from reports.uncertainty import interval_source

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


def fmt_interval(name: str, mean: Any, lo: Any, hi: Any) -> str:
    """`mean [lo, hi]` in the metric's readable unit (no thousands separators inside); the mean alone when
    there is no interval."""
    if _missing(mean):
        return DASH
    if _missing(lo) or _missing(hi):
        return fmt_metric(name, mean)
    metric = METRICS.get(name)
    scale = metric.scale if metric else 1.0
    if name in FIXED_DECIMALS:
        decimals = 2
    else:
        text = fmt_sig(mean, scale)
        decimals = len(text.split(".")[1]) if "." in text else 0
    m, a, b = (float(v) / scale for v in (mean, lo, hi))
    return f"{m:.{decimals}f} [{a:.{decimals}f}, {b:.{decimals}f}]"


def fmt_resolved(row: pd.Series) -> str:
    """Whether the intervals support the row's place: on the front, or dominated."""
    if _missing(row.get("rank")) or "resolved" not in row.index:
        return DASH
    if row["resolved"] is pd.NA:
        return "unknown (1 seed)" if int(row.get("n", 0) or 0) < 2 else DASH
    if bool(row["resolved"]):
        return "yes"
    if row["rank"] == 1:
        return f"no ({int(row['tied_with'])} tied)"
    return "no (tied with front)"


def header(name: str) -> str:
    return display_name(name)


def fmt_rank(rank: Any, baseline: bool) -> str:
    if baseline:
        return "baseline" if _missing(rank) else f"{int(rank)} (baseline)"
    return DASH if _missing(rank) else str(int(rank))


# -- architecture table ----------------------------------------------------------------------------
TABLE_METRICS = ("params", "macs", "flops", "throughput_img_s", "latency_ms", "top1")


def architecture_table(arch: pd.DataFrame, objectives: Sequence[Objective], frame: pd.DataFrame | None = None) -> Table:
    """Rank, pattern, family, params, MACs, FLOPs, img/s, latency, top-1 as mean [95% interval], n, resolved
    (+ other objectives; a bootstrap column where some architecture has 5+ seeds; noisy when recorded)."""
    metrics = [m for m in TABLE_METRICS if f"{m}_mean" in arch.columns]
    metrics += [o.name for o in objectives if o.name not in metrics and f"{o.name}_mean" in arch.columns]
    boot = next((o.name for o in objectives if f"{o.name}_boot_lo" in arch.columns
                 and arch[f"{o.name}_boot_lo"].notna().any()), None)
    multi = len(objectives) >= 2
    noisy = "noisy" in arch.columns and bool(arch["noisy"].fillna(False).astype(bool).any())
    columns = ["Rank", "Pattern", "Family"] + [header(m) for m in metrics]
    columns += [f"{header(boot).split(' (')[0]} bootstrap 95%"] if boot else []
    columns += ["n"] + (["Resolved"] if multi else []) + (["Noisy"] if noisy else [])
    align = ["r", "l", "l"] + ["r"] * (len(columns) - 3)
    rows = []
    for _, r in arch.iterrows():
        name = r["pattern"] or r["label"] or r["key"]
        row = [fmt_rank(r["rank"], bool(r["is_baseline"])), name, r["family"] or DASH]
        row += [fmt_interval(m, r[f"{m}_mean"], r.get(f"{m}_lo"), r.get(f"{m}_hi")) for m in metrics]
        if boot:
            lo, hi = r.get(f"{boot}_boot_lo"), r.get(f"{boot}_boot_hi")
            row.append(DASH if _missing(lo) else f"[{float(lo):.2f}, {float(hi):.2f}]")
        row.append(str(int(r["n"])))
        if multi:
            row.append(fmt_resolved(r))
        if noisy:
            row.append(("yes: " + r["noisy_reason"] if r["noisy_reason"] else "yes") if bool(r["noisy"]) else "")
        rows.append(row)
    notes = ["Rank: non-dominated sorting on the per-architecture means "
             f"({', '.join(f'{o.direction} {o.name}' for o in objectives)}); rank 1 is the Pareto front. Only the "
             "front is checked against the intervals (Resolved); ranks beyond it order the means, not resolved "
             "differences."]
    shown = [m for m in metrics if not (METRICS.get(m) and METRICS[m].dtype == "int")]  # counts are exact
    sources: dict[str, list[str]] = {}
    for m in shown if frame is not None else []:
        sources.setdefault(interval_source(frame, m), []).append(header(m))
    notes.append("Figures are mean [95% interval]; a seed figure has no interval with one seed."
                 + "".join(f" {', '.join(names)}: {source}." for source, names in sources.items()))
    if multi:
        notes.append("Resolved: whether the intervals support the row's place. A dominated architecture whose "
                     "intervals overlap a front point's on every objective is tied with the front (no); a front "
                     "point with tied architectures is not resolved either.")
    if (~arch["feasible"].astype(bool)).any() if len(arch) else False:
        notes.append("Architectures violating a constraint are not ranked (–).")
    if arch["is_baseline"].astype(bool).any() if len(arch) else False:
        notes.append("Baselines take part in the ranking as reference points, marked (baseline); a candidate a "
                     "baseline beats is not on the front. The hypervolume counts searched candidates only.")
    if noisy:
        notes.append("Noisy: the throughput was measured under contention (the reason is given); treat it with care.")
    return Table(columns, rows, align, notes)


def architecture_csv(arch: pd.DataFrame) -> pd.DataFrame:
    """The CSV twin of the table: full precision; means, stds and interval bounds in their own columns."""
    first = ["rank", "pattern", "family", "label", "is_baseline", "feasible", "n", "seeds", "trials", "key"]
    stats = [c for c in arch.columns if c.endswith(("_mean", "_std", "_lo", "_hi"))]
    extra = [c for c in ("tied", "tied_with", "resolved", "noisy", "noisy_reason") if c in arch.columns]
    out = arch[[c for c in first if c in arch.columns] + stats + extra].copy()
    out = out.rename(columns={"key": "arch_hash"})
    out["rank"] = pd.array([None if _missing(v) else int(v) for v in out["rank"]], dtype="Int64")
    return out


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

