"""Run a study: open (or create) its storage, plan its trials, work through them, keep its files.

Trial flow (one trial = one architecture x one seed): see studies.objective. The plan: studies.planning.
The loop and the recovery of dead workers' trials: studies.worker_loop.

Rerunning the same command resumes: finished trials stay, the trial of a dead process is failed and
retried from its last checkpoint, and the total number of trials is capped across all workers.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from hybridlab import __version__
from hybridlab.atomic import atomic_write
from hybridlab.errors import ConfigError, HybridlabError
from hybridlab.urls import mask_password
from studies import one_shot, planning, preflight, restore
from studies.config import StudyConfig
from studies.devlock import lock_timeout
from studies.loop import INTERRUPTS
from studies.objective import TrialObjective, plain, profile_dict
from studies.processes import alive
from studies.record import SETTINGS_ATTR, check_settings, settings_record
from studies.samplers import make_sampler
from studies.storage import close_storage, default_storage_url, open_storage, retry_failed, storage_error
from studies.worker_loop import count, progress_line, work

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
DEFAULT_MAX_RETRIES = 2  # a failed trial is tried again on the next runs, at most this many times


@dataclass
class RunOptions:
    results_dir: Path = Path("results")
    storage: str | None = None
    n_trials: int | None = None
    device: str | None = None  # e.g. "cuda:1"; default: the measurement profile's device
    progress: bool = True
    max_consecutive_failures: int = 5
    retry_failed: bool = False  # retry every failed trial, however often it failed before
    max_retries: int | None = None  # default: the study file's `max_retries` (2)
    echo: Callable[[str], None] = print


@dataclass
class StudyRun:
    """What one `run_study` call did: the study, and the trials this process finished, by state."""

    study: optuna.Study
    complete: int = 0
    pruned: int = 0
    failed: int = 0

    def summary(self) -> str:
        return f"{self.complete} complete, {self.pruned} pruned, {self.failed} failed"


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
STALE_TEMP_S = 900  # an atomic write takes far less; an older temporary file is left by a killed process


def study_folder(results_dir: Path | str, name: str) -> Path:
    """`<results_dir>/<name>`; the name must be a plain folder name (no separators, newlines or `..`)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{name!r} is not a safe folder name (letters, digits, '_', '-', '.'; up to 128)", "name")
    return Path(results_dir) / name


def remove_stale_temp_files(folder: Path, now: float | None = None) -> list[Path]:
    """Remove the temporary files a killed process left in a study folder (atomic writes, write probes)."""
    now = time.time() if now is None else now
    removed = []
    for path in [*folder.rglob(".*.tmp"), *folder.glob(".write-test-*")]:
        try:
            pid = path.name.rsplit("-", 1)[-1]
            if path.name.startswith(".write-test-"):
                stale = pid.isdigit() and not alive(int(pid))
            else:
                stale = now - path.stat().st_mtime > STALE_TEMP_S
            if stale and path.is_file():
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed



