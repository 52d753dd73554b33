"""Exact hypervolume, a fixed reference point, and the hypervolume history of a study.

Optuna's own hypervolume code is private (`optuna._hypervolume`), so this is a small exact routine:
a sweep for 2 objectives and recursive slicing over the last objective for more (fine for the few
hundred architectures a study has). Everything works in minimisation form (see `pareto.to_minimization`).

Reference point rule (fixed for the whole curve): `manifest["reference_point"]` when given (a list in
objective order or a dict by name); otherwise, for each objective, the worst value any single finished
trial reached, moved by 10 % of the observed range (or 10 % of |value|, or 1, when the range is zero)
further towards "worse".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hybridlab.errors import ConfigError
from hybridlab.metrics import Objective
from reports.pareto import arch_key, finished_rows, pareto_mask, to_minimization

MARGIN = 0.10


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Volume dominated by minimisation `points` and bounded by `reference` (points beyond it add nothing)."""
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = np.unique(pts[pareto_mask(pts)], axis=0)
    return float(_hv(pts, ref))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    m = pts.shape[1]
    if m == 1:
        return float(ref[0] - pts[:, 0].min())
    if m == 2:
        order = np.lexsort((pts[:, 1], pts[:, 0]))
        volume, best_y = 0.0, ref[1]
        for x, y in pts[order]:
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return volume
    order = np.argsort(pts[:, -1], kind="stable")
    pts = pts[order]
    volume = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        depth = upper - pts[i, -1]
        if depth <= 0:
            continue
        slab = pts[: i + 1, :-1]
        slab = slab[pareto_mask(slab)]
        volume += _hv(np.unique(slab, axis=0), ref[:-1]) * depth
    return volume


def reference_point(frame: pd.DataFrame, objectives: Sequence[Objective],
                    manifest: dict[str, Any] | None = None) -> tuple[np.ndarray, str]:
    """The reference point in objective units and the rule that produced it (for the plot)."""
    manifest = manifest or {}
    given = manifest.get("reference_point")
    if given is not None:
        values = given_reference(given, objectives)
        return values, "reference point from manifest.json"
    done = finished_rows(frame)
    values = []
    for o in objectives:
        col = pd.to_numeric(done[o.name], errors="coerce").astype(float).dropna() if o.name in done else pd.Series([], dtype=float)
        if col.empty:
            values.append(np.nan)
            continue
        lo, hi = float(col.min()), float(col.max())
        span = hi - lo
        margin = MARGIN * span if span > 0 else (MARGIN * abs(lo) if lo != 0 else 1.0)
        values.append(lo - margin if o.maximize else hi + margin)
    return np.asarray(values, dtype=float), "worst single-trial value of each objective, 10 % of its range further out"


def given_reference(given: Any, objectives: Sequence[Objective],
                    where: str = "manifest.json: reference_point") -> np.ndarray:
    """A reference point given by the user: a list in objective order or a mapping by name, finite numbers."""
    if isinstance(given, dict):
        missing = [o.name for o in objectives if o.name not in given]
        if missing:
            raise ConfigError(f"has no value for {', '.join(missing)}", where)
        raw = [given[o.name] for o in objectives]
    elif isinstance(given, (list, tuple)):
        if len(given) != len(objectives):
            raise ConfigError(f"needs {len(objectives)} values (one per objective), got {len(given)}", where)
        raw = list(given)
    else:
        raise ConfigError("must be a list or an object keyed by objective name", where)
    try:
        values = np.asarray([float(v) for v in raw], dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"values must be numbers, got {raw}", where) from None
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"values must be finite numbers, got {raw}", where)
    return values


def check_reference(reference: Sequence[float], studies: Sequence[tuple[str, pd.DataFrame]],
                    objectives: Sequence[Objective], where: str) -> None:
    """A reference point must be worse than every finished candidate trial in each objective's direction.

    A point beyond it adds nothing to the hypervolume, so a reference inside the data would hide part of
    a front without saying so. Baselines do not count (they are not in the hypervolume).
    """
    for o, ref in zip(objectives, np.asarray(reference, dtype=float)):
        worst: tuple[float, str] | None = None
        for name, frame in studies:
            done = finished_rows(frame)
            done = done[~done["is_baseline"].astype(bool)]
            col = pd.to_numeric(done[o.name], errors="coerce").astype(float).dropna() if o.name in done else None
            if col is None or col.empty:
                continue
            value = float(col.min() if o.maximize else col.max())
            if worst is None or (value < worst[0] if o.maximize else value > worst[0]):
                worst = (value, name)
        if worst is not None and not (ref < worst[0] if o.maximize else ref > worst[0]):
            side = "below" if o.maximize else "above"
            raise ConfigError(f"{o.name} = {ref:g} is not worse than every point ({o.direction}: it must be {side} "
                              f"{o.name} = {worst[0]:g} in study {worst[1]!r})", where)


def history(frame: pd.DataFrame, objectives: Sequence[Objective], reference: Sequence[float]) -> pd.DataFrame:
    """Hypervolume of the architecture-mean front after each finished candidate trial.

    Columns: number, hypervolume. Baselines and infeasible trials are left out; an architecture's point
    is the mean over the seeds finished so far, so the curve can dip when a new seed lowers a mean.
    With one objective the "hypervolume" is the best value so far (in the objective's own units).
    """
    done = finished_rows(frame)
    done = done[~done["is_baseline"].astype(bool)]
    if "feasible" in done.columns:
        done = done[done["feasible"].astype(bool)]
    names = [o.name for o in objectives]
    if done.empty or any(n not in done.columns for n in names):
        return pd.DataFrame({"number": pd.Series([], dtype=int), "hypervolume": pd.Series([], dtype=float)})
    done = done.sort_values("number", kind="stable")
    keys = arch_key(done).tolist()
    values = np.column_stack([pd.to_numeric(done[n], errors="coerce").astype(float).to_numpy() for n in names])
    ref_min = to_minimization(np.asarray(reference, dtype=float), objectives)[0]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    numbers, volumes = [], []
    for number, key, row in zip(done["number"].tolist(), keys, values):
        if not np.all(np.isfinite(row)):
            continue
        sums[key] = sums.get(key, 0.0) + row
        counts[key] = counts.get(key, 0) + 1
        means = np.array([sums[k] / counts[k] for k in sorted(sums)])
        if len(objectives) == 1:
            col = means[:, 0]
            volume = float(col.max() if objectives[0].maximize else col.min())
        else:
            volume = hypervolume(to_minimization(means, objectives), ref_min)
        numbers.append(int(number))
        volumes.append(volume)
    return pd.DataFrame({"number": pd.Series(numbers, dtype=int), "hypervolume": pd.Series(volumes, dtype=float)})
