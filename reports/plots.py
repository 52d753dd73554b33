"""Report figures (matplotlib Figure objects on the Agg canvas, styled with seaborn).

Output is reproducible: inputs are sorted, nothing is random, SVG ids use a fixed hash salt and the
files carry no date, so identical data gives byte-identical PNG and SVG files. Legends sit outside the
axes; colours come from seaborn's colour-blind-safe palette, with marker shapes as a second cue.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from hybridlab.metrics import Objective, display_name

PALETTE = "colorblind"
FAMILY_MARKERS = ("o", "s", "^", "v", "P")
BASELINE_MARKERS = ("X", "D", "*", "p", "h", "<", ">", "8", "d", "H")
BASELINE_COLOR = "#222222"
LABEL_LIMIT = 28
DPI = 150
NO_FAMILY = "(no family)"


@contextmanager
def style() -> Iterator[None]:
    """Seaborn whitegrid + a fixed font and SVG salt, scoped so global matplotlib state is untouched."""
    rc: dict = {}
    rc.update(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.85))
    rc.update({
        "font.family": "DejaVu Sans",
        "svg.hashsalt": "hybridlab",
        "svg.fonttype": "path",
        "figure.dpi": 100,
        "axes.titlesize": 12,
        "axes.titleweight": "bold",
        "legend.frameon": False,
        "legend.fontsize": 9,
    })
    with matplotlib.rc_context(rc):
        yield


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    with style():  # rc settings read at save time (SVG hash salt, fonts) must be the same every time
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.15, metadata={"Software": None})
    return buf.getvalue()


def to_svg(fig: Figure) -> bytes:
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.15, metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def log_ticks(ax, values: np.ndarray) -> None:
    """Readable log-axis ticks in plain numbers (1,500 not 1.5x10^3), denser when the range is narrow."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values) & (values > 0)]
    decades = math.log10(values.max() / values.min()) if len(values) else 1.0
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1.2 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    fmt = mticker.FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 10 else f"{v:g}")
    ax.xaxis.set_major_locator(mticker.LogLocator(base=10.0, subs=subs))
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_locator(mticker.LogLocator(base=10.0, subs=tuple(range(1, 10))))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())


def _label_axes(ax, ox: Objective, oy: Objective, title: str, log: bool, xs: np.ndarray) -> None:
    """Axis labels, title, and readable ticks on a log x axis: what every objective-space plot shares."""
    ax.set_xlabel(axis_label(ox, log))
    ax.set_ylabel(axis_label(oy))
    ax.set_title(title, loc="left")
    if log:
        log_ticks(ax, xs)


def axis_label(o: Objective, log: bool = False) -> str:
    base = display_name(o.name)
    if log:
        base = base[:-1] + ", log scale)" if base.endswith(")") else base + " (log scale)"
    return f"{base}  [{'higher' if o.maximize else 'lower'} is better]"


# -- pattern labels --------------------------------------------------------------------------------
def shorten(text: str, limit: int = LABEL_LIMIT) -> str:
    """Fit a pattern into `limit` characters: hide block options first, then cut the middle."""
    if len(text) <= limit:
        return text
    out, depth, i = [], 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "[":
            if depth == 0:
                out.append("[…]")
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
        i += 1
    text = "".join(out)
    if len(text) <= limit:
        return text
    keep = limit - 1
    head = (keep + 1) // 2
    return text[:head].rstrip() + "…" + text[len(text) - (keep - head):].lstrip()


def pattern_labels(patterns: Sequence[str], limit: int = LABEL_LIMIT) -> tuple[list[str], str]:
    """Short labels for a set of patterns: leading stages common to all of them are dropped (and named)."""
    split = [p.split(" | ") for p in patterns]
    common = 0
    if len(split) > 1 and all(p for p in patterns):
        while all(len(s) > common + 1 for s in split) and len({tuple(s[: common + 1]) for s in split}) == 1:
            common += 1
    if common:
        prefix = " | ".join(split[0][:common])
        labels = [shorten("… | " + " | ".join(s[common:]), limit) for s in split]
        return labels, f"Labels omit the leading stages '{prefix}' shared by all labelled patterns."
    return [shorten(p, limit) if p else "?" for p in patterns], ""


