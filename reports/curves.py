"""Learning curves: validation top-1 and loss per epoch, one line per architecture, with the seed band.

Trials carry a `learning_curve` user attribute, a list of `{epoch, train_loss, val_loss, top1}` records
(`trials.csv` keeps it as JSON text). Each architecture's line is the mean over its seeds at each epoch; the
band is the 95% t-interval with 3 or more seeds and the min-max range with 2 (none with 1). Trials without a
curve, or with one that cannot be read, are left out; no curve at all means no figure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports.figures import PALETTE, new_figure, style
from reports.labels import pattern_labels, shorten
from reports.pareto import arch_key, finished_rows
from reports.stats import t_interval

CURVE_COLUMN = "learning_curve"
CURVE_METRICS = ("top1", "val_loss", "train_loss")
PANELS = (("top1", "Validation top-1 (%)  [higher is better]"), ("val_loss", "Validation loss  [lower is better]"))
LINE_STYLES = ("-", "--", ":", "-.")
POINT_COLUMNS = ["key", "name", "is_baseline", "trial", "seed", "epoch", *CURVE_METRICS]


def parse_curve(value: Any) -> list[dict[str, float]]:
    """A trial's curve as records with a numeric epoch; [] for a missing or unreadable value."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            return []
    if not isinstance(value, (list, tuple)):
        return []
    out = []
    for item in value:
        if not isinstance(item, dict) or _number(item.get("epoch")) is None:
            continue
        out.append({"epoch": _number(item["epoch"]), **{m: _number(item.get(m)) for m in CURVE_METRICS}})
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def curve_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per finished trial and epoch: architecture key and display name, seed and the curve's figures."""
    if CURVE_COLUMN not in frame.columns or frame.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    done = finished_rows(frame)
    rows = []
    for key, (_, r) in zip(arch_key(done), done.iterrows()):
        name = (r["label"] or r["pattern"] or key) if bool(r["is_baseline"]) else (r["pattern"] or r["label"] or key)
        for point in parse_curve(r[CURVE_COLUMN]):
            rows.append({"key": key, "name": name, "is_baseline": bool(r["is_baseline"]), "trial": int(r["number"]),
                         "seed": r["seed"], **point})
    if not rows:
        return pd.DataFrame(columns=POINT_COLUMNS)
    return pd.DataFrame(rows, columns=POINT_COLUMNS).sort_values(["key", "epoch", "trial"], kind="stable")


def curve_summary(points: pd.DataFrame) -> pd.DataFrame:
    """Per architecture, epoch and metric: n (seeds), mean, lo and hi of the band (NaN with one seed), band kind."""
    records = []
    for (key, epoch), group in points.groupby(["key", "epoch"], sort=True):
        first = group.iloc[0]
        for metric in CURVE_METRICS:
            values = group[metric].dropna().astype(float).to_numpy()
            if len(values) == 0:
                continue
            if len(values) >= 3:
                mean, lo, hi = t_interval(values)
                band = "t95"
            elif len(values) == 2:
                mean, lo, hi, band = float(values.mean()), float(values.min()), float(values.max()), "minmax"
            else:
                mean, lo, hi, band = float(values[0]), math.nan, math.nan, ""
            records.append({"key": key, "name": first["name"], "is_baseline": first["is_baseline"], "epoch": epoch,
                            "metric": metric, "n": len(values), "mean": mean, "lo": lo, "hi": hi, "band": band})
    return pd.DataFrame(records, columns=["key", "name", "is_baseline", "epoch", "metric", "n", "mean", "lo", "hi",
                                          "band"])


def band_note(summary: pd.DataFrame) -> str:
    """What the shaded bands are, for the caption."""
    kinds = set(summary["band"]) - {""}
    parts = []
    if "t95" in kinds:
        parts.append("the 95% t-interval of the mean where 3 or more seeds finished")
    if "minmax" in kinds:
        parts.append("the range (min to max) where 2 seeds finished")
    if not parts:
        return "One seed per architecture: no band."
    return "Lines: mean over seeds; bands: " + " and ".join(parts) + "."


def _labels(summary: pd.DataFrame, keys: Sequence[str]) -> tuple[list[str], str]:
    first = summary.drop_duplicates("key").set_index("key")
    base = [bool(first.loc[k, "is_baseline"]) for k in keys]
    cand, note = pattern_labels([str(first.loc[k, "name"]) for k, b in zip(keys, base) if not b], 40)
    it = iter(cand)
    return [f"baseline: {shorten(str(first.loc[k, 'name']), 30)}" if b else next(it) for k, b in zip(keys, base)], note


def curves_plot(summary: pd.DataFrame, title: str) -> Figure | None:
    """Two panels (top-1, validation loss) against the epoch; None when there is nothing to draw."""
    panels = [(m, label) for m, label in PANELS if (summary["metric"] == m).any()]
    if summary.empty or not panels:
        return None
    keys = sorted(summary["key"].unique())
    labels, _note = _labels(summary, keys)
    colors = sns.color_palette(PALETTE, 10)
    with style():
        fig = new_figure(5.2 * len(panels) + 0.6, 4.2 + 0.18 * math.ceil(len(keys) / 2))
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (metric, ylabel) in zip(axes, panels):
            data = summary[summary["metric"] == metric]
            for i, key in enumerate(keys):
                line = data[data["key"] == key].sort_values("epoch", kind="stable")
                if line.empty:
                    continue
                color, ls = tuple(colors[i % 10]), LINE_STYLES[(i // 10) % len(LINE_STYLES)]
                x = line["epoch"].to_numpy(float)
                ax.plot(x, line["mean"].to_numpy(float), color=color, ls=ls, lw=1.6,
                        marker="o" if len(line) == 1 else None, ms=4, label=labels[i])
                band = line[line["lo"].notna()]
                if len(band):
                    ax.fill_between(band["epoch"].to_numpy(float), band["lo"].to_numpy(float),
                                    band["hi"].to_numpy(float), color=color, alpha=0.18, lw=0)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
            _fix_flat(ax, data)
        axes[0].set_title(title, loc="left")
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0), fontsize=8)
        fig.subplots_adjust(bottom=0.12 + 0.045 * math.ceil(len(keys) / 2), wspace=0.28)
    return fig


def _fix_flat(ax, data: pd.DataFrame) -> None:
    """One distinct value or one epoch gets a window around it instead of a singular-limit warning."""
    x = data["epoch"].to_numpy(float)
    y = np.concatenate([data[c].dropna().to_numpy(float) for c in ("mean", "lo", "hi")])
    if len(x) and np.ptp(x) == 0:
        ax.set_xlim(x[0] - 1, x[0] + 1)
    if len(y) and np.ptp(y) == 0:
        ax.set_ylim(y[0] - (abs(y[0]) * 0.05 or 1.0), y[0] + (abs(y[0]) * 0.05 or 1.0))


def learning_curves(frame: pd.DataFrame, title: str) -> tuple[Figure | None, str]:
    """The figure for a study's trials table and its caption; (None, "") without learning curves."""
    summary = curve_summary(curve_points(frame))
    if summary.empty:
        return None, ""
    fig = curves_plot(summary, title)
    keys = sorted(summary["key"].unique())
    note = _labels(summary, keys)[1]
    caption = (f"Validation top-1 and loss per epoch for {len(keys)} architecture{'s' if len(keys) != 1 else ''} "
               f"(finished trials). {band_note(summary)}" + (f" {note}" if note else "")
               + " The vector version is curves.svg.")
    return fig, caption
