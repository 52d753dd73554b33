"""The trial loop behind every worker: claim a planned trial, run it with a heartbeat, tell the result.

Why not `study.optimize`: its `ask()` creates a new trial whenever the queue is empty, so several workers
finishing a study together can overshoot the budget. Here every trial is planned up front (queued as
WAITING by the process that created the study), a worker only ever claims a queued trial (an atomic
WAITING -> RUNNING switch in the storage), and the study has exactly the planned number of trials.
Everything below uses Optuna's public storage and study API.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hybridlab.errors import HybridlabError, StudyHalt


class TrialFailure(HybridlabError):
    """A trial that failed for a reason worth recording (NaN loss, OOM, bad candidate); the study goes on."""


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived: stop after saving what can be saved (exit status 128 + signal number).

    A BaseException that is not KeyboardInterrupt, so no library takes it for a user's Ctrl+C and
    swallows it (Lightning turns KeyboardInterrupt into exit status 1).
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")


INTERRUPTS = (KeyboardInterrupt, SystemExit, StopRequested)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT raise StopRequested (once: a second signal acts as usual)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        raise StopRequested(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def study_id(study: optuna.Study) -> int:
    return study._storage.get_study_id_from_name(study.study_name)


def claim_next(study: optuna.Study) -> optuna.Trial | None:
    """Switch the first WAITING trial to RUNNING (atomic in every Optuna storage) and return it."""
    storage = study._storage
    sid = study_id(study)
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(sid, waiting.number)
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                continue  # another worker claimed it first
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        return optuna.Trial(study, trial_id)
    return None


class Heartbeat:
    """Records the trial's heartbeat every interval while it runs (RDB storages only), so a dead
    worker's trial is found stale and retried by the others."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        storage = study._storage
        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.interval = interval
        self.storage = storage
        self.trial_id = trial._trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self.storage.record_heartbeat(self.trial_id)
            self._thread = threading.Thread(target=self._beat, daemon=True, name="hybridlab-heartbeat")
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a transient database error must not kill the trial
                pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def fail_stale(study: optuna.Study) -> None:
    """Fail (and, through the storage's callback, retry) trials whose heartbeat stopped."""
    storage = study._storage
    if getattr(storage, "get_heartbeat_interval", lambda: None)():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Callable[[optuna.Trial], Any],
    error_log: Callable[[int], Path | None] = lambda number: None,
) -> FrozenTrial:
    """Run `objective` on a claimed trial and tell the result.

    PRUNED for optuna.TrialPruned; FAIL with a one-line `fail_reason` for any other exception (the full
    traceback goes to `error_log(number)`), so one bad candidate never stops a study. KeyboardInterrupt,
    SystemExit and StopRequested mark the trial failed as `interrupted` and propagate.
    """
    state: TrialState | None = None
    values: Any = None
    with Heartbeat(study, trial):
        try:
            values = objective(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned as exc:
            state = TrialState.PRUNED
            if str(exc) and "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", str(exc))
        except INTERRUPTS as exc:
            trial.set_user_attr("fail_reason", f"interrupted ({getattr(exc, 'name', type(exc).__name__)})")
            study.tell(trial, state=TrialState.FAIL)
            raise
        except StudyHalt as exc:  # the machine, not the candidate: every later trial would fail the same way
            trial.set_user_attr("fail_reason", str(exc)[:500])
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:  # recorded, not raised: the study goes on with the next trial
            state = TrialState.FAIL
            if "fail_reason" not in trial.user_attrs:
                reason = str(exc) if isinstance(exc, HybridlabError) else f"{type(exc).__name__}: {exc}"
                trial.set_user_attr("fail_reason", " ".join(reason.split())[:500])
            path = error_log(trial.number)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(traceback.format_exception(exc)))
    if state == TrialState.COMPLETE:
        study.tell(trial, values)
    else:
        study.tell(trial, state=state)
    return study._storage.get_trial(trial._trial_id)


def wait_for_others(study: optuna.Study, poll_s: float, tick: Callable[[], None]) -> bool:
    """While other workers' trials run, wait: they may die and leave a retry to pick up.

    `tick` runs before every look (it fails dead workers' trials and queues their retries). Returns True
    when a WAITING trial appeared, False when nothing is running or waiting any more.
    """
    while True:
        tick()
        states = {t.state for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))}
        if TrialState.WAITING in states:
            return True
        if not states:
            return False
        time.sleep(poll_s)
