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

from hybridlab.errors import ConfigError, HybridlabError
from search_space.space import Candidate
from studies.config import StudyConfig
from studies.processes import alive
from studies.storage import resumed_by_another


def study_grid_keys(config: StudyConfig) -> dict[str, Candidate] | None:
    """The `candidate` parameter's choices of a grid study (None when the study samples, or is one-shot,
    which plans its own trials)."""
    from studies.one_shot import is_one_shot

    if config.sampler["name"] != "grid" or is_one_shot(config):
        return None
    return grid_keys(config.space.candidates())


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
    if target > MAX_ARCHITECTURES:  # checked before a grid caps it: the limit is the same for every study
        raise ConfigError(f"{target:,} architectures is above the maximum of {MAX_ARCHITECTURES:,} per study", where)
    return min(target, len(keys)) if keys is not None else target


def plan(study: optuna.Study, config: StudyConfig, keys: dict[str, Candidate] | None, target: int) -> None:
    """Queue what is missing up to `target` architectures, seed-major: for each seed, the baselines first
    (so the report has its references early), then the grid cells or sampling slots."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("rung")]  # halving: rung 0 here
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
    if config.strategy is not None and config.strategy.name == "halving":  # its higher rungs, before the plan is done
        from studies.halving import plan_rungs

        plan_rungs(study, config, target)
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



SEED_INHERITS = ("layout_label", "one_shot")  # what the other seeds of a one-shot retraining keep: its name, why


def enqueue_other_seeds(study: optuna.Study, config: StudyConfig, is_grid: bool, trial: FrozenTrial) -> None:
    """A sampled architecture is trained with every seed: queue the other seeds with the same params."""
    if is_grid or "slot" not in trial.user_attrs or "retry_of" in trial.user_attrs:
        return
    if trial.state == TrialState.FAIL or "seed_of" in trial.user_attrs:
        return
    kept = {k: trial.user_attrs[k] for k in SEED_INHERITS if k in trial.user_attrs}
    for seed in config.seeds[1:]:
        study.enqueue_trial(trial.params, user_attrs={**kept, "seed": seed, "seed_of": trial.number})


def seed_choices(config: StudyConfig) -> list[int]:
    """Every seed a trial of the study may get (Optuna needs one fixed list per study for `seed`)."""
    if config.auto_seeds is not None:
        return list(range(config.auto_seeds.max))
    return list(config.seeds)


def check_seed_choices(study: optuna.Study, config: StudyConfig) -> None:
    """Refuse with one line a rerun whose seed choices differ from the study's (`seeds: auto` with another
    `max`): Optuna would fail every later trial on the changed `seed` distribution."""
    wanted = seed_choices(config)
    for trial in study.get_trials(deepcopy=False):
        dist = trial.distributions.get("seed")
        if dist is not None and list(getattr(dist, "choices", wanted)) != wanted:
            raise HybridlabError(
                f"study {study.study_name!r} was run with seeds {_seed_list(list(dist.choices))}, the study file "
                f"now allows {_seed_list(wanted)}: rerun it with its own seed settings, or give the new ones a new study name "
                "(--set name=...)")
        if dist is not None:
            return


def _seed_list(seeds: list) -> str:
    return str(seeds) if len(seeds) <= 8 else f"[{seeds[0]}, ..., {seeds[-1]}] ({len(seeds)} seeds)"


AUTO_ROW = "auto_row"  # the row (grid cell, baseline or sampled slot) an added seed belongs to
AUTO_STATUS = "auto_seeds_status"


def row_key(trial: FrozenTrial, by_number: dict[int, FrozenTrial]) -> str | None:
    """The study row a trial belongs to: its grid cell, its baseline, or its sampled slot."""
    if AUTO_ROW in trial.user_attrs:
        return str(trial.user_attrs[AUTO_ROW])
    params = fixed_params(trial)
    if "baseline" in params:
        return f"{params['baseline']} (baseline)"
    if "candidate" in params:
        return str(params["candidate"])
    first = by_number.get(trial.user_attrs.get("seed_of", -1), trial)
    slot = first.user_attrs.get("slot")
    return None if slot is None else f"slot {slot}"


def fixed_params(trial: FrozenTrial) -> dict:
    """The trial's parameters, or the ones it was queued with when it failed before choosing them."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))


