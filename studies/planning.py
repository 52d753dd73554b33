"""The trial plan: every trial of a study is queued (WAITING) before any runs.

The process that created the study plans it (and one asked for more trials extends it), so the number of
trials is exact however many workers run. A grid study queues its cells seed-major: seed 0 of every cell
(in study-file order) before seed 1 of any, so a study stopped early is balanced across candidates. A
sampled study queues one empty slot per architecture, and the other seeds of a sampled architecture are
queued once its first seed has run.

Planning is resumable: the planner records itself (`planner`: host:pid) before it queues anything and
marks the plan done (`planned_architectures`) at the end; a run that finds a plan unfinished by a dead
planner (or by none, after a grace period) completes it, queuing only the (slot, seed) pairs that are
missing. A study plans at most MAX_ARCHITECTURES architectures (`n_trials`), each once per seed.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from hybridlab.errors import ConfigError
from search_space.space import Candidate
from studies.config import StudyConfig
from studies.processes import alive


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


MAX_ARCHITECTURES = 10_000  # queuing runs at about 50 trials/s; a larger study is a sampler's job in parts
PLANNED = "planned_architectures"
PLANNER = "planner"


def target_architectures(config: StudyConfig, n_trials: int | None, keys: dict[str, Candidate] | None) -> int:
    """How many architectures the study trains (each once per seed); a grid caps it at its size."""
    if n_trials is not None:
        target, where = n_trials, "--n-trials"
    elif config.n_trials is not None:
        target, where = config.n_trials, "n_trials"
    else:
        target, where = len(keys or {}), "search_space"
    target = min(target, len(keys)) if keys is not None else target
    if target > MAX_ARCHITECTURES:
        raise ConfigError(f"{target:,} architectures is above the maximum of {MAX_ARCHITECTURES:,} per study", where)
    return target


def plan(study: optuna.Study, config: StudyConfig, keys: dict[str, Candidate] | None, target: int) -> None:
    """Queue what is missing up to `target` architectures, seed-major: for each seed, the baselines first
    (so the report has its references early), then the grid cells or sampling slots."""
    trials = study.get_trials(deepcopy=False)
    have = {(t.user_attrs["slot"], t.user_attrs.get("seed")) for t in trials if "slot" in t.user_attrs}
    slots = {slot for slot, _ in have}
    have |= {(t.user_attrs["baseline"], t.user_attrs.get("seed")) for t in trials if "baseline" in t.user_attrs}
    names = list(keys) if keys is not None else []
    seeds = config.seeds if keys is not None else config.seeds[:1]
    for seed in seeds:
        if seed == config.seeds[0] or keys is not None:
            for baseline in config.baselines:
                if (baseline.label, seed) not in have:
                    study.enqueue_trial({"baseline": baseline.label, "seed": seed},
                                        user_attrs={"baseline": baseline.label, "seed": seed})
        for slot in range(target):
            if (slot, seed) in have or (keys is None and slot in slots):
                continue
            if keys is not None:
                study.enqueue_trial({"candidate": names[slot], "seed": seed}, user_attrs={"slot": slot, "seed": seed})
            else:
                study.enqueue_trial({}, user_attrs={"slot": slot, "seed": seed})
    if keys is None:  # a sampled study's baselines, for the seeds after the first
        for seed in config.seeds[1:]:
            for baseline in config.baselines:
                if (baseline.label, seed) not in have:
                    study.enqueue_trial({"baseline": baseline.label, "seed": seed},
                                        user_attrs={"baseline": baseline.label, "seed": seed})
    study.set_user_attr(PLANNED, max(target, len(slots)))


def claim_planning(study: optuna.Study) -> None:
    """Record this process as the study's planner, before it queues anything."""
    study.set_user_attr(PLANNER, f"{socket.gethostname()}:{os.getpid()}")


def await_plan(study: optuna.Study, echo: Callable[[str], None] = print, timeout_s: float = 120.0) -> None:
    """Return once the study's plan is done, or once this process should complete it: its planner died
    (same host), or it has been unfinished for `timeout_s` (another host, or no planner recorded)."""
    started = time.time()
    while PLANNED not in study.user_attrs:
        planner = str(study.user_attrs.get(PLANNER, ""))
        # no planner recorded: its creator died before it could say so; wait only a little
        deadline = started + (timeout_s if planner else min(timeout_s, 10.0))
        host, _, pid = planner.rpartition(":")
        dead = host == socket.gethostname() and pid.isdigit() and not alive(int(pid))
        if dead or time.time() > deadline:
            why = f"its planner {planner} is gone" if dead else f"it was not finished within {timeout_s:.0f} s"
            echo(f"study {study.study_name}: completing an unfinished trial plan ({why})")
            claim_planning(study)
            return
        time.sleep(0.5)



def enqueue_other_seeds(study: optuna.Study, config: StudyConfig, is_grid: bool, trial: FrozenTrial) -> None:
    """A sampled architecture is trained with every seed: queue the other seeds with the same params."""
    if is_grid or "slot" not in trial.user_attrs or "retry_of" in trial.user_attrs:
        return
    if trial.state == TrialState.FAIL or "seed_of" in trial.user_attrs:
        return
    for seed in config.seeds[1:]:
        study.enqueue_trial(trial.params, user_attrs={"seed": seed, "seed_of": trial.number})
