"""Pattern labels on plots: short enough to read, and placed where they hide nothing.

`shorten`/`pattern_labels` make the text (block options hidden first, shared leading stages dropped);
`place_labels` puts each label next to its point by a greedy, deterministic search over offsets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

LABEL_LIMIT = 28


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