def plan_more_seeds(study: optuna.Study, config: StudyConfig, echo: Callable[[str], None] = print) -> int:
    """`seeds: auto`: once every planned trial has finished, queue one more seed for the rows still
    unresolved (studies.auto_seeds); returns how many trials it queued.

    Called by a worker that found nothing left to run, so a killed and resumed study decides here too.
    Two workers idle at once may both queue a round: the objective prunes the later copy of a
    (row, seed) as a duplicate, and the budget counts (row, seed) pairs, not trials.
    """
    auto = config.auto_seeds
    if auto is None:
        return 0
    from studies.auto_seeds import next_seeds

    trials = study.get_trials(deepcopy=False)
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
        return 0  # the round is not finished
    by_number = {t.number: t for t in trials}
    metric = next((o.name for o in config.objectives if not _per_architecture(o.name)), "top1")
    rest = [o.name for o in config.objectives if o.name != metric]
    planned: dict[str, set[int]] = {}
    values: dict[str, dict[int, float]] = {}
    others: dict[str, dict[str, list[float]]] = {}
    firsts: dict[str, FrozenTrial] = {}
    default = None
    for t in trials:
        key = row_key(t, by_number)
        if key is None or "duplicate_of" in t.user_attrs or "seed" not in t.user_attrs:
            continue
        if t.user_attrs.get("placeholder"):  # lost with a storage (studies.restore): to be planned again
            continue
        if t.state == TrialState.FAIL and resumed_by_another(t):  # its resume carries the seed, or replans it
            continue
        planned.setdefault(key, set()).add(int(t.user_attrs["seed"]))
        firsts.setdefault(key, t)
        if config.ablation and t.user_attrs.get("label") == config.ablation.get("default_label") \
                and not t.user_attrs.get("is_baseline"):
            default = default or key
        value = t.user_attrs.get(metric)
        if t.state == TrialState.COMPLETE and isinstance(value, (int, float)):
            values.setdefault(key, {})[int(t.user_attrs["seed"])] = float(value)
            for name in rest:
                if isinstance(t.user_attrs.get(name), (int, float)):
                    others.setdefault(key, {}).setdefault(name, []).append(float(t.user_attrs[name]))
    means = {k: {n: sum(v) / len(v) for n, v in o.items()} for k, o in others.items()}
    decision = next_seeds(
        {k: sorted(s) for k, s in planned.items()}, {k: list(v.values()) for k, v in values.items()}, default,
        config.objectives, max_seeds=auto.max, budget=auto.budget, confidence=auto.confidence, others=means,
        metric=metric,
    )
    round_no = max((len(s) for s in planned.values()), default=0)
    for key, (seed, reason) in decision.added.items():
        first = firsts[key]
        params = fixed_params(first)
        attrs = {"seed": seed, "seed_reason": reason, AUTO_ROW: key}
        if "baseline" in params:
            params = {"baseline": params["baseline"], "seed": seed}
            attrs["baseline"] = params["baseline"]
        elif "candidate" in params:
            params = {"candidate": params["candidate"], "seed": seed}
            attrs["slot"] = first.user_attrs.get("slot")
        else:
            attrs["seed_of"] = first.user_attrs.get("seed_of", first.number)
        study.enqueue_trial(params, user_attrs=attrs)
        echo(f"seeds: auto: seed {seed} for {key}: {reason}")
    status = decision.stopped or f"round {round_no}: {len(decision.added)} seeds added"
    if study.user_attrs.get(AUTO_STATUS) != status:
        study.set_user_attr(AUTO_STATUS, status)
        if decision.stopped:
            echo(f"seeds: auto: no more seeds ({decision.stopped})")
    return len(decision.added)


def _per_architecture(name: str) -> bool:
    from hybridlab.metrics import METRICS

    metric = METRICS.get(name)
    return bool(metric and metric.per_architecture)


def planned_twin(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> int | None:
    """An added seed queued twice (two workers deciding the same round at once): the lower-numbered
    copy that is not failed, which this trial duplicates; None when this trial is the one to run."""
    attrs = trial.user_attrs
    if AUTO_ROW not in attrs:
        return None
    for other in study.get_trials(deepcopy=False):
        if (other.number < trial.number and other.user_attrs.get(AUTO_ROW) == attrs[AUTO_ROW]
                and other.user_attrs.get("seed") == attrs.get("seed") and other.state != TrialState.FAIL
                and "duplicate_of" not in other.user_attrs):
            return other.number
    return None
