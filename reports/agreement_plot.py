"""Figures of the agreement section: low against high fidelity, and the front predicted by a cheap fidelity.

`agreement_plot`: one panel per (lower fidelity, objective), each architecture a labelled point and the
low fidelity's winner ringed; no fitted line, since agreement is about order, not values.
`predicted_front_plot`: every low-fidelity architecture (thousands of points, drawn as one
rasterised collection so the SVG stays small and fast), its front highlighted and labelled, and the
architectures also trained at the top fidelity ringed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hybridlab.metrics import Objective, display_name
from reports.agreement import Agreement
from reports.figures import axis_label, fix_singular_limits, new_figure, pad_limits, style
from reports.labels import pattern_labels, place_labels, shorten
from reports.plots import staircase

CROWD_POINTS = 300  # above this many points a panel draws them small and rasterised
MAX_LABELS = 24
FRONT_LABELS = 16  # more labelled points than this are unreadable: the best ones by the high score are labelled


def point_labels(rows: pd.DataFrame) -> tuple[list[str], str]:
    """A layout's label where labels tell the architectures apart, else its shortened pattern."""
    labels = [str(x) for x in rows["label"]]
    if len(rows) and all(labels) and len(set(labels)) == len(labels):
        return [shorten(x, 24) for x in labels], ""
    return pattern_labels([str(p) for p in rows["pattern"]], 24)


def agreement_plot(panels: Sequence[tuple[str, str, Objective, pd.DataFrame, Agreement]], title: str) -> Figure:
    """Panels of (low label, high label, objective, pairs with low/high/pattern/label, agreement)."""
    cols = min(2, max(1, len(panels)))
    rows_n = (len(panels) + cols - 1) // cols
    with style():
        fig = new_figure(6.2 * cols, 4.9 * rows_n + 0.5)
        notes = []
        for i, (low_name, high_name, objective, pairs, result) in enumerate(panels):
            ax = fig.add_subplot(rows_n, cols, i + 1)
            data = pairs[np.isfinite(pairs["low"].astype(float)) & np.isfinite(pairs["high"].astype(float))]
            x, y = data["low"].astype(float).to_numpy(), data["high"].astype(float).to_numpy()
            fix_singular_limits(ax, False, x, y)
            crowd = len(x) > CROWD_POINTS  # thousands of pairs: small rasterised points, labels avoid their own
            ax.scatter(x, y, s=8 if crowd else 36, color="#0173b2", edgecolors="none" if crowd else "white",
                       linewidths=0.6, zorder=3, rasterized=crowd, alpha=0.6 if crowd else 1.0)
            if result.winner:
                w = data[data["key"] == result.winner]
                ax.scatter(w["low"].astype(float), w["high"].astype(float), s=110, facecolors="none",
                           edgecolors="#d55e00", linewidths=1.6, zorder=4)
            name = display_name(objective.name)
            ax.set_xlabel(f"{low_name}: {name}")
            ax.set_ylabel(f"{high_name}: {name}")
            ax.set_title(_panel_title(objective, result), loc="left", fontsize=10.5)
            pad_limits(ax, False)
            if len(data):
                chosen = _labelled(data, objective, MAX_LABELS)
                labels, note = point_labels(chosen)
                if note and note not in notes:
                    notes.append(note)
                cx, cy = chosen["low"].astype(float).to_numpy(), chosen["high"].astype(float).to_numpy()
                place_labels(fig, ax, cx, cy, labels, cx if crowd else x, cy if crowd else y)
            else:
                ax.text(0.5, 0.5, "no architecture at both fidelities", transform=ax.transAxes, ha="center",
                        va="center", color="0.4")
        fig.suptitle(title, x=0.01, ha="left", fontweight="bold", fontsize=12)
        handle = Line2D([], [], ls="", marker="o", markersize=9, markerfacecolor="none", markeredgecolor="#d55e00",
                        label="winner at the low fidelity")
        fig.legend(handles=[handle], loc="lower left", bbox_to_anchor=(0.01, -0.01), frameon=False)
        caption = ("Each point is one architecture trained at both fidelities (mean over seeds). Agreement is about "
                   "order, not values: points on any rising curve agree perfectly. " + " ".join(notes))
        fig.text(0.01, -0.04, caption, fontsize=8.5, color="0.3", va="top", ha="left", wrap=True)
        fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    return fig