def family_styles(families: Sequence[str]) -> dict[str, tuple[tuple[float, float, float], str]]:
    """Colour and marker per family, in sorted order (the same family always gets the same style)."""
    names = sorted(set(families))
    colors = sns.color_palette(PALETTE, 10)
    return {f: (tuple(colors[i % 10]), FAMILY_MARKERS[(i // 10) % len(FAMILY_MARKERS)]) for i, f in enumerate(names)}


# -- Pareto plot -----------------------------------------------------------------------------------
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


def _errors(mean: np.ndarray, std: np.ndarray, log: bool) -> np.ndarray:
    std = np.nan_to_num(np.asarray(std, float), nan=0.0)
    lower = np.minimum(std, 0.9 * np.abs(mean)) if log else std
    return np.vstack([lower, std])


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
        _fix_singular_limits(ax, log, x, data[f"{oy.name}_mean"].astype(float).to_numpy())
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
        _label_axes(ax, ox, oy, title, log, x)
        _pad_limits(ax, log)
        note = ""
        if len(front):
            front_sorted = front.sort_values([f"{ox.name}_mean", "key"], kind="stable")
            labels, note = pattern_labels([p or r for p, r in zip(front_sorted["pattern"], front_sorted["label"])])
            place_labels(fig, ax, front_sorted[f"{ox.name}_mean"].astype(float).to_numpy(),
                         front_sorted[f"{oy.name}_mean"].astype(float).to_numpy(), labels,
                         data[f"{ox.name}_mean"].astype(float).to_numpy(), data[f"{oy.name}_mean"].astype(float).to_numpy(),
                         line=stairs)
        if handles:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                      title="pattern family", alignment="left")
        caption = "Each point is one architecture: mean over seeds, bars ±1 std."
        if len(objectives) > 2:
            caption += (f" Front over {len(objectives)} objectives (also "
                        + ", ".join(f"{o.direction} {o.name}" for o in objectives[2:]) + "), shown in the first two.")
        if note:
            caption += " " + note
        ax.text(0.0, -0.13, caption, transform=ax.transAxes, fontsize=8.5, color="0.3", va="top", ha="left")
        if data.empty:
            ax.text(0.5, 0.5, "no finished architecture with both objectives", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
    return fig


def _points(ax, rows: pd.DataFrame, ox: Objective, oy: Objective, log: bool, color, marker: str,
            size: float = 42, alpha: float = 0.9) -> None:
    x = rows[f"{ox.name}_mean"].astype(float).to_numpy()
    y = rows[f"{oy.name}_mean"].astype(float).to_numpy()
    xs = rows[f"{ox.name}_std"].astype(float).to_numpy() if f"{ox.name}_std" in rows else np.zeros(len(rows))
    ys = rows[f"{oy.name}_std"].astype(float).to_numpy() if f"{oy.name}_std" in rows else np.zeros(len(rows))
    ax.errorbar(x, y, xerr=_errors(x, xs, log), yerr=_errors(y, ys, False), fmt="none", ecolor=color,
                elinewidth=0.9, alpha=0.55, zorder=2)
    feasible = rows["feasible"].astype(bool).to_numpy()
    if feasible.any():
        ax.scatter(x[feasible], y[feasible], s=size, color=[color], marker=marker, alpha=alpha,
                   edgecolors="white", linewidths=0.5, zorder=3)
    if (~feasible).any():
        ax.scatter(x[~feasible], y[~feasible], s=size, facecolors="white", edgecolors=[color], marker=marker,
                   linewidths=1.0, zorder=3)


def _fix_singular_limits(ax, log: bool, x: np.ndarray, y: np.ndarray) -> None:
    """One distinct value on an axis gets a window around it (instead of matplotlib's singular-limit warning);
    call before drawing."""
    x = np.asarray(x, float)[np.isfinite(np.asarray(x, float))]
    y = np.asarray(y, float)[np.isfinite(np.asarray(y, float))]
    if len(x) and np.ptp(x) == 0:
        v = float(x[0])
        ax.set_xlim(v / 1.5, v * 1.5) if log else ax.set_xlim(v - (abs(v) * 0.1 or 1.0), v + (abs(v) * 0.1 or 1.0))
    if len(y) and np.ptp(y) == 0:
        v = float(y[0])
        ax.set_ylim(v - (abs(v) * 0.02 or 1.0), v + (abs(v) * 0.02 or 1.0))


def _pad_limits(ax, log: bool) -> None:
    """Freeze the limits with some room for labels (label placement needs final limits)."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    if log and x0 > 0 and x1 > 0:
        span = math.log10(x1) - math.log10(x0) or 1.0
        ax.set_xlim(10 ** (math.log10(x0) - 0.06 * span), 10 ** (math.log10(x1) + 0.06 * span))
    else:
        span = (x1 - x0) or 1.0
        ax.set_xlim(x0 - 0.06 * span, x1 + 0.06 * span)
    span = (y1 - y0) or 1.0
    ax.set_ylim(y0 - 0.08 * span, y1 + 0.10 * span)


# -- label placement -------------------------------------------------------------------------------
def _offsets() -> list[tuple[float, float, str, str]]:
    """Candidate label offsets (points) around a marker: 8 directions, nearest ring first."""
    out = []
    for ring in (9.0, 18.0, 30.0, 44.0):
        for angle in (45, 315, 135, 225, 90, 270, 0, 180):
            rad = math.radians(angle)
            dx, dy = ring * math.cos(rad), ring * math.sin(rad)
            ha = "left" if dx > 1 else "right" if dx < -1 else "center"
            va = "bottom" if dy > 1 else "top" if dy < -1 else "center"
            out.append((round(dx, 3), round(dy, 3), ha, va))
    return out


_OFFSETS = _offsets()


def place_labels(fig: Figure, ax, xs: np.ndarray, ys: np.ndarray, labels: Sequence[str],
                 all_x: np.ndarray, all_y: np.ndarray, line: tuple[np.ndarray, np.ndarray] | None = None) -> list:
    """Greedy, deterministic placement: for each label try offsets around its point (nearest first) and keep
    the cheapest; cost = overlap with earlier labels, markers and the outside of the axes, plus leader length
    and leader crossings. Labels moved away from their point get a leader line."""
    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    radius = 6.0 * fig.dpi / 72.0
    px_per_pt = fig.dpi / 72.0
    markers = []
    for px, py in ax.transData.transform(np.column_stack([all_x, all_y])):
        if np.all(np.isfinite([px, py])):
            markers.append(Bbox.from_extents(px - radius, py - radius, px + radius, py + radius))
    anchors = ax.transData.transform(np.column_stack([xs, ys]))
    segments: list[tuple[np.ndarray, np.ndarray]] = []  # the front's staircase: labels should not hide it
    if line is not None and len(line[0]) > 1:
        pts = ax.transData.transform(np.column_stack(line))
        segments = [(pts[j], pts[j + 1]) for j in range(len(pts) - 1)]
    placed: list[Bbox] = []
    leaders: list[tuple[np.ndarray, np.ndarray]] = []
    annotations = []
    for i, (x, y, text) in enumerate(zip(xs, ys, labels)):
        anchor = anchors[i]
        best, best_cost = None, math.inf
        for k, (dx, dy, ha, va) in enumerate(_OFFSETS):
            far = k >= 8
            ann = ax.annotate(
                text, xy=(x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=7.5,
                color="0.1", zorder=6, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6", lw=0.5, alpha=0.92),
                arrowprops=dict(arrowstyle="-", color="0.25", lw=0.8, shrinkA=0, shrinkB=5) if far else None,
            )
            ann.update_positions(renderer)  # places the text; Text's extent then excludes the leader line
            box = Text.get_window_extent(ann, renderer).padded(2.0)
            end = _nearest_point(box, anchor)
            cost = 5 * sum(_overlap(box, b) for b in placed) + 3 * sum(_overlap(box, b) for b in markers)
            cost += 2 * (box.width * box.height - _overlap(box, axes_box))  # area outside the axes
            cost += 8.0 * math.hypot(dx, dy) * px_per_pt  # short leaders read better
            cost += 400.0 * sum(_segment_hits_box(a, b, box) for a, b in segments)
            if far:
                others = [m for j, m in enumerate(markers) if not m.contains(*anchor)]
                crossings = sum(_segment_hits_box(anchor, end, b) for b in placed + others)
                crossings += sum(_segments_cross(anchor, end, a, b) for a, b in leaders)
                cost += 2000.0 * crossings
            if cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (ann, box, far, end), cost
            else:
                ann.remove()
        if best is not None:
            ann, box, far, end = best
            placed.append(box)
            if far:
                leaders.append((anchor, end))
            annotations.append(ann)
    return annotations


def _nearest_point(box: Bbox, p: np.ndarray) -> np.ndarray:
    return np.array([min(max(p[0], box.x0), box.x1), min(max(p[1], box.y0), box.y1)])


def _segment_hits_box(p: np.ndarray, q: np.ndarray, box: Bbox) -> bool:
    """Whether segment p-q passes through the inside of `box` (Liang-Barsky clipping)."""
    t0, t1 = 0.0, 1.0
    d = q - p
    for pi, qi in ((-d[0], p[0] - box.x0), (d[0], box.x1 - p[0]), (-d[1], p[1] - box.y0), (d[1], box.y1 - p[1])):
        if pi == 0:
            if qi < 0:
                return False
            continue
        t = qi / pi
        if pi < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return False
    return t1 - t0 > 1e-6


def _segments_cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> bool:
    def orient(p, q, r) -> float:
        return float((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    return (orient(a, b, c) * orient(a, b, d) < 0) and (orient(c, d, a) * orient(c, d, b) < 0)


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


# -- single objective ------------------------------------------------------------------------------
def ranking_plot(arch: pd.DataFrame, objective: Objective, title: str, limit: int = 40) -> Figure:
    """Architectures ranked by the objective (best on top), mean ± std over seeds, coloured by family."""
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
        _fix_singular_limits(ax, False, data[col].astype(float).to_numpy() if n else np.array([]), np.array([]))
        family_handles: dict[str, Line2D] = {}
        base_handles: list[Line2D] = []
        b = 0
        for i, (_, row) in enumerate(data.iterrows()):
            mean = float(row[col])
            std = float(row.get(f"{objective.name}_std", np.nan))
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
            ax.errorbar([mean], [i], xerr=[[0 if math.isnan(std) else std]] * 2, fmt="none", ecolor=color,
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
        caption = f"Best first; mean over seeds, bars ±1 std.{' ' + note if note else ''}"
        if len(arch) > n:
            caption += f" Showing the best {n} of {len(arch)}."
        ax.text(0.0, -0.6 / max(n, 3) - 0.08, caption, transform=ax.transAxes, fontsize=8.5, color="0.3",
                va="top", ha="left")
    return fig


# -- hypervolume -----------------------------------------------------------------------------------
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


# -- comparison ------------------------------------------------------------------------------------
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
        _fix_singular_limits(ax, log, xs_all, ys_all)
        handles = []
        for i, (name, arch) in enumerate(studies):
            color, marker = colors[i % 10], FAMILY_MARKERS[(i // 10) % len(FAMILY_MARKERS)]
            ok = arch[np.isfinite(arch[f"{ox.name}_mean"].astype(float)) & np.isfinite(arch[f"{oy.name}_mean"].astype(float))]
            ok = ok[~ok["is_baseline"].astype(bool)] if (~ok["is_baseline"].astype(bool)).any() else ok
            rest = ok[ok["rank"] != 1]
            front = ok[ok["rank"] == 1]
            ax.scatter(rest[f"{ox.name}_mean"].astype(float), rest[f"{oy.name}_mean"].astype(float), s=22,
                       color=[color], marker=marker, alpha=0.3, linewidths=0, zorder=2)
            fx = front[f"{ox.name}_mean"].astype(float).to_numpy()
            fy = front[f"{oy.name}_mean"].astype(float).to_numpy()
            if len(front):
                if len(objectives) == 2:
                    sx, sy = staircase(fx, fy, ox.maximize, oy.maximize)
                    ax.plot(sx, sy, color=color, lw=1.6, zorder=3)
                ax.scatter(fx, fy, s=55, color=[color], marker=marker, edgecolors="black", linewidths=0.6, zorder=4)
            handles.append(Line2D([], [], color=color, marker=marker, lw=1.6, markersize=7,
                                  label=f"{shorten(name, 30)} ({len(front)} on front)"))
        _label_axes(ax, ox, oy, title, log, xs_all)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  title="study", alignment="left")
        ax.text(0.0, -0.13, "Lines: each study's Pareto front (architecture means over seeds); faint points: "
                "dominated architectures.", transform=ax.transAxes, fontsize=8.5, color="0.3", va="top", ha="left")
    return fig
