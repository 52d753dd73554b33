"""The trial plan: every trial of a study is queued (WAITING) before any runs.

Only the process that created the study (or one asked for more trials) plans, so the number of trials is
exact however many workers run. A grid study queues its cells in study-file order (x seeds); a sampled
study queues one empty slot per architecture, and the other seeds of a sampled architecture are queued
once its first seed has run.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from hybridlab.errors import HybridlabError
from search_space.space import Candidate
from studies.config import StudyConfig


def grid_keys(candidates: list[Candidate]) -> dict[str, Candidate]:
    """Readable, unique grid values: the label, with a suffix where two candidates share one."""
    keys: dict[str, Candidate] = {}
    for cand in candidates:
        key = cand.label
        i = 2
        while key in keys:
            key = f"{cand.label}#{i}"
            i += 1
        keys[key] = cand
    return keys


def target_architectures(config: StudyConfig, n_trials: int | None, keys: dict[str, Candidate] | None) -> int:
    """How many architectures the study trains (each once per seed); a grid caps it at its size."""
    if n_trials is not None:
        target = n_trials
    elif config.n_trials is not None:
        target = config.n_trials
    else:
        target = len(keys or {})
    return min(target, len(keys)) if keys is not None else target


def plan(study: optuna.Study, config: StudyConfig, keys: dict[str, Candidate] | None, target: int) -> None:
    """Queue the trials up to `target` architectures: baselines first, then grid cells or sampling slots."""
    trials = study.get_trials(deepcopy=False)
    slots = {t.user_attrs["slot"] for t in trials if "slot" in t.user_attrs}
    have = {t.user_attrs["baseline"] for t in trials if "baseline" in t.user_attrs}
    for baseline in config.baselines:  # first, so the report has its references early
        if baseline.label not in have:
            for seed in config.seeds:
                study.enqueue_trial({"baseline": baseline.label, "seed": seed},
                                    user_attrs={"baseline": baseline.label, "seed": seed})
    for slot in range(target):
        if slot in slots:
            continue
        if keys is not None:
            key = list(keys)[slot]
            for seed in config.seeds:
                study.enqueue_trial({"candidate": key, "seed": seed}, user_attrs={"slot": slot, "seed": seed})
        else:
            study.enqueue_trial({}, user_attrs={"slot": slot, "seed": config.seeds[0]})
    study.set_user_attr("planned_architectures", max(target, len(slots)))


def wait_for_plan(study: optuna.Study, shown_url: str, timeout_s: float = 120.0) -> None:
    """A worker that joins a study just created elsewhere waits until its plan is queued."""
    deadline = time.time() + timeout_s
    while "planned_architectures" not in study.user_attrs:
        if time.time() > deadline:
            raise HybridlabError(
                f"study {study.study_name!r} in {shown_url} has no trial plan; was it created by "
                "another tool? Use a new study name"
            )
        time.sleep(0.5)


def enqueue_other_seeds(study: optuna.Study, config: StudyConfig, is_grid: bool, trial: FrozenTrial) -> None:
    """A sampled architecture is trained with every seed: queue the other seeds with the same params."""
    if is_grid or "slot" not in trial.user_attrs or "retry_of" in trial.user_attrs:
        return
    if trial.state == TrialState.FAIL or "seed_of" in trial.user_attrs:
        return
    for seed in config.seeds[1:]:
        study.enqueue_trial(trial.params, user_attrs={"seed": seed, "seed_of": trial.number})
