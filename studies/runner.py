"""Run a study: every trial builds, measures, gates on constraints, trains, validates and records.

Trial flow (one trial = one architecture x one seed):

    candidate (grid cell or sampler suggestion) -> ModelSpec -> de-duplicate by (arch_hash, seed, fidelity)
    -> measure (cached per arch_hash, profile, environment) -> constraints (prune without training)
    -> train with Lightning (resuming the checkpoint of an interrupted attempt) -> user_attrs -> trials.csv

Rerunning the same command resumes: finished trials stay, the trial of a dead process is failed and
retried from its last checkpoint, and the total number of trials is capped across all workers.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hybridlab import __version__
from hybridlab.errors import HybridlabError
from hybridlab.urls import mask_password
from search_space.space import Candidate
from studies.baselines import Baseline
from studies.config import StudyConfig
from studies.devlock import DeviceLock
from studies.loop import TrialFailure, claim_next, fail_stale, run_trial, wait_for_others
from studies.storage import close_storage, default_storage_url, open_storage, retry_trial, storage_error

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class RunOptions:
    results_dir: Path = Path("results")
    storage: str | None = None
    n_trials: int | None = None
    device: str | None = None  # e.g. "cuda:1"; default: the measurement profile's device
    progress: bool = True
    report: bool = True
    max_consecutive_failures: int = 5
    echo: Callable[[str], None] = print


def study_folder(results_dir: Path | str, name: str) -> Path:
    return Path(results_dir) / name


class StudyRunner:
    """Holds one study's storage, folder and objective; `run()` works until the trial budget is spent."""

    def __init__(self, config: StudyConfig, options: RunOptions) -> None:
        self.config = config
        self.options = options
        self.folder = study_folder(options.results_dir, config.name)
        self.storage_url = options.storage or config.storage or default_storage_url(options.results_dir, config.name)
        self.shown_url = mask_password(self.storage_url)
        self.candidates = config.space.candidates() if config.sampler["name"] == "grid" else None
        self._grid_keys = _grid_keys(self.candidates) if self.candidates is not None else {}
        self._datamodule = None
        self.study: optuna.Study | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def open(self) -> optuna.Study:
        with warnings.catch_warnings():  # heartbeats and metric names are marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return self._open()

    def _open(self) -> optuna.Study:
        _ensure_folder(self.folder)
        storage = open_storage(self.storage_url)
        created = True
        try:
            try:
                study = optuna.create_study(
                    study_name=self.config.name, storage=storage, directions=self.config.directions,
                    sampler=self._sampler(), load_if_exists=False,
                )
            except optuna.exceptions.DuplicatedStudyError:
                created = False
                study = optuna.load_study(study_name=self.config.name, storage=storage, sampler=self._sampler())
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
            study.set_metric_names(self.config.metric_names)
            self._plan(study)
        else:
            self._wait_for_plan(study)
            self._plan(study)  # a larger target (--n-trials or the study file) extends the plan
        self._write_files()
        return study

    def _sampler(self) -> optuna.samplers.BaseSampler:
        """Grid cells are all queued up front, so a grid study only needs a sampler that is never asked."""
        cfg = self.config.sampler
        seed = cfg.get("seed", 0)
        name = cfg["name"]
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.get("n_startup_trials", 5))
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=cfg.get("population_size", 8))
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.get("n_startup_trials", 5))
        return optuna.samplers.RandomSampler(seed=seed)

    # -- the plan: every trial is queued before any runs ---------------------------------------
    def target_architectures(self) -> int:
        """How many architectures the study trains (each once per seed)."""
        if self.options.n_trials is not None:
            target = self.options.n_trials
        elif self.config.n_trials is not None:
            target = self.config.n_trials
        else:
            target = len(self._grid_keys)
        return min(target, len(self._grid_keys)) if self.candidates is not None else target

    def _plan(self, study: optuna.Study) -> None:
        """Queue the trials up to the target: grid cells in study-file order (x seeds), or sampling slots.

        Only the process that created the study (or one asked for more trials) plans, so the number of
        trials is exact however many workers run.
        """
        trials = study.get_trials(deepcopy=False)
        slots = {t.user_attrs["slot"] for t in trials if "slot" in t.user_attrs}
        have = {t.user_attrs["baseline"] for t in trials if "baseline" in t.user_attrs}
        for baseline in self.config.baselines:  # first, so the report has its references early
            if baseline.label not in have:
                for seed in self.config.seeds:
                    study.enqueue_trial({"baseline": baseline.label, "seed": seed},
                                        user_attrs={"baseline": baseline.label, "seed": seed})
        target = self.target_architectures()
        for slot in range(target):
            if slot in slots:
                continue
            if self.candidates is not None:
                key = list(self._grid_keys)[slot]
                for seed in self.config.seeds:
                    study.enqueue_trial({"candidate": key, "seed": seed}, user_attrs={"slot": slot, "seed": seed})
            else:
                study.enqueue_trial({}, user_attrs={"slot": slot, "seed": self.config.seeds[0]})
        study.set_user_attr("planned_architectures", max(target, len(slots)))

    def _wait_for_plan(self, study: optuna.Study, timeout_s: float = 120.0) -> None:
        """A worker that joins a study just created elsewhere waits until its plan is queued."""
        deadline = time.time() + timeout_s
        while "planned_architectures" not in study.user_attrs:
            if time.time() > deadline:
                raise HybridlabError(
                    f"study {self.config.name!r} in {self.shown_url} has no trial plan; was it created by "
                    "another tool? Use a new study name"
                )
            time.sleep(0.5)

    def _write_files(self) -> None:
        _atomic_write(self.folder / "study.yaml", self.config.to_yaml())
        manifest = {
            "study": self.config.name,
            "description": self.config.description,
            "objectives": [{"name": o.name, "direction": o.direction} for o in self.config.objectives],
            "storage": self.shown_url,
            "ablation": self.config.ablation,
            "measure": self._profile_dict(),
            "data": {k: v for k, v in self.config.data.items() if not k.startswith("_")},
            "train": _plain(self.config.recipe),
            "seeds": self.config.seeds,
            "sampler": self.config.sampler,
            "env": _environment(),
            "hybridlab": __version__,
        }
        _atomic_write(self.folder / "manifest.json", json.dumps(manifest, indent=2, default=str))

    def _profile_dict(self) -> dict[str, Any]:
        profile = dict(self.config.measure)
        if self.options.device:
            profile["device"] = self.options.device
        return profile

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> optuna.Study:
        study = self.study or self.open()
        finished = _count(study, FINISHED)
        queued = _count(study, (TrialState.WAITING,))
        self.options.echo(
            f"study {self.config.name}: {finished} trials finished, {queued} to run; storage {self.shown_url}"
        )
        failures = _FailureGuard(self.options.max_consecutive_failures)
        try:
            while not failures.tripped:
                self._recover(study)
                trial = claim_next(study)
                if trial is None:
                    if wait_for_others(study, poll_s=2.0, tick=lambda: self._recover(study)):
                        continue
                    break
                try:
                    frozen = run_trial(study, trial, self.objective, self._error_log)
                except (KeyboardInterrupt, SystemExit):
                    retry_trial(study, study._storage.get_trial(trial._trial_id))
                    self._write_table()
                    raise
                self._enqueue_other_seeds(study, frozen)
                failures(frozen)
                self._after_trial(study, frozen)
                gc.collect()
        except HybridlabError:
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

    def _recover(self, study: optuna.Study) -> None:
        fail_stale(study)
        recover_dead_local_trials(study, self.options.echo)

    def _error_log(self, number: int) -> Path:
        return self.folder / "trials" / str(number) / "error.log"

    def _enqueue_other_seeds(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A sampled architecture is trained with every seed: queue the other seeds with the same params."""
        if self.candidates is not None or "slot" not in trial.user_attrs or "retry_of" in trial.user_attrs:
            return
        if trial.state == TrialState.FAIL or "seed_of" in trial.user_attrs:
            return
        for seed in self.config.seeds[1:]:
            study.enqueue_trial(trial.params, user_attrs={"seed": seed, "seed_of": trial.number})

    # -- one trial ------------------------------------------------------------------------------
    def objective(self, trial: optuna.Trial) -> tuple[float, ...] | float:
        arch, seed = self._pick(trial)
        fidelity = self._fidelity()
        attrs = {
            "pattern": arch.pattern,
            "arch_hash": arch.arch_hash,
            "family": arch.family,
            "label": arch.label,
            "seed": seed,
            "fidelity": fidelity,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "is_baseline": arch.is_baseline,
            "model": arch.settings(),
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        prior = self._finished_twin(trial, attrs["arch_hash"], seed, fidelity)
        if prior is not None:
            return self._reuse(trial, prior)
        figures = self._measure(arch)
        for key, value in figures.items():
            trial.set_user_attr(key, value)
        violations = self._gate(trial, figures)
        if violations:
            reason = "infeasible: " + "; ".join(violations)
            trial.set_user_attr("fail_reason", reason)
            raise optuna.TrialPruned(reason)
        metrics = self._train(trial, arch, seed)
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        values = []
        for objective in self.config.objectives:
            value = metrics.get(objective.name, figures.get(objective.name))
            if value is None:
                raise TrialFailure(f"objective {objective.name!r} was not measured")
            values.append(float(value))
        return values[0] if len(values) == 1 else tuple(values)

    def _pick(self, trial: optuna.Trial) -> tuple[Candidate | Baseline, int]:
        """The architecture and seed of a trial: a baseline, a grid cell, or the sampler's suggestion."""
        if "baseline" in trial.user_attrs:
            label = trial.suggest_categorical("baseline", [b.label for b in self.config.baselines])
            seed = int(trial.suggest_categorical("seed", list(self.config.seeds)))
            return next(b for b in self.config.baselines if b.label == label), seed
        if self.candidates is not None:
            key = trial.suggest_categorical("candidate", list(self._grid_keys))
            seed = int(trial.suggest_categorical("seed", list(self.config.seeds)))
            return self._grid_keys[key], seed
        cand = self.config.space.suggest(trial)
        return cand, int(trial.user_attrs.get("seed", self.config.seeds[0]))

    def _fidelity(self) -> str:
        """What besides the architecture and seed decides a result: data, recipe, image size."""
        data = {k: v for k, v in self.config.data.items() if not k.startswith("_")}
        blob = json.dumps({"data": data, "train": _plain(self.config.recipe)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _finished_twin(self, trial: optuna.Trial, arch_hash: str, seed: int, fidelity: str) -> FrozenTrial | None:
        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            attrs = other.user_attrs
            if (
                attrs.get("arch_hash") == arch_hash
                and attrs.get("seed") == seed
                and attrs.get("fidelity") == fidelity
                and other.number != trial.number
            ):
                return other
        return None

    def _reuse(self, trial: optuna.Trial, prior: FrozenTrial) -> tuple[float, ...] | float:
        for key, value in prior.user_attrs.items():
            if key not in trial.user_attrs or key in ("fail_reason",):
                trial.set_user_attr(key, value)
        source = prior.user_attrs.get("reused_from", prior.number)
        trial.set_user_attr("reused_from", source)
        values = prior.values
        return values[0] if len(values) == 1 else tuple(values)

    def _measure(self, arch: Candidate | Baseline) -> dict[str, Any]:
        """Figures from the cache, or measured while holding the device exclusively."""
        from hybridlab.measure import MeasureCache, MeasureProfile, measure, measure_key

        profile = MeasureProfile.from_dict(self._profile_dict())
        cache = MeasureCache(self.folder / "measure-cache")
        target, settings = arch.measure_target()
        key = measure_key(target, profile, **settings)
        record = cache.get(key)
        if record is None:
            with device_lock(profile.device, exclusive=True):
                record = cache.get_or_measure(key, lambda: measure(target, profile, **settings))
        data = record.to_dict() if hasattr(record, "to_dict") else dict(record)
        keep = (
            "params", "macs", "flops", "throughput_img_s", "latency_ms", "latency_iqr_ms",
            "train_throughput_img_s", "peak_mem_mb",
        )
        figures = {k: data[k] for k in keep if data.get(k) is not None}
        figures["measure_env"] = data.get("env", {})
        return figures

    def _gate(self, trial: optuna.Trial, figures: dict[str, Any]) -> list[str]:
        constraints = self.config.constraints
        if not constraints.active:
            return []
        for name, value in constraints.values(figures).items():
            trial.set_constraint(name, value)
        return constraints.violated(figures)

    def _train(self, trial: optuna.Trial, arch: Candidate | Baseline, seed: int) -> dict[str, Any]:
        from studies.training import NonFiniteLossError, train_and_evaluate

        folder = self.folder / "trials" / str(trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        resume = self._resume_checkpoint(trial)
        if resume is not None:
            trial.set_user_attr("resumed_from", str(resume))
            self.options.echo(f"[trial {trial.number}] resuming from {resume}")
        model = arch.build()
        datamodule = self._get_datamodule()
        try:
            with device_lock(self._train_device(), exclusive=False):
                result = train_and_evaluate(
                    model,
                    datamodule,
                    self.config.recipe,
                    root_dir=folder,
                    seed=seed,
                    resume_from=resume,
                    progress_bar=self.options.progress and sys.stderr.isatty(),
                    **self._trainer_devices(),
                )
        except NonFiniteLossError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise TrialFailure(str(exc)) from None
        except MemoryError as exc:
            trial.set_user_attr("fail_reason", f"out of memory: {exc}")
            raise TrialFailure(f"out of memory: {exc}") from None
        metrics = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in metrics.items()}

    def _train_device(self) -> str:
        return self.options.device or str(self.config.measure.get("device", "auto"))

    def _trainer_devices(self) -> dict[str, Any]:
        """Lightning's accelerator/devices for this worker: its own GPU, or `devices` of them for DDP."""
        device = self._train_device()
        if device.startswith("cuda"):
            index = device.split(":", 1)[1] if ":" in device else None
            if self.config.devices == 1 and index is not None:
                return {"accelerator": "gpu", "devices": [int(index)]}
            return {"accelerator": "gpu", "devices": self.config.devices}
        if device == "cpu":
            return {"accelerator": "cpu", "devices": self.config.devices}
        return {"accelerator": "auto", "devices": self.config.devices}

    def _resume_checkpoint(self, trial: optuna.Trial) -> Path | None:
        """The last checkpoint of the attempts this trial retries, most recent first."""
        for number in reversed(trial.user_attrs.get("retry_history", [])):
            ckpt = self.folder / "trials" / str(number) / "last.ckpt"
            if ckpt.is_file():
                return ckpt
        return None

    def _get_datamodule(self):
        if self._datamodule is None:
            from studies.data import make_datamodule

            cfg = {k: v for k, v in self.config.data.items() if not k.startswith("_")}
            self._datamodule = make_datamodule(**cfg)
        return self._datamodule

    # -- after each trial -----------------------------------------------------------------------
    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._write_table()
        self.options.echo(self._progress_line(study, trial))

    def _write_table(self) -> None:
        if self.study is None:
            return
        from studies.table import write_trials

        try:
            write_trials(self.study, self.folder)
        except Exception as exc:  # the storage keeps everything; the table is a convenience copy
            self.options.echo(f"warning: could not write {self.folder / 'trials.csv'}: {exc}")

    def _progress_line(self, study: optuna.Study, trial: FrozenTrial) -> str:
        attrs = trial.user_attrs
        pattern = attrs.get("pattern", "?")
        if trial.state == TrialState.COMPLETE:
            front = {t.number for t in _best_trials(study)}
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


# -- helpers shared with the worker --------------------------------------------------------------

class _FailureGuard:
    """Trips after `limit` failed trials in a row: a systematic error should not burn the whole plan."""

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
        if name != host or not pid.isdigit() or _alive(int(pid)):
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


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _count(study: optuna.Study, states: Sequence[TrialState]) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def _best_trials(study: optuna.Study) -> list[FrozenTrial]:
    try:
        if len(study.directions) == 1:
            return [study.best_trial]
        return study.best_trials
    except ValueError:
        return []


def _grid_keys(candidates: list[Candidate]) -> dict[str, Candidate]:
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


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise HybridlabError(f"results folder {folder} is not writable: {exc.strerror or exc}") from None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _plain(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return obj


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


def device_lock(device: str, exclusive: bool) -> DeviceLock:
    """Measurements take the device exclusively, training shares it (see studies.devlock)."""
    return DeviceLock(device, exclusive=exclusive)


def run_study(config: StudyConfig, options: RunOptions | None = None) -> optuna.Study:
    """Open (or resume) the study and run it to its trial budget; optionally write its report."""
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
    if options.report:
        from reports import build_report

        out = build_report(str(runner.folder), results_dir=options.results_dir)
        options.echo(f"report: {out}")
    return study
