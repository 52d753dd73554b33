"""What every report figure shares: style, canvas, byte-reproducible PNG/SVG output, axes and colours.

Output is reproducible: nothing is random, SVG ids use a fixed hash salt and the files carry no date,
so identical data gives byte-identical PNG and SVG files. Colours come from seaborn's colour-blind-safe
palette, with marker shapes as a second cue.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib
import matplotlib.ticker as mticker
import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hybridlab.metrics import Objective, display_name

PALETTE = "colorblind"
FAMILY_MARKERS = ("o", "s", "^", "v", "P")
BASELINE_MARKERS = ("X", "D", "*", "p", "h", "<", ">", "8", "d", "H")
BASELINE_COLOR = "#222222"
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


def label_axes(ax, ox: Objective, oy: Objective, title: str, log: bool, xs: np.ndarray) -> None:
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



def family_styles(families: Sequence[str]) -> dict[str, tuple[tuple[float, float, float], str]]:
    """Colour and marker per family, in sorted order (the same family always gets the same style)."""
    names = sorted(set(families))
    colors = sns.color_palette(PALETTE, 10)
    return {f: (tuple(colors[i % 10]), FAMILY_MARKERS[(i // 10) % len(FAMILY_MARKERS)]) for i, f in enumerate(names)}



def fix_singular_limits(ax, log: bool, x: np.ndarray, y: np.ndarray) -> None:
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


def pad_limits(ax, log: bool) -> None:
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