def _panel_title(objective: Objective, result: Agreement) -> str:
    if not result.enough:
        return f"{objective.name}: {result.n} shared, too few for a rank correlation"
    return (f"{objective.name}: τ = {result.tau:.2f} [{result.tau_lo:.2f}, {result.tau_hi:.2f}], "
            f"ρ = {result.rho:.2f}, n = {result.n}")


def _labelled(data: pd.DataFrame, objective: Objective, limit: int) -> pd.DataFrame:
    order = data.assign(_s=data["high"].astype(float) * -objective.sign).sort_values(["_s", "key"], kind="stable")
    return order.drop(columns="_s").head(limit).sort_values("key", kind="stable")


def predicted_front_plot(low: pd.DataFrame, front: np.ndarray, retrained: np.ndarray, objectives: Sequence[Objective],
                         title: str, low_name: str, high_name: str = "") -> Figure:
    """All low-fidelity architectures (objective 1 on x, objective 0 on y), the low front as a staircase with
    labelled points, and rings around the architectures also trained at `high_name`."""
    oy, ox = objectives[0], objectives[1]
    x = low[ox.name].astype(float).to_numpy()
    y = low[oy.name].astype(float).to_numpy()
    ok = np.isfinite(x) & np.isfinite(y)
    front, retrained = np.asarray(front, bool) & ok, np.asarray(retrained, bool) & ok
    log = bool(ok.any()) and bool(np.all(x[ok] > 0)) and float(x[ok].max() / x[ok].min()) > 20
    with style():
        fig = new_figure(8.6, 5.6)
        ax = fig.add_subplot(1, 1, 1)
        if log:
            ax.set_xscale("log")
        fix_singular_limits(ax, log, x[ok], y[ok])
        rest = ok & ~front
        ax.scatter(x[rest], y[rest], s=7, color="0.6", alpha=0.5, linewidths=0, rasterized=True, zorder=2)
        handles = [Line2D([], [], ls="", marker="o", markersize=4, color="0.6",
                          label=f"{low_name}: {int(ok.sum()):,} architectures")]
        if front.any():
            sx, sy = staircase(x[front], y[front], ox.maximize, oy.maximize)
            ax.plot(sx, sy, color="black", lw=1.2, zorder=3)
            ax.scatter(x[front], y[front], s=30, color="#0173b2", zorder=4)
            handles.append(Line2D([], [], color="black", lw=1.2, marker="o", markerfacecolor="#0173b2",
                                  markeredgecolor="#0173b2", label=f"predicted front ({int(front.sum())})"))
        if retrained.any():
            ax.scatter(x[retrained], y[retrained], s=90, facecolors="none", edgecolors="#d55e00", linewidths=1.4,
                       zorder=5)
            handles.append(Line2D([], [], ls="", marker="o", markersize=9, markerfacecolor="none",
                                  markeredgecolor="#d55e00", label=f"also trained at {high_name} ({int(retrained.sum())})"))
        ax.set_xlabel(f"{low_name}: {axis_label(ox, log)}")
        ax.set_ylabel(f"{low_name}: {axis_label(oy)}")
        ax.set_title(title, loc="left")
        pad_limits(ax, log)
        idx = np.flatnonzero(front)
        if len(idx):
            idx = idx[np.argsort(x[idx], kind="stable")]
            total = len(idx)
            if total > FRONT_LABELS:  # evenly spaced along the front, both ends included
                idx = idx[np.unique(np.linspace(0, total - 1, FRONT_LABELS).round().astype(int))]
            labels, note = point_labels(low.iloc[idx])
            if total > len(idx):
                note = f"{len(idx)} of the {total} front points are labelled, evenly spaced. {note}"
            marked = np.flatnonzero(front | retrained)
            place_labels(fig, ax, x[idx], y[idx], labels, x[marked], y[marked], line=(sx, sy))
        else:
            note = ""
            ax.text(0.5, 0.5, "no architecture with both objectives", transform=ax.transAxes, ha="center",
                    va="center", color="0.4")
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        caption = f"Scores at the {low_name} fidelity only" + (
            f"; rings mark the architectures whose {high_name} result is in the agreement section. "
            if retrained.any() else ". ") + note
        ax.text(0.0, -0.13, caption.strip(), transform=ax.transAxes, fontsize=8.5, color="0.3", va="top", ha="left")
    return fig
