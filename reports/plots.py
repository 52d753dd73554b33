"""Objective-space figures: a study's Pareto plot and several studies' fronts on one plot.

Inputs are sorted before drawing, so identical data gives identical bytes whatever the row order.
Legends sit outside the axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hybridlab.metrics import Objective
from reports.figures import (
    BASELINE_COLOR,
    BASELINE_MARKERS,
    FAMILY_MARKERS,
    NO_FAMILY,
    PALETTE,
    family_styles,
    fix_singular_limits,
    label_axes,
    new_figure,
    pad_limits,
    style,
)
from reports.labels import pattern_labels, place_labels, shorten


def staircase(xs: np.ndarray, ys: np.ndarray, x_max: bool, y_max: bool) -> tuple[np.ndarray, np.ndarray]:
    """The attainment line through front points: corners at the worse x and worse y of each neighbour pair."""
    order = np.lexsort((ys, xs))
    px, py = np.asarray(xs, float)[order], np.asarray(ys, float)[order]
    vx, vy = [], []
    for i in range(len(px)):
        if i:
            vx.append(min(px[i - 1], px[i]) if x_max else max(px[i - 1], px[i]))
            vy.append(min(py[i - 1], py[i]) if y_max else max(py[i - 1], py[i]))
        vx.append(px[i])
        vy.append(py[i])
    return np.asarray(vx), np.asarray(vy)


def _errors(mean: np.ndarray, lo: np.ndarray, hi: np.ndarray, log: bool) -> np.ndarray:
    """Asymmetric error bars from interval bounds; none where unknown; on a log axis the bar stays above 0."""
    mean = np.asarray(mean, float)
    lower = np.nan_to_num(mean - np.asarray(lo, float), nan=0.0).clip(min=0.0)
    upper = np.nan_to_num(np.asarray(hi, float) - mean, nan=0.0).clip(min=0.0)
    if log:
        lower = np.minimum(lower, 0.9 * np.abs(mean))
    return np.vstack([lower, upper])


def _bounds(rows: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    nan = np.full(len(rows), np.nan)
    lo = rows[f"{name}_lo"].astype(float).to_numpy() if f"{name}_lo" in rows else nan
    hi = rows[f"{name}_hi"].astype(float).to_numpy() if f"{name}_hi" in rows else nan
    return lo, hi


def pareto_plot(arch: pd.DataFrame, objectives: Sequence[Objective], title: str) -> Figure:
    """Objective 0 (y) against objective 1 (x, log when positive): every architecture, front, baselines."""
    oy, ox = objectives[0], objectives[1]
    data = arch[np.isfinite(arch[f"{ox.name}_mean"].astype(float)) & np.isfinite(arch[f"{oy.name}_mean"].astype(float))]
    data = data.sort_values("key", kind="stable")
    x = data[f"{ox.name}_mean"].astype(float).to_numpy()
    log = bool(len(x)) and bool(np.all(x > 0))
    cand = data[~data["is_baseline"].astype(bool)]
    base = data[data["is_baseline"].astype(bool)]
    front = data[data["rank"] == 1]
    styles = family_styles([f or NO_FAMILY for f in cand["family"]] or [NO_FAMILY])

    with style():
        fig = new_figure(8.6, 5.6)
        ax = fig.add_subplot(1, 1, 1)
        if log:
            ax.set_xscale("log")
        fix_singular_limits(ax, log, x, data[f"{oy.name}_mean"].astype(float).to_numpy())
        handles: list = []
        for fam, (color, marker) in styles.items():
            rows = cand[[(f or NO_FAMILY) == fam for f in cand["family"]]]
            if rows.empty:
                continue
            _points(ax, rows, ox, oy, log, color, marker)
            handles.append(Line2D([], [], ls="", marker=marker, color=color, markersize=7, label=fam))
        stairs = None
        if len(front):
            fx = front[f"{ox.name}_mean"].astype(float).to_numpy()
            fy = front[f"{oy.name}_mean"].astype(float).to_numpy()
            if len(objectives) == 2:
                sx, sy = staircase(fx, fy, ox.maximize, oy.maximize)
                stairs = (sx, sy)
                ax.plot(sx, sy, color="black", lw=1.3, alpha=0.8, zorder=3)
                handles.append(Line2D([], [], color="black", lw=1.3, label="Pareto front"))
            ax.scatter(fx, fy, s=70, facecolors="none", edgecolors="black", linewidths=1.3, zorder=4)
            handles.append(Line2D([], [], ls="", marker="o", markersize=8, markerfacecolor="none",
                                  markeredgecolor="black", label="on the front" if len(objectives) == 2
                                  else f"front ({len(objectives)} objectives)"))
        tied = data[data["tied"].astype(bool)] if "tied" in data.columns else data.iloc[0:0]
        if len(tied):
            ax.scatter(tied[f"{ox.name}_mean"].astype(float), tied[f"{oy.name}_mean"].astype(float), s=70,
                       facecolors="none", edgecolors="0.45", linewidths=1.1, linestyles="--", zorder=4)
            handles.append(Line2D([], [], ls="", marker="o", markersize=8, markerfacecolor="none",
                                  markeredgecolor="0.45", label="tied with the front"))
        infeasible = data[~data["feasible"].astype(bool)]
        if len(infeasible):
            handles.append(Line2D([], [], ls="", marker="o", markersize=7, markerfacecolor="white",
                                  markeredgecolor="0.4", label="violates a constraint"))
        for i, (_, row) in enumerate(base.sort_values(["label", "key"], kind="stable").iterrows()):
            marker = BASELINE_MARKERS[i % len(BASELINE_MARKERS)]
            one = base.loc[[row.name]]
            _points(ax, one, ox, oy, log, BASELINE_COLOR, marker, size=80, alpha=0.95)
            name = shorten(row["label"] or row["pattern"] or "baseline", 30)
            handles.append(Line2D([], [], ls="", marker=marker, color=BASELINE_COLOR, markersize=8,
                                  label=f"baseline: {name}"))
        label_axes(ax, ox, oy, title, log, x)
        pad_limits(ax, log)
        note = ""
        if len(front):
            front_sorted = front.sort_values([f"{ox.name}_mean", "key"], kind="stable")
            labels, note = front_labels(front_sorted)
            place_labels(fig, ax, front_sorted[f"{ox.name}_mean"].astype(float).to_numpy(),
                         front_sorted[f"{oy.name}_mean"].astype(float).to_numpy(), labels,
                         data[f"{ox.name}_mean"].astype(float).to_numpy(), data[f"{oy.name}_mean"].astype(float).to_numpy(),
                         line=stairs)
        if handles:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                      title="pattern family", alignment="left")
        lines = ["Each point is one architecture (mean over seeds); bars are 95% intervals, none where unknown "
                 "(one seed, or no recorded measurement spread)."]
        if len(tied):
            lines.append("Grey rings: dominated on the means, but tied with a front point (their intervals overlap "
                         "on every objective).")
        if len(objectives) > 2:
            lines.append(f"Front over {len(objectives)} objectives (also "
                         + ", ".join(f"{o.direction} {o.name}" for o in objectives[2:]) + "), shown in the first two.")
        tail = " ".join(t for t in ("Baselines (black) take part in the front as reference points." if len(base) else "",
                                    note) if t)
        if tail:
            lines.append(tail)
        caption = "\n".join(lines)
        ax.text(0.0, -0.13, caption, transform=ax.transAxes, fontsize=8.5, color="0.3", va="top", ha="left")
        if data.empty:
            ax.text(0.5, 0.5, "no finished architecture with both objectives", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
    return fig


def front_labels(front: pd.DataFrame) -> tuple[list[str], str]:
    """Labels of front points: candidates by their (shortened) pattern, baselines as `baseline: <name>`."""
    is_base = front["is_baseline"].astype(bool).tolist()
    names = [p or r for p, r, b in zip(front["pattern"], front["label"], is_base) if not b]
    cand, note = pattern_labels(names) if names else ([], "")
    it = iter(cand)
    labels = [f"baseline: {shorten(r or p or 'baseline', 30)}" if b else next(it)
              for p, r, b in zip(front["pattern"], front["label"], is_base)]
    return labels, note


def _points(ax, rows: pd.DataFrame, ox: Objective, oy: Objective, log: bool, color, marker: str,
            size: float = 42, alpha: float = 0.9) -> None:
    x = rows[f"{ox.name}_mean"].astype(float).to_numpy()
    y = rows[f"{oy.name}_mean"].astype(float).to_numpy()
    ax.errorbar(x, y, xerr=_errors(x, *_bounds(rows, ox.name), log), yerr=_errors(y, *_bounds(rows, oy.name), False),
                fmt="none", ecolor=color, elinewidth=0.9, alpha=0.55, zorder=2)
    feasible = rows["feasible"].astype(bool).to_numpy()
    if feasible.any():
        ax.scatter(x[feasible], y[feasible], s=size, color=[color], marker=marker, alpha=alpha,
                   edgecolors="white", linewidths=0.5, zorder=3)
    if (~feasible).any():
        ax.scatter(x[~feasible], y[~feasible], s=size, facecolors="white", edgecolors=[color], marker=marker,
                   linewidths=1.0, zorder=3)



def compare_plot(studies: Sequence[tuple[str, pd.DataFrame]], objectives: Sequence[Objective], title: str) -> Figure:
    """The fronts of several studies on one plot: each study's front as a staircase, other points faint."""
    oy, ox = objectives[0], objectives[1]
    colors = sns.color_palette(PALETTE, 10)
    xs_all = np.concatenate([a[f"{ox.name}_mean"].astype(float).to_numpy() for _, a in studies] or [np.array([])])
    xs_all = xs_all[np.isfinite(xs_all)]
    log = bool(len(xs_all)) and bool(np.all(xs_all > 0))
    with style():
        fig = new_figure(8.6, 5.6)
        ax = fig.add_subplot(1, 1, 1)
        if log:
            ax.set_xscale("log")
        ys_all = np.concatenate([a[f"{oy.name}_mean"].astype(float).to_numpy() for _, a in studies] or [np.array([])])
        fix_singular_limits(ax, log, xs_all, ys_all)
        handles = []
        any_baseline = False
        for i, (name, arch) in enumerate(studies):
            color, marker = colors[i % 10], FAMILY_MARKERS[(i // 10) % len(FAMILY_MARKERS)]
            ok = arch[np.isfinite(arch[f"{ox.name}_mean"].astype(float)) & np.isfinite(arch[f"{oy.name}_mean"].astype(float))]
            is_base = ok["is_baseline"].astype(bool)
            rest = ok[(ok["rank"] != 1) & ~is_base]
            front = ok[ok["rank"] == 1]
            ax.scatter(rest[f"{ox.name}_mean"].astype(float), rest[f"{oy.name}_mean"].astype(float), s=22,
                       color=[color], marker=marker, alpha=0.3, linewidths=0, zorder=2)
            fx = front[f"{ox.name}_mean"].astype(float).to_numpy()
            fy = front[f"{oy.name}_mean"].astype(float).to_numpy()
            if len(front):
                if len(objectives) == 2:
                    sx, sy = staircase(fx, fy, ox.maximize, oy.maximize)
                    ax.plot(sx, sy, color=color, lw=1.6, zorder=3)
                ax.errorbar(fx, fy, xerr=_errors(fx, *_bounds(front, ox.name), log),
                            yerr=_errors(fy, *_bounds(front, oy.name), False), fmt="none", ecolor=color,
                            elinewidth=0.9, alpha=0.6, zorder=3)
                cand = ~front["is_baseline"].astype(bool).to_numpy()
                ax.scatter(fx[cand], fy[cand], s=55, color=[color], marker=marker, edgecolors="black", linewidths=0.6,
                           zorder=4)
            base = ok[is_base]
            if len(base):  # a study's baselines: its colour, one baseline shape, on or off the front
                any_baseline = True
                ax.scatter(base[f"{ox.name}_mean"].astype(float), base[f"{oy.name}_mean"].astype(float), s=80,
                           color=[color], marker=BASELINE_MARKERS[0], edgecolors="black", linewidths=0.8, zorder=5)
            handles.append(Line2D([], [], color=color, marker=marker, lw=1.6, markersize=7,
                                  label=f"{shorten(name, 30)} ({len(front)} on front)"))
        if any_baseline:
            handles.append(Line2D([], [], ls="", marker=BASELINE_MARKERS[0], color="white", markeredgecolor="black",
                                  markersize=8, label="baseline (study colour)"))
        label_axes(ax, ox, oy, title, log, xs_all)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  title="study", alignment="left")
        caption = ("Lines: each study's Pareto front (architecture means over seeds, bars: 95% intervals); faint "
                   "points: dominated architectures.")
        if any_baseline:
            caption += "\nBaselines (X) take part in their study's front as reference points."
        ax.text(0.0, -0.13, caption, transform=ax.transAxes, fontsize=8.5, color="0.3", va="top", ha="left")
    return fig
