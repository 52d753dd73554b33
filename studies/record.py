"""The settings a study's results were made with, kept in its storage, so a rerun cannot change them.

Rerunning a study with other settings (`--set train.epochs=2` on a finished study) would rewrite its
`study.yaml` and `manifest.json` while its trials keep the old results: the record would lie. So the
settings that decide a result are stored with the study when it is created, and a run that asks for
other ones is refused with one line before anything is planned or written. The trial budget
(`n_trials`), the storage URL and the description may change between runs.
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from hybridlab.errors import HybridlabError
from studies.config import StudyConfig
from studies.objective import plain

SETTINGS_ATTR = "settings"


# How a run is watched and stored, not what it computes: changing these on a rerun is allowed.
_NOT_RESULT_DECIDING = {"train": ("loggers", "checkpoints", "threads"), "measure": ("phase", "threads")}


def settings_record(config: StudyConfig) -> dict[str, Any]:
    """The result-deciding settings of a study file, as plain JSON data."""
    raw = config.raw
    train = plain(config.recipe)
    if isinstance(train, dict):
        for key in _NOT_RESULT_DECIDING["train"]:
            train.pop(key, None)
    record = {
        "data": {k: v for k, v in config.data.items() if not k.startswith("_")},
        "train": train,
        "measure": {k: v for k, v in config.measure.items() if k not in _NOT_RESULT_DECIDING["measure"]},
        "auto_seeds": config.auto_seeds.to_dict() if config.auto_seeds is not None else None,
        "model": raw.get("model"),
        "search_space": raw.get("search_space"),
        "objectives": [{"name": o.name, "direction": o.direction} for o in config.objectives],
        "sampler": config.sampler,
        "seeds": list(config.seeds),
        "constraints": raw.get("constraints"),
        "baselines": raw.get("baselines"),
        "ablation": config.ablation,
        "devices": config.devices,
        # a study without a strategy keeps the record it stored before strategies existed
        **({"strategy": config.strategy.to_dict()} if config.strategy is not None else {}),
    }
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def check_settings(study: optuna.Study, config: StudyConfig, shown_url: str) -> None:
    """Refuse a run whose settings differ from those the study's trials were made with."""
    wanted = settings_record(config)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:  # a study made before settings were kept: keep them from now on
        study.set_user_attr(SETTINGS_ATTR, wanted)
        return
    if stored == wanted:
        return
    old, new = _flatten(stored), _flatten(wanted)
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k, "<unset>") != new.get(k, "<unset>")]
    shown = ", ".join(f"{k}: {_short(old.get(k, '<unset>'))} -> {_short(new.get(k, '<unset>'))}" for k in changed[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    raise HybridlabError(
        f"study {study.study_name!r} in {shown_url} holds trials made with other settings ({shown}{more}); "
        "nothing was changed: rerun it with its own settings, or give the new ones a new study name (--set name=...)"
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
