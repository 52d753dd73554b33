"""Single-objective and progress figures: architectures ranked by one objective, and hypervolume by trial."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hybridlab.metrics import Objective, display_name
from reports.figures import (
    BASELINE_COLOR,
    BASELINE_MARKERS,
    NO_FAMILY,
    PALETTE,
    axis_label,
    family_styles,
    fix_singular_limits,
    new_figure,
    style,
)
from reports.labels import pattern_labels, shorten


def ranking_plot(arch: pd.DataFrame, objective: Objective, title: str, limit: int = 40) -> Figure:
    """Architectures ranked by the objective (best on top), mean and 95% interval over seeds, coloured by family."""
    col = f"{objective.name}_mean"
    data = arch[np.isfinite(arch[col].astype(float))].copy() if col in arch else arch.iloc[0:0]
    data["_score"] = data[col].astype(float) * objective.sign if len(data) else []
    data = data.sort_values(["_score", "key"], kind="stable").head(limit)
    n = len(data)
    is_base = data["is_baseline"].astype(bool).to_numpy()
    cand_labels, note = pattern_labels([p or lab or k for p, lab, k, b in
                                        zip(data["pattern"], data["label"], data["key"], is_base) if not b], 40)
    it = iter(cand_labels)
    labels = [shorten(lab or p or "baseline", 40) if b else next(it)
              for p, lab, b in zip(data["pattern"], data["label"], is_base)]
    styles = family_styles([f or NO_FAMILY for f in data["family"][~is_base]] or [NO_FAMILY])
    with style():
        fig = new_figure(8.6, 1.6 + 0.3 * max(n, 3))
        ax = fig.add_subplot(1, 1, 1)
        fix_singular_limits(ax, False, data[col].astype(float).to_numpy() if n else np.array([]), np.array([]))
        family_handles: dict[str, Line2D] = {}
        base_handles: list[Line2D] = []
        b = 0
        for i, (_, row) in enumerate(data.iterrows()):
            mean = float(row[col])
            lo, hi = float(row.get(f"{objective.name}_lo", np.nan)), float(row.get(f"{objective.name}_hi", np.nan))
            bar = [[0.0 if math.isnan(lo) else max(mean - lo, 0.0)], [0.0 if math.isnan(hi) else max(hi - mean, 0.0)]]
            if row["is_baseline"]:
                color, marker = BASELINE_COLOR, BASELINE_MARKERS[b % len(BASELINE_MARKERS)]
                b += 1
                name = f"baseline: {shorten(row['label'] or row['pattern'] or 'baseline', 30)}"
                base_handles.append(Line2D([], [], ls="", marker=marker, color=color, markersize=7, label=name))
            else:
                fam = row["family"] or NO_FAMILY
                color, marker = styles[fam]
                family_handles.setdefault(fam, Line2D([], [], ls="", marker=marker, color=color, markersize=7,
                                                      label=fam))
            ax.errorbar([mean], [i], xerr=bar, fmt="none", ecolor=color,
                        elinewidth=1.2, alpha=0.7)
            ax.scatter([mean], [i], s=55, color=[color], marker=marker, zorder=3,
                       facecolors=None if row["feasible"] else "white")
        handles = [family_handles[f] for f in sorted(family_handles)] + base_handles
        ax.set_yticks(range(n))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_ylim(n - 0.5 if n else 0.5, -0.5)
        ax.set_xlabel(axis_label(objective))
        ax.set_title(title, loc="left")
        if handles:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                      title="pattern family", alignment="left")
        caption = f"Best first; mean over seeds, bars: 95% intervals (none with one seed).{' ' + note if note else ''}"
        if len(arch) > n:
            caption += f" Showing the best {n} of {len(arch)}."
        ax.text(0.0, -0.6 / max(n, 3) - 0.08, caption, transform=ax.transAxes, fontsize=8.5, color="0.3",
                va="top", ha="left")
    return fig


def hypervolume_plot(hist: pd.DataFrame, objectives: Sequence[Objective], reference: Sequence[float],
                     rule: str, title: str) -> Figure:
    """Hypervolume (or best value, for one objective) after each finished trial, with the reference point."""
    single = len(objectives) == 1
    with style():
        fig = new_figure(8.6, 4.2)
        ax = fig.add_subplot(1, 1, 1)
        if len(hist):
            x = hist["number"].to_numpy()
            y = hist["hypervolume"].to_numpy()
            color = sns.color_palette(PALETTE, 1)[0]
            ax.step(x, y, where="post", color=color, lw=1.8)
            ax.plot(x, y, ls="", marker="o", markersize=4, color=color)
            ax.set_xlim(left=min(-0.5, float(x.min()) - 0.5))
        else:
            ax.text(0.5, 0.5, "no finished trial yet", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_xlabel("trial number")
        if single:
            ax.set_ylabel(f"best {display_name(objectives[0].name)} so far")
            caption = f"Single objective ({objectives[0].direction} {objectives[0].name}): best architecture mean so far."
        else:
            ax.set_ylabel("hypervolume\n(" + " × ".join(o.name for o in objectives) + ")")
            ref = ", ".join(f"{o.name} = {_num(v)}" for o, v in zip(objectives, reference))
            caption = (f"Reference point: {ref}\nRule: {rule}; fixed for the whole curve.\n"
                       "Each point: hypervolume of the front of architecture means over the seeds finished so far.")
        ax.set_title(title, loc="left")
        ax.text(0.0, -0.18, caption, transform=ax.transAxes, fontsize=8.5, color="0.3", va="top", ha="left")
    return fig


def _num(v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.4g}"