class StudyRunner:
    """Holds one study's storage, folder and objective; `run()` works until the trial budget is spent."""

    def __init__(self, config: StudyConfig, options: RunOptions) -> None:
        self.config = config
        self.options = options
        self.folder = study_folder(options.results_dir, config.name)
        self.storage_url = options.storage or config.storage or default_storage_url(options.results_dir, config.name)
        self.shown_url = mask_password(self.storage_url)
        self.keys = planning.study_grid_keys(config)
        objective = TrialObjective
        if config.strategy is not None and config.strategy.name == "halving":
            from studies.halving_objective import HalvingObjective as objective
        self.objective = objective(config, self.folder, self.keys, options.device, options.progress, options.echo)
        self.study: optuna.Study | None = None
        self.finished_here: list[FrozenTrial] = []

    # -- set-up ---------------------------------------------------------------------------------
    def open(self) -> optuna.Study:
        with warnings.catch_warnings():  # heartbeats and metric names are marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return self._open()

    def _open(self) -> optuna.Study:
        device = self.options.device or str(self.config.measure.get("device", "auto"))
        preflight.check_device(device, "--device" if self.options.device else "measure.device")
        preflight.check_data(self.objective.datamodule(), str(self.config.data.get("name")))
        lock_timeout()  # a bad HYBRIDLAB_LOCK_TIMEOUT_S would fail every trial
        _ensure_folder(self.folder)
        remove_stale_temp_files(self.folder)
        restore.guard_before_open(self.folder, self.config.name, self.storage_url)
        storage = open_storage(self.storage_url)
        created = True
        sampler = make_sampler(self.config.sampler)
        try:
            restore.guard_before_create(self.folder, self.config.name, self.storage_url, storage)
            try:
                study = optuna.create_study(
                    study_name=self.config.name, storage=storage, directions=self.config.directions,
                    sampler=sampler, load_if_exists=False,
                )
            except optuna.exceptions.DuplicatedStudyError:
                created = False
                study = optuna.load_study(study_name=self.config.name, storage=storage, sampler=sampler)
        except HybridlabError:
            raise
        except Exception as exc:
            raise storage_error(exc, self.storage_url) from None
        existing = [d.name.lower() for d in study.directions]
        if existing != self.config.directions:
            raise HybridlabError(
                f"study {self.config.name!r} already exists in {self.shown_url} with directions {existing}, "
                f"but the study file asks for {self.config.directions}; use another name (--set name=...)"
            )
        self.study = study
        if created:
            planning.claim_planning(study)
            study.set_metric_names(self.config.metric_names)
            study.set_user_attr(SETTINGS_ATTR, settings_record(self.config))
        else:
            check_settings(study, self.config, self.shown_url)
            planning.check_seed_choices(study, self.config)
            planning.await_plan(study, self.options.echo)
        max_retries = self.options.max_retries
        if max_retries is None:
            max_retries = getattr(self.config, "max_retries", DEFAULT_MAX_RETRIES)
        for number in retry_failed(study, max_retries, force=self.options.retry_failed):
            self.options.echo(f"[trial {number}] failed before: queued for another attempt")
        # a larger target (--n-trials or the study file) extends the plan
        if one_shot.is_one_shot(self.config):
            one_shot.prepare(study)  # its phases queue the stand-alone trials (run)
        else:
            planning.plan(study, self.config, self.keys, self.target_architectures())
        self._write_files()
        return study

    def target_architectures(self) -> int:
        """How many architectures the study trains (each once per seed)."""
        return planning.target_architectures(self.config, self.options.n_trials, self.keys)

    def _write_files(self) -> None:
        atomic_write(self.folder / "study.yaml", stored_study_file(self.config))
        manifest = {
            "study": self.config.name,
            "description": self.config.description,
            "objectives": [{"name": o.name, "direction": o.direction} for o in self.config.objectives],
            "storage": self.shown_url,
            "ablation": self.config.ablation,
            "measure": profile_dict(self.config, self.options.device),
            "data": {k: v for k, v in self.config.data.items() if not k.startswith("_")},
            "train": plain(self.config.recipe),
            "seeds": self.config.seeds,
            "sampler": self.config.sampler,
            "strategy": self.config.strategy.to_dict() if self.config.strategy is not None else None,
            "env": _environment(),
            "hybridlab": __version__,
        }
        atomic_write(self.folder / "manifest.json", json.dumps(manifest, indent=2, default=str))

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> optuna.Study:
        study = self.study or self.open()
        finished = count(study, FINISHED)
        queued = count(study, (TrialState.WAITING,))
        self.options.echo(
            f"study {self.config.name}: {finished} trials finished, {queued} to run; storage {self.shown_url}"
        )
        try:
            if one_shot.is_one_shot(self.config):
                one_shot.OneShotSearch(self.config, self.folder, self.objective, self.options.echo).run(study)
            if self.config.strategy is not None and self.config.strategy.name == "halving":
                from studies import halving

                failures = halving.work(study, self.config, self.objective, on_trial=self._after_trial,
                                        error_log=self._error_log, echo=self.options.echo,
                                        max_consecutive_failures=self.options.max_consecutive_failures)
            else:
                failures = work(
                    study, self.objective, on_trial=self._after_trial, error_log=self._error_log,
                    echo=self.options.echo, max_consecutive_failures=self.options.max_consecutive_failures,
                    on_idle=lambda: planning.plan_more_seeds(study, self.config, self.options.echo),
                )
        except (HybridlabError, *INTERRUPTS):
            self._write_table()
            raise
        except Exception as exc:
            self._write_table()
            if _is_storage_exception(exc):
                raise storage_error(exc, self.storage_url) from None
            raise
        self._write_table()
        if failures.tripped:
            raise HybridlabError(f"stopped after {failures.limit} failed trials in a row; last: {failures.last_reason}")
        return study

    def _error_log(self, number: int) -> Path:
        return self.folder / "trials" / str(number) / "error.log"

    def _after_trial(self, trial: FrozenTrial) -> None:
        assert self.study is not None
        self.finished_here.append(trial)
        planning.enqueue_other_seeds(self.study, self.config, self.keys is not None, trial)
        self._write_table()
        self.options.echo(progress_line(self.study, trial))

    def _write_table(self) -> None:
        if self.study is None:
            return
        from studies.measure_phase import write_table

        try:  # with the last side-by-side measurement's figures, when the study has one
            write_table(self.study, self.folder)
        except Exception as exc:  # the storage keeps everything; the table is a convenience copy
            self.options.echo(f"warning: could not write {self.folder / 'trials.csv'}: {exc}")


def stored_study_file(config: StudyConfig) -> str:
    """The study file as run, for `results/<study>/study.yaml`: its storage URL's password masked."""
    raw = dict(config.raw)
    if isinstance(raw.get("storage"), str):
        raw["storage"] = mask_password(raw["storage"])
    return yaml.safe_dump(raw, sort_keys=False)


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise HybridlabError(f"results folder {folder} is not writable: {exc.strerror or exc}") from None


def _environment() -> dict[str, Any]:
    try:
        from hybridlab.measure import environment

        return environment()
    except Exception:  # the manifest must not fail because of an optional probe
        import platform

        import torch

        return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def _is_storage_exception(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("sqlalchemy", "psycopg2", "sqlite3", "optuna.storages"))


def run_study(config: StudyConfig, options: RunOptions | None = None) -> StudyRun:
    """Open (or resume) the study and run it to its trial budget (the `run` command writes the report)."""
    options = options or RunOptions()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from the runner
    runner = StudyRunner(config, options)
    started = time.time()
    try:
        study = runner.run()
    finally:
        if runner.study is not None:
            close_storage(runner.study._storage)
    options.echo(f"study {config.name}: done in {time.time() - started:.0f} s; results in {runner.folder}")
    done = [t.state for t in runner.finished_here]
    return StudyRun(study, done.count(TrialState.COMPLETE), done.count(TrialState.PRUNED), done.count(TrialState.FAIL))
