"""The trials table: an Optuna study as one DataFrame row per trial (schema in docs/results.md).

The study runner rewrites `trials.csv` after every trial through `write_trials`, and the report reads it
back through `read_trials`; both go through `trials_frame`, so the table can always be rebuilt from the
storage alone. Columns: the documented ones first (always present, empty when a trial lacks them), then
any other user attribute, the objective values that no user attribute carries (`value_<i>`), constraints
(`constraint_<name>` + `feasible`) and Optuna parameters (`param_<name>`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from hybridlab.atomic import atomic_write
from hybridlab.metrics import METRICS

# The documented columns, in order (docs/results.md): who and what, every registered metric (in the
# registry's order), the measurement-noise figures, then bookkeeping.
IDENTITY_COLUMNS: tuple[str, ...] = ("number", "state", "pattern", "arch_hash", "family", "label", "seed")
METRIC_COLUMNS: tuple[str, ...] = tuple(METRICS)
# Throughput spread and side-by-side ratio (`throughput_interval` says "iqr" or "ci95"), the contention flag,
# the thread count the figures were taken with, and the trial's fidelity (hybridlab.fidelity: hash, label, rank).
NOISE_COLUMNS: tuple[str, ...] = (
    "throughput_lo", "throughput_hi", "throughput_interval", "throughput_rel", "throughput_rel_lo",
    "throughput_rel_hi", "noisy", "noisy_reason", "threads", "fidelity", "fidelity_label", "fidelity_rank",
    "slow_paths",
    "rung", "rung_budget", "promoted_from", "promotion_reason",  # strategy: halving (studies.halving)
)
RECORD_COLUMNS: tuple[str, ...] = ("reused_from", "is_baseline", "fail_reason", "datetime_start", "datetime_complete")
COLUMNS: tuple[str, ...] = IDENTITY_COLUMNS + METRIC_COLUMNS + NOISE_COLUMNS + RECORD_COLUMNS
TEXT_COLUMNS: tuple[str, ...] = ("state", "pattern", "arch_hash", "family", "label", "throughput_interval",
                                 "noisy_reason", "fidelity", "fidelity_label", "slow_paths", "promotion_reason",
                                 "fail_reason", "datetime_start", "datetime_complete")
INT_COLUMNS: tuple[str, ...] = ("number", "seed", *(m.name for m in METRICS.values() if m.dtype == "int"),
                                "threads", "reused_from", "fidelity_rank", "rung", "rung_budget", "promoted_from")
FLOAT_COLUMNS: tuple[str, ...] = (*(m.name for m in METRICS.values() if m.dtype == "float"), "throughput_lo",
                                  "throughput_hi", "throughput_rel", "throughput_rel_lo", "throughput_rel_hi")
BOOL_COLUMNS: tuple[str, ...] = ("is_baseline", "noisy")
STATES: tuple[str, ...] = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")

CSV_NAME = "trials.csv"
PARQUET_NAME = "trials.parquet"


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial of an Optuna study, sorted by trial number (works while trials still run).

    Trials of an architecture measured side by side (`hybridlab measure`) show those figures.
    """
    from studies.side_by_side_view import overlaid

    study = overlaid(study)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    metric_names = _metric_names(study)
    rows: list[dict[str, Any]] = []
    extra: set[str] = set()
    params: set[str] = set()
    constraints: set[str] = set()
    n_values = 0
    for trial in trials:
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
        attrs = _flatten(trial.user_attrs)
        extra.update(k for k in attrs if k not in COLUMNS)
        row.update(attrs)
        row["number"] = trial.number  # a user attribute never overrides these two
        row["state"] = trial.state.name
        if row.get("datetime_start") in (None, "") and trial.datetime_start is not None:
            row["datetime_start"] = trial.datetime_start.isoformat()
        if row.get("datetime_complete") in (None, "") and trial.datetime_complete is not None:
            row["datetime_complete"] = trial.datetime_complete.isoformat()
        values = trial.values or []
        n_values = max(n_values, len(values))
        for i, value in enumerate(values):
            name = metric_names[i] if metric_names and i < len(metric_names) else None
            if name is not None and _is_missing(row.get(name)):
                row[name] = value  # the objective under its metric name when no attribute carries it
            row[f"value_{i}"] = value
        cons = dict(trial.constraints)
        if cons:
            constraints.update(cons)
            for key, value in cons.items():
                row[f"constraint_{key}"] = value
            row["feasible"] = all(v <= 0 for v in cons.values())
        for key, value in trial.params.items():
            params.add(key)
            row[f"param_{key}"] = _cell(value)
        rows.append(row)

    covered = _value_columns_covered(rows, metric_names, n_values)
    order = list(COLUMNS)
    order += sorted(extra - set(order))
    order += [f"value_{i}" for i in range(n_values) if not covered[i]]
    if metric_names:
        order += [m for m in metric_names if m not in order]
    if constraints:
        order += [f"constraint_{k}" for k in sorted(constraints)] + ["feasible"]
    order += [f"param_{k}" for k in sorted(params)]
    frame = pd.DataFrame.from_records(rows, columns=order) if rows else pd.DataFrame(columns=order)
    return normalize_frame(frame)


