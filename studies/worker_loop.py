"""The worker's loop: recover dead trials, claim the next planned one, run it, report it, repeat.

A trial whose worker died is failed and queued again (its retry resumes from the dead attempt's
checkpoint). A run of failed trials in a row stops the loop: a systematic error should not burn the plan.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hybridlab.fidelity import rank_of
from studies.loop import INTERRUPTS, claim_next, fail_stale, run_trial, wait_for_others
from studies.processes import alive
from studies.storage import retry_trial


class FailureGuard:
    """Trips after `limit` failed trials in a row."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.tripped = False
        self.last_reason = ""

    def __call__(self, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            self.count += 1
            self.last_reason = trial.user_attrs.get("fail_reason", "see the log above")
            self.tripped = self.count >= self.limit
        else:
            self.count = 0


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    on_trial: Callable[[FrozenTrial], None],
    error_log: Callable[[int], Path | None],
    echo: Callable[[str], None] = print,
    max_consecutive_failures: int = 5,
    poll_s: float = 2.0,
    on_idle: Callable[[], int] | None = None,
) -> FailureGuard:
    """Run planned trials until none is left (or the failure guard trips); returns the guard.

    `on_idle()` runs when nothing is left to run or running; it may queue more trials (`seeds: auto`
    adds seeds once a round has finished) and returns how many, and the loop goes on while it does.

    On an interrupt (KeyboardInterrupt, SystemExit, StopRequested) the running trial is failed as `interrupted` and queued again, so the
    next run resumes it from its checkpoint; the exception propagates.
    """
    failures = FailureGuard(max_consecutive_failures)

    def recover() -> None:
        fail_stale(study)
        recover_dead_local_trials(study, echo)

    while not failures.tripped:
        recover()
        trial = claim_next(study)
        if trial is None:
            if wait_for_others(study, poll_s=poll_s, tick=recover):
                continue
            if on_idle is not None and on_idle():
                continue
            break
        try:
            frozen = run_trial(study, trial, objective, error_log)
        except INTERRUPTS:
            retry_trial(study, study._storage.get_trial(trial._trial_id), max_retry=None)  # not the trial's fault
            raise
        failures(frozen)
        on_trial(frozen)
        gc.collect()
    return failures


def recover_dead_local_trials(study: optuna.Study, echo: Callable[[str], None] = print) -> list[int]:
    """Fail RUNNING trials whose worker process on this host is gone, and queue their retries.

    The heartbeat catches dead workers anywhere, but only after its grace period; a worker on the same
    host can tell at once from the process id. The retry carries `retry_history` like Optuna's own
    stale-trial callback, so it resumes from the dead attempt's checkpoint.
    """
    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or alive(int(pid)):
            continue
        try:  # the reason first: a finished trial takes no more attributes
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"worker {worker} died")
            if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
            continue
        retry_trial(study, study._storage.get_trial(trial._trial_id))
        recovered.append(trial.number)
        echo(f"[trial {trial.number}] its worker {worker} is gone: marked failed and queued for a retry")
    return recovered


def count(study: optuna.Study, states: Sequence[TrialState]) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def best_trials(study: optuna.Study, rank: int | None = None) -> list[FrozenTrial]:
    """The study's front among its finished trials of one fidelity rank (all when `rank` is None).

    Supernet scores and halving rungs are not comparable with full trainings, so a trial is judged "on
    front" only against trials of its own fidelity.
    """
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if rank is not None:
        trials = [t for t in trials if _rank(t) == rank]
    signs = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
    scored = [(t, [s * v for s, v in zip(signs, t.values, strict=True)]) for t in trials]

    def dominated(a: list[float]) -> bool:
        return any(all(x >= y for x, y in zip(b, a, strict=True)) and b != a for _, b in scored)

    return [t for t, v in scored if not dominated(v)]


def _rank(trial: FrozenTrial) -> int:
    return rank_of(trial.user_attrs.get("fidelity_label"), trial.user_attrs.get("fidelity_rank"))


def progress_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """One line per finished trial: its headline figures, or why it was pruned or failed."""
    attrs = trial.user_attrs
    pattern = attrs.get("pattern", "?")
    if trial.state == TrialState.COMPLETE:
        front = {t.number for t in best_trials(study, _rank(trial))}
        top1 = attrs.get("top1")
        thr = attrs.get("throughput_img_s")
        parts = [
            f"top1 {top1:.2f}" if isinstance(top1, (int, float)) else "top1 ?",
            f"{thr:,.0f} img/s" if isinstance(thr, (int, float)) else "? img/s",
            "on front" if trial.number in front else "dominated",
        ]
        if "reused_from" in attrs:
            parts.append(f"reused trial {attrs['reused_from']}")
        status = " | ".join(parts)
    elif trial.state == TrialState.PRUNED:
        status = f"pruned: {attrs.get('fail_reason', 'pruned')}"
    else:
        status = f"FAILED: {attrs.get('fail_reason', 'see log')}"
    seed = attrs.get("seed", "?")
    return f"[trial {trial.number}] {pattern} (seed {seed}) | {status}"
