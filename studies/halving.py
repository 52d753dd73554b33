"""`strategy: halving`: successive halving over a planned grid, exact with any number of workers.

    rung 0:  every (architecture, seed) trains to rungs[0] (epochs, train_subset or img_size)
    rung k:  the top 1/eta architectures of rung k-1 (seed-averaged; studies.promotion) continue to rungs[k]
    last:    the survivors reach the full budget (fidelity_label "full")

Every trial of every rung is planned when the study is (studies.planning calls `plan_rungs`): a rung above 0
holds `rung_slot` placeholders, ceil(n/eta) architectures x seeds of them, plus each baseline once per seed (a
baseline is always promoted, so the report has its reference at every rung). The trial count is therefore fixed
up front, whatever the number of workers.

A worker (`work`) claims a trial of rung k only once no trial of a lower rung is waiting or running; claiming
is the storage's atomic WAITING -> RUNNING switch, so each slot runs once. A claimed slot is then resolved: the
decision for its rung is a pure function of the finished trials below it (so every worker reaches the same
one), and the first worker to resolve a slot of the rung also records it in the study (`halving_rung_<k>`),
which later slots read back: a failed trial retried after the decision does not change it. The slot takes its
parent's parameters (`promoted_from`, `promotion_reason`); a slot with no parent left (too many failed trials
below it) is pruned with that reason. A killed study resumes by rerunning the command: unresolved slots are still
WAITING, a dead worker's trial is retried from its checkpoint like any other.

How a promoted trial continues (studies.halving_objective): over epochs it resumes its parent's `last.ckpt`
under the full budget's learning-rate schedule, so rung k+1 is exactly the run rung k would have become; over
`train_subset` or `img_size` it warm-starts from its parent's weights and trains the full epochs again.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.config import StudyConfig
from studies.loop import INTERRUPTS, fail_stale, run_trial, study_id
from studies.planning import fixed_params
from studies.promotion import Row, promote, quota
from studies.storage import retry_trial
from studies.strategy import HalvingSettings
from studies.worker_loop import FailureGuard, recover_dead_local_trials

RUNG = "rung"
SLOT = "rung_slot"
PROMOTED_FROM = "promoted_from"
REASON = "promotion_reason"
DECISION = "halving_rung_{}"  # study attr: the promotion out of rung k, [[parent trial, reason], ...]
OPEN = (TrialState.WAITING, TrialState.RUNNING)


def settings_of(config: StudyConfig) -> HalvingSettings:
    strategy = config.strategy
    assert isinstance(strategy, HalvingSettings) and strategy.rungs, "a halving study with bound rungs"
    return strategy


def rung_of(trial: FrozenTrial | optuna.Trial) -> int:
    return int(trial.user_attrs.get(RUNG, 0))


def rung_sizes(architectures: int, settings: HalvingSettings) -> list[int]:
    """Architectures per rung: n, ceil(n/eta), ceil(ceil(n/eta)/eta), ..."""
    sizes = [architectures]
    for _ in (settings.rungs or ())[1:]:
        sizes.append(quota(sizes[-1], settings.eta))
    return sizes


def plan_rungs(study: optuna.Study, config: StudyConfig, target: int) -> int:
    """Queue the missing trials of rungs 1.. (rung 0 is the ordinary plan); returns how many it queued."""
    settings = settings_of(config)
    trials = study.get_trials(deepcopy=False)
    have = {(rung_of(t), t.user_attrs[SLOT]) if SLOT in t.user_attrs else
            (rung_of(t), t.user_attrs.get("baseline"), t.user_attrs.get("seed"))
            for t in trials if rung_of(t) > 0}
    queued = 0
    for k, size in enumerate(rung_sizes(target, settings)[1:], start=1):
        for seed in config.seeds:
            for baseline in config.baselines:
                if (k, baseline.label, seed) not in have:
                    study.enqueue_trial({"baseline": baseline.label, "seed": seed},
                                        user_attrs={RUNG: k, "baseline": baseline.label, "seed": seed})
                    queued += 1
        for j in range(size * len(config.seeds)):
            if (k, j) not in have:
                study.enqueue_trial({}, user_attrs={RUNG: k, SLOT: j})
                queued += 1
    return queued


# -- the decision -----------------------------------------------------------------------------------------------------

def _row(trial: FrozenTrial) -> str | None:
    """The architecture row a trial belongs to (its grid cell), None for baselines and unresolved slots."""
    if "baseline" in trial.user_attrs:
        return None
    return fixed_params(trial).get("candidate")


def decide(study: optuna.Study, config: StudyConfig, rung: int) -> list[tuple[int, str]]:
    """The promotion out of `rung`: (parent trial number, reason) per slot of the next rung, seed-major.

    The architectures are ranked on their seed-averaged objective values at this rung; one whose trials all
    failed counts towards n but is never promoted; each promoted architecture continues every seed that finished.
    """
    settings = settings_of(config)
    trials = [t for t in study.get_trials(deepcopy=False)
              if rung_of(t) == rung and _row(t) is not None and "duplicate_of" not in t.user_attrs]
    rows: dict[str, list[FrozenTrial]] = {}
    order: dict[str, int] = {}
    for t in trials:
        row = _row(t)
        assert row is not None
        order[row] = min(order.get(row, t.number), t.number)
        if t.state == TrialState.COMPLETE and t.values is not None:
            rows.setdefault(row, []).append(t)
        else:
            rows.setdefault(row, [])
    planned = len(rows)
    if rung > 0:  # the slots of this rung: ceil(previous / eta) architectures, whether or not they all resolved
        planned = max(planned, _slots(study, rung) // max(1, len(config.seeds)))
    wanted = quota(planned, settings.eta)
    candidates = [Row(row, _mean_values(done, len(config.objectives)), order[row]) for row, done in rows.items()]
    out: list[tuple[int, str]] = []
    chosen = promote(candidates, config.directions, settings.eta, k=wanted)
    for seed in config.seeds:
        for pick in chosen:
            parent = next((t for t in sorted(rows[str(pick.key)], key=lambda t: t.number)
                           if t.user_attrs.get("seed") == seed), None)
            if parent is not None:
                out.append((parent.number, f"rung {rung}: {pick.reason}"))
    return out


def _slots(study: optuna.Study, rung: int) -> int:
    return len({t.user_attrs[SLOT] for t in study.get_trials(deepcopy=False)
                if rung_of(t) == rung and SLOT in t.user_attrs})


def _mean_values(done: list[FrozenTrial], n: int) -> tuple[float | None, ...]:
    if not done:
        return (None,) * n
    out: list[float | None] = []
    for i in range(n):
        values = [float(t.values[i]) for t in done if t.values is not None and len(t.values) > i]
        out.append(sum(values) / len(values) if values and all(math.isfinite(x) for x in values) else None)
    return tuple(out)


def recorded_decision(study: optuna.Study, config: StudyConfig, rung: int) -> list[tuple[int, str]]:
    """The promotion out of `rung` as first recorded in the study; decided (and recorded) now if it is not yet."""
    key = DECISION.format(rung)
    stored = study._storage.get_study_user_attrs(study._study_id).get(key)
    if stored is not None:
        return [(int(number), str(reason)) for number, reason in stored]
    decision = decide(study, config, rung)
    study.set_user_attr(key, [[number, reason] for number, reason in decision])
    return decision


# -- claiming and resolving ---------------------------------------------------------------------------------------------

def claim_ready(study: optuna.Study) -> optuna.Trial | None:
    """Claim the first waiting trial whose lower rungs have all finished (rung, then trial number)."""
    trials = study.get_trials(deepcopy=False, states=OPEN)
    storage = study._storage
    sid = study_id(study)
    for waiting in sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: (rung_of(t), t.number)):
        if any(rung_of(t) < rung_of(waiting) for t in trials):
            return None  # everything after it sits at the same rung or higher
        trial_id = storage.get_trial_id_from_study_id_trial_number(sid, waiting.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def resolve(study: optuna.Study, config: StudyConfig, trial: optuna.Trial) -> optuna.Trial | str:
    """Give a claimed trial of a rung above 0 its parent: the trial to run, or why there is none."""
    attrs = trial.user_attrs
    rung = rung_of(trial)
    if rung == 0 or PROMOTED_FROM in attrs:
        return trial
    storage = study._storage
    if "baseline" in attrs:
        parent = _baseline_parent(study, attrs["baseline"], attrs.get("seed"), rung - 1)
        if parent is None:
            return f"baseline {attrs['baseline']} (seed {attrs.get('seed')}) did not finish rung {rung - 1}"
        storage.set_trial_user_attr(trial._trial_id, PROMOTED_FROM, parent.number)
        storage.set_trial_user_attr(trial._trial_id, REASON, f"rung {rung - 1}: baseline (always promoted)")
        return optuna.Trial(study, trial._trial_id)
    decision = recorded_decision(study, config, rung - 1)
    slot = int(attrs[SLOT])
    if slot >= len(decision):
        return f"nothing left to promote: rung {rung - 1} promoted {len(decision)} trials for this slot's {slot + 1}"
    number, reason = decision[slot]
    parent = study._storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id(study), number))
    storage.set_trial_system_attr(trial._trial_id, "fixed_params", dict(parent.params))
    for key, value in ((PROMOTED_FROM, number), (REASON, reason), ("seed", parent.user_attrs.get("seed"))):
        storage.set_trial_user_attr(trial._trial_id, key, value)
    return optuna.Trial(study, trial._trial_id)  # a fresh handle: suggestions now return the parent's values


def _baseline_parent(study: optuna.Study, label: str, seed: Any, rung: int) -> FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if rung_of(t) == rung and t.user_attrs.get("baseline") == label and t.user_attrs.get("seed") == seed:
            return t
    return None


# -- the loop -----------------------------------------------------------------------------------------------------------

def work(
    study: optuna.Study,
    config: StudyConfig,
    objective: Callable[[optuna.Trial], Any],
    *,
    on_trial: Callable[[FrozenTrial], None],
    error_log: Callable[[int], Path | None],
    echo: Callable[[str], None] = print,
    max_consecutive_failures: int = 5,
    poll_s: float = 2.0,
) -> FailureGuard:
    """Run the study's rungs until no trial is left (or the failure guard trips), like studies.worker_loop.work:
    a worker waits while a lower rung still runs elsewhere, and recovers dead workers' trials meanwhile."""
    failures = FailureGuard(max_consecutive_failures)
    while not failures.tripped:
        fail_stale(study)
        recover_dead_local_trials(study, echo)
        trial = claim_ready(study)
        if trial is None:
            if study.get_trials(deepcopy=False, states=OPEN):
                time.sleep(poll_s)
                continue
            break
        try:
            resolved = resolve(study, config, trial)
            if isinstance(resolved, str):
                trial.set_user_attr("fail_reason", resolved)
                study.tell(trial, state=TrialState.PRUNED)
                frozen = study._storage.get_trial(trial._trial_id)
            else:
                if PROMOTED_FROM in resolved.user_attrs and "retry_of" not in resolved.user_attrs:
                    echo(f"[trial {resolved.number}] rung {rung_of(resolved)}: continues trial "
                         f"{resolved.user_attrs[PROMOTED_FROM]} ({resolved.user_attrs[REASON]})")
                frozen = run_trial(study, resolved, objective, error_log)
        except INTERRUPTS as exc:
            frozen = study._storage.get_trial(trial._trial_id)
            if frozen.state == TrialState.RUNNING:  # stopped while resolving, before the objective ran
                trial.set_user_attr("fail_reason", f"interrupted ({getattr(exc, 'name', type(exc).__name__)})")
                study.tell(trial, state=TrialState.FAIL)
            retry_trial(study, study._storage.get_trial(trial._trial_id), max_retry=None)  # not the trial's fault
            raise
        failures(frozen)
        on_trial(frozen)
        gc.collect()
    return failures
