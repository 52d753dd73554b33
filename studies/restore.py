"""Results are never silently started afresh, and a lost storage comes back from `trials.csv`.

`trials.csv` is rewritten after every trial, so it is the last copy of a study's results when its
storage is lost. A study folder that holds it next to an empty, missing or unreadable storage is
refused with one line (a new study there would overwrite the table); `rebuild_storage` restores the
storage from the table, `study.yaml` and `manifest.json`:

- finished trials (COMPLETE, PRUNED, FAIL) come back with their numbers, values, user attributes,
  parameters and constraints, so checkpoints under `trials/<number>/` still belong to them;
- trials that had not finished come back as FAIL placeholders (`placeholder: true`), which keep the
  numbering; the next run plans their grid cells or slots again;
- a broken storage file is moved aside (`study.db.broken-<time>`), never deleted.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hybridlab.errors import HybridlabError
from hybridlab.urls import mask_password
from studies.storage import open_storage, sqlite_path
from studies.table import TEXT_COLUMNS

TABLE = "trials.csv"
FINISHED = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAIL}
INT_ATTRS = {"seed", "slot", "retry_of", "seed_of", "reused_from", "params", "macs", "flops", "epochs"}
PLACEHOLDER_REASON = "had not finished when the storage was lost; planned again by the next run"


def table_rows(folder: Path) -> int:
    """How many trials the folder's `trials.csv` holds (0 when there is none or it cannot be read)."""
    try:
        with open(folder / TABLE, "rb") as fh:
            return max(sum(1 for line in fh if line.strip()) - 1, 0)
    except OSError:
        return 0


def storage_problem(url: str) -> str | None:
    """Why the SQLite file behind `url` cannot hold this study's results (None: it looks fine, or it
    is not a SQLite file URL)."""
    db = sqlite_path(url)
    if db is None:
        return None
    if not db.exists():
        return "is missing"
    if not os.access(db, os.R_OK):
        return "cannot be read"
    if db.stat().st_size == 0:
        return "is empty (0 bytes)"
    with open(db, "rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            return "is not a SQLite database"
    return None


def refusal(folder: Path, name: str, url: str, problem: str) -> HybridlabError:
    rebuild = f"hybridlab rebuild-storage {name} --results-dir {folder.parent}"
    return HybridlabError(
        f"{folder} holds results ({TABLE}, {table_rows(folder)} trials) but its storage {mask_password(url)} "
        f"{problem}; nothing was changed. Restore it with `{rebuild}`, or move {folder} away to start afresh"
    )


def guard_before_open(folder: Path, name: str, url: str) -> None:
    """Refuse to open an empty, missing or unreadable SQLite file next to existing results."""
    if table_rows(folder) == 0:
        return
    problem = storage_problem(url)
    if problem is not None:
        raise refusal(folder, name, url, problem)


def guard_before_create(folder: Path, name: str, url: str, storage: optuna.storages.BaseStorage) -> None:
    """Refuse to create the study afresh in any storage when the folder already holds its results."""
    if table_rows(folder) == 0:
        return
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        raise refusal(folder, name, url, f"has no study {name!r}") from None


# -- rebuild ------------------------------------------------------------------------------------------
def rebuild_storage(folder: Path, url: str, echo: Any = print) -> optuna.Study:
    """Create the study in `url` from `folder`'s trials.csv, study.yaml and manifest.json."""
    if table_rows(folder) == 0:
        raise HybridlabError(f"{folder / TABLE} is missing or empty: there is nothing to rebuild from")
    manifest = _manifest(folder)
    name = str(manifest.get("study") or folder.name)
    objectives = manifest.get("objectives") or []
    if not objectives:
        raise HybridlabError(f"{folder / 'manifest.json'} names no objectives; cannot tell the study's directions")
    problem = storage_problem(url)
    db = sqlite_path(url)
    if db is not None and db.exists() and problem is not None:
        aside = db.with_name(f"{db.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(db, aside)
        echo(f"moved the broken storage file aside to {aside}")
    storage = open_storage(url)
    try:
        storage.get_study_id_from_name(name)
        raise HybridlabError(f"storage {mask_password(url)} already holds study {name!r}; there is nothing to rebuild")
    except KeyError:
        pass
    study = optuna.create_study(study_name=name, storage=storage,
                                directions=[o.get("direction", "maximize") for o in objectives])
    metric_names = [o["name"] for o in objectives]
    study.set_metric_names(metric_names)
    config = _config(folder)
    if config is not None:
        from studies.record import settings_record

        study.set_user_attr("settings", settings_record(config))
    text = {c: str for c in (*TEXT_COLUMNS, "fidelity", "worker", "resumed_from", "measure_env", "param_candidate",
                             "param_baseline")}
    frame = pd.read_csv(folder / TABLE, keep_default_na=True, low_memory=False, dtype=text).sort_values("number")
    choices = {c[len("param_"):]: sorted({_plain(v) for v in frame[c] if not _missing(v)}, key=str)
               for c in frame.columns if c.startswith("param_")}
    if config is not None:  # Optuna refuses a parameter whose choices differ between trials of a study
        choices.update({k: v for k, v in param_choices(config).items() if k in choices})
    elif "seed" in choices:
        choices["seed"] = sorted({int(v) for v in choices["seed"]})
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "placeholder": 0}
    slots: set[int] = set()
    number = 0
    for row in frame.to_dict("records"):
        target = int(row["number"])
        while number < target:  # a trial the table never saw: keep the numbering
            _add_placeholder(study, {})
            counts["placeholder"] += 1
            number += 1
        attrs = _user_attrs(row, metric_names)
        if "slot" in attrs:
            slots.add(attrs["slot"])
        state = FINISHED.get(str(row.get("state")))
        if state is None:
            _add_placeholder(study, attrs)
            counts["placeholder"] += 1
        else:
            _add_finished(study, row, attrs, state, metric_names, choices)
            counts[str(row["state"])] += 1
        number += 1
    study.set_user_attr("planned_architectures", len(slots))
    echo(f"restored study {name!r} into {mask_password(url)}: {counts['COMPLETE']} complete, {counts['PRUNED']} "
         f"pruned, {counts['FAIL']} failed, {counts['placeholder']} unfinished (planned again by the next run)")
    return study


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise HybridlabError(f"cannot read {folder / 'manifest.json'}: {exc}") from None


def param_choices(config: Any) -> dict[str, list[Any]]:
    """Every parameter's choices as the study's trials suggest them (`studies.objective`, `search_space`):
    the seeds, the baselines, the grid keys and each search dimension."""
    from search_space.space import storable
    from studies.planning import seed_choices, study_grid_keys

    out: dict[str, list[Any]] = {"seed": seed_choices(config)}
    if config.baselines:
        out["baseline"] = [b.label for b in config.baselines]
    for dim in config.space.dimensions:
        out[dim.name] = [storable(c) for c in dim.choices]
    keys = study_grid_keys(config)
    if keys is not None:
        out["candidate"] = list(keys)
    return out


def _config(folder: Path) -> Any:
    """The folder's study.yaml, loaded (None when it cannot be read)."""
    try:
        from studies.config import load_study_config

        return load_study_config(str(folder / "study.yaml"))
    except (HybridlabError, OSError):
        return None


def _add_placeholder(study: optuna.Study, attrs: dict[str, Any]) -> None:
    keep = {k: v for k, v in attrs.items() if k not in ("slot", "baseline")}  # so the next run plans it again
    keep.update(placeholder=True, fail_reason=PLACEHOLDER_REASON)
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs=keep))