def write_trials(study: Any, folder: str | os.PathLike[str]) -> Path:
    """Write `trials.csv` (and `trials.parquet` when pyarrow imports) atomically; return the CSV path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    csv_path = folder / CSV_NAME
    atomic_write(csv_path, lambda tmp: frame.to_csv(tmp, index=False))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return csv_path
    atomic_write(folder / PARQUET_NAME, lambda tmp: _to_parquet(frame, tmp))
    return csv_path


def read_trials(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a `trials.csv` (a file, or the study folder holding it) back with the documented dtypes."""
    path = Path(path)
    if path.is_dir():
        path = path / CSV_NAME
    frame = pd.read_csv(path, keep_default_na=True, low_memory=False)
    return normalize_frame(frame)


def normalize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Add missing documented columns and give them their documented dtypes (empty text is "")."""
    frame = frame.copy()
    for name in COLUMNS:
        if name not in frame.columns:
            frame[name] = pd.NA
    for name in TEXT_COLUMNS:
        frame[name] = [("" if _is_missing(v) else str(v)) for v in frame[name]]
    for name in INT_COLUMNS:
        frame[name] = pd.array([_to_int(v) for v in frame[name]], dtype="Int64")
    for name in FLOAT_COLUMNS:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in BOOL_COLUMNS:
        frame[name] = pd.Series([_to_bool(v) for v in frame[name]], index=frame.index, dtype=bool)
    if "feasible" in frame.columns:
        frame["feasible"] = [True if _is_missing(v) else _to_bool(v) for v in frame["feasible"]]
        frame["feasible"] = frame["feasible"].astype(bool)
    frame["label"] = [lab or fam for lab, fam in zip(frame["label"], frame["family"])]
    front = list(COLUMNS)
    frame = frame[front + [c for c in frame.columns if c not in front]]
    return frame.reset_index(drop=True)


# -- helpers ----------------------------------------------------------------------------------------
def _metric_names(study: Any) -> list[str] | None:
    try:
        names = study.metric_names
    except Exception:  # storages without metric names
        return None
    return list(names) if names else None


def _value_columns_covered(rows: list[dict[str, Any]], names: list[str] | None, n_values: int) -> list[bool]:
    """Objectives that have a metric name live in that column, so their `value_<i>` column is dropped."""
    covered = [bool(names) and i < len(names) for i in range(n_values)]
    for row in rows:
        for i in range(n_values):
            if covered[i]:
                row.pop(f"value_{i}", None)
    return covered


def _flatten(attrs: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """User attributes by their own names; nested dicts as `outer.inner`, lists as JSON text."""
    out: dict[str, Any] = {}
    for key in sorted(attrs):
        value = attrs[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix=f"{name}."))
        else:
            out[name] = _cell(value)
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), sort_keys=True, default=str)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return False


def _to_int(value: Any) -> Any:
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        return pd.NA
    try:
        number = float(value)
    except (TypeError, ValueError):
        return pd.NA
    if math.isnan(number) or math.isinf(number):
        return pd.NA
    return int(round(number))


def _to_bool(value: Any) -> bool:
    if _is_missing(value):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "y", "t")
    return bool(value)


def _to_parquet(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Parquet needs one type per column: mixed-type object columns are written as text."""
    out = frame.copy()
    for name in out.columns:
        if out[name].dtype == object:
            kinds = {type(v) for v in out[name] if not _is_missing(v)}
            if len(kinds) > 1:
                out[name] = [None if _is_missing(v) else str(v) for v in out[name]]
    out.to_parquet(path, index=False)


def state_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Trials per state, in the documented order (states with no trial are left out)."""
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    ordered = {s: int(counts[s]) for s in STATES if s in counts}
    ordered.update({s: int(n) for s, n in sorted(counts.items()) if s not in ordered})
    return ordered