def _add_finished(study: optuna.Study, row: dict[str, Any], attrs: dict[str, Any], state: TrialState,
                  metric_names: list[str], choices: dict[str, list[Any]]) -> None:
    params = {k[len("param_"):]: _plain(v) for k, v in row.items() if k.startswith("param_") and not _missing(v)}
    for key, value in params.items():  # the table reads 3 as 3.0 or "3": take the choice it stands for
        params[key] = next((c for c in choices[key] if c == value or str(c) == str(value)), value)
    distributions = {k: CategoricalDistribution(choices[k]) for k in params}
    constraints = [float(row[k]) for k in sorted(row) if k.startswith("constraint_") and not _missing(row[k])]
    values = None
    if state == TrialState.COMPLETE:
        values = []
        for i, name in enumerate(metric_names):
            value = row.get(name, row.get(f"value_{i}"))
            if _missing(value):
                value = row.get(f"value_{i}")
            if _missing(value):
                raise HybridlabError(f"{TABLE}: trial {row['number']} is COMPLETE but has no {name!r} value")
            values.append(float(value))
    study.add_trial(optuna.create_trial(
        state=state, values=values, params=params, distributions=distributions, user_attrs=attrs,
        system_attrs={"constraints": constraints} if constraints else {},
    ))


def _user_attrs(row: dict[str, Any], metric_names: list[str]) -> dict[str, Any]:
    """The table's columns back as user attributes: `outer.inner` nested again, JSON lists parsed."""
    attrs: dict[str, Any] = {}
    for key, value in row.items():
        if key in ("number", "state", "feasible") or key.startswith(("param_", "constraint_", "value_")):
            continue
        if _missing(value) or value == "":
            if "." not in key:
                continue
            value = None  # a nested setting the table has a column for: it was there, as None
        value = _plain(value)
        if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        if key in INT_ATTRS and isinstance(value, float) and value.is_integer():
            value = int(value)
        if key == "is_baseline" and isinstance(value, str):
            value = value.strip().lower() == "true"
        node = attrs
        *outer, last = key.split(".")
        for part in outer:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[last] = value
    return attrs


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
