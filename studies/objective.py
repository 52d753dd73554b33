"""One trial: pick the architecture and seed, reuse a finished twin, measure, gate, train, return values.

    candidate (grid cell or sampler suggestion) -> ModelSpec -> de-duplicate by (arch_hash, seed, fidelity)
    -> measure (cached per arch_hash, profile, environment) -> constraints (prune without training)
    -> train with Lightning (resuming the checkpoint of an interrupted attempt) -> user_attrs
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hybridlab.fidelity import FULL, FULL_RANK
from search_space.space import Candidate
from studies.baselines import Baseline
from studies.config import StudyConfig
from studies.devlock import DeviceLock
from studies.loop import TrialFailure
from studies.planning import planned_twin, seed_choices

# The measured figures a trial keeps as user attributes (and so as trials.csv columns).
KEPT_FIGURES = (
    "params", "macs", "flops", "throughput_img_s", "latency_ms", "latency_iqr_ms",
    "train_throughput_img_s", "peak_mem_mb",
    # the measurement's spread and whether its windows were taken under contention
    "throughput_lo", "throughput_hi", "throughput_interval", "throughput_cpu_img_s", "noisy", "noisy_reason",
    "threads",
)


def plain(obj: Any) -> Any:
    """A dataclass or an object with `to_dict` as plain data (for the manifest and the fidelity hash)."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return obj


def profile_dict(config: StudyConfig, device: str | None) -> dict[str, Any]:
    """The study's measurement profile, with this process's device when one was given."""
    profile = {k: v for k, v in config.measure.items() if k != "phase"}  # when the phase runs is no profile setting
    if device:
        profile["device"] = device
    return profile


LONG_WAIT_S = 5.0  # a longer wait for the device lock is recorded in the trial's attributes


def device_lock(device: str, exclusive: bool, study: str = "", echo: Callable[[str], None] | None = print) -> DeviceLock:
    """Measurements take the device exclusively, training shares it (see studies.devlock)."""
    return DeviceLock(device, exclusive=exclusive, study=study, echo=echo)


def note_wait(trial: optuna.Trial, lock: DeviceLock, what: str) -> None:
    """Keep a long wait for the device in the trial's record: it explains a slow trial."""
    if lock.waited_s > LONG_WAIT_S:
        trial.set_user_attr(f"{what}_lock_wait_s", round(lock.waited_s, 1))


class TrialObjective:
    """`objective(trial)` for the worker loop; holds the data module so trials share one copy."""

    def __init__(
        self,
        config: StudyConfig,
        folder: Path,
        keys: dict[str, Candidate] | None,
        device: str | None = None,
        progress: bool = True,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.folder = folder
        self.keys = keys
        self.device = device
        self.progress = progress
        self.echo = echo
        self._datamodule = None

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...] | float:
        twin = planned_twin(trial.study, trial)
        if twin is not None:  # two workers queued this added seed at once: train it once
            trial.set_user_attr("duplicate_of", twin)
            raise optuna.TrialPruned(f"duplicate of trial {twin} (the same added seed, queued twice)")
        arch, seed = self._pick(trial)
        fidelity = self.trial_fidelity(trial)
        attrs = {
            "pattern": arch.pattern,
            "arch_hash": arch.arch_hash,
            "family": arch.family,
            "label": trial.user_attrs.get("layout_label", arch.label),  # one-shot retraining names its layouts
            "seed": seed,
            "fidelity": fidelity,
            **self.fidelity_marks(trial),
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "is_baseline": arch.is_baseline,
            "model": arch.settings(),
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        prior = self._finished_twin(trial, attrs["arch_hash"], seed, fidelity)
        if prior is not None:
            return self._reuse(trial, prior)
        figures = self._measure(trial, arch)
        for key, value in figures.items():
            trial.set_user_attr(key, value)
        violations = self._gate(trial, figures)
        if violations:
            reason = "infeasible: " + "; ".join(violations)
            trial.set_user_attr("fail_reason", reason)
            raise optuna.TrialPruned(reason)
        self.echo(self._start_line(trial, arch, seed, fidelity))
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
            seed = int(trial.suggest_categorical("seed", seed_choices(self.config)))
            return next(b for b in self.config.baselines if b.label == label), seed
        if self.keys is not None:
            key = trial.suggest_categorical("candidate", list(self.keys))
            seed = int(trial.suggest_categorical("seed", seed_choices(self.config)))
            return self.keys[key], seed
        cand = self.config.space.suggest(trial)
        return cand, int(trial.user_attrs.get("seed", self.config.seeds[0]))

    def fidelity(self, data_changes: dict[str, Any] | None = None, **extra: Any) -> str:
        """What besides the architecture and seed decides a result: data, recipe, image size (and, for a trial
        trained to part of the budget, `data_changes` and `extra` that say how)."""
        data = {k: v for k, v in self.config.data.items() if not k.startswith("_")}
        data.update(data_changes or {})
        parts = {"data": data, "train": plain(self.config.recipe), **extra}
        if self.config.pretrained is not None:  # what the trials start from (a random-init fallback differs)
            from studies.finetune import weights_tag

            parts["weights"] = weights_tag(self.config.pretrained, self.echo)
        blob = json.dumps(parts, sort_keys=True, default=str)
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

    def _measure(self, trial: optuna.Trial, arch: Candidate | Baseline) -> dict[str, Any]:
        """Figures from the cache, or measured while holding the device exclusively."""
        from hybridlab.measure import MeasureCache, MeasureProfile, measure, measure_key

        profile = MeasureProfile.from_dict(profile_dict(self.config, self.device))
        cache = MeasureCache(self.folder / "measure-cache")
        target, settings = arch.measure_target()
        key = measure_key(target, profile, **settings)
        record = cache.get(key)
        if record is None:
            with device_lock(profile.device, True, self.config.name, self.echo) as lock:
                record = cache.get_or_measure(key, lambda: measure(target, profile, **settings))
            note_wait(trial, lock, "measure")
        data = record.to_dict() if hasattr(record, "to_dict") else dict(record)
        figures = {k: data[k] for k in KEPT_FIGURES if data.get(k) is not None}
        figures["measure_env"] = data.get("env", {})
        if figures["measure_env"].get("slow_paths"):  # a scan or SSD fallback is never silent
            figures["slow_paths"] = "; ".join(figures["measure_env"]["slow_paths"])
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
            self.echo(f"[trial {trial.number}] resuming from {resume}")
        datamodule = self.trial_datamodule(trial)
        self._check_fits(arch, datamodule)
        model = arch.build()
        if self.config.pretrained is not None:
            from studies.finetune import apply_pretrained

            for key, value in apply_pretrained(self.config.pretrained, model, f"[trial {trial.number}]", self.echo).items():
                trial.set_user_attr(key, value)
        model = self.warm_start(trial, model)  # halving over data size: the promoted parent's weights
        from studies.progress import ProgressLines

        left, mean_s = self._study_pace(trial)
        progress = ProgressLines(f"trial {trial.number}", echo=self.echo, every_s=self.config.progress_every_s,
                                 trials_left=left, mean_trial_s=mean_s)
        try:
            with device_lock(self.train_device(), False, self.config.name, self.echo) as lock:
                note_wait(trial, lock, "train")
                result = train_and_evaluate(
                    model,
                    datamodule,
                    self.config.recipe,
                    root_dir=folder,
                    seed=seed,
                    resume_from=resume,
                    progress_bar=self.progress and sys.stderr.isatty(),
                    echo=self.echo,
                    # ddp_spawn pickles callbacks into its processes; the trial and its storage cannot travel, so
                    # multi-device trials get their curve at the end (learning_curve) but no live epoch reports
                    callbacks=[*([progress] if self.progress and self.config.devices == 1 else []),
                               *self.trial_callbacks(trial)],
                    report=(lambda epoch, point: self._report(trial, epoch, point)) if self.config.devices == 1 else None,
                    **self._trainer_devices(),
                )
        except NonFiniteLossError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise TrialFailure(str(exc)) from None
        except MemoryError as exc:
            trial.set_user_attr("fail_reason", f"out of memory: {exc}")
            raise TrialFailure(f"out of memory: {exc}") from None
        metrics = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}
        metrics = {k: (str(v) if isinstance(v, Path) else v) for k, v in metrics.items()}
        if result.get("learning_curve"):
            metrics["learning_curve"] = [dict(point) for point in result["learning_curve"]]
        return metrics

    # -- what a strategy that trains part of the budget changes (studies.halving_objective) ----------------------------
    def fidelity_marks(self, trial: optuna.Trial) -> dict[str, Any]:
        """The attributes that say how faithful this trial's figures are (hybridlab.fidelity)."""
        return {"fidelity_label": FULL, "fidelity_rank": FULL_RANK}

    def trial_fidelity(self, trial: optuna.Trial) -> str:
        return self.fidelity()

    def trial_datamodule(self, trial: optuna.Trial) -> Any:
        return self.datamodule()

    def trial_callbacks(self, trial: optuna.Trial) -> list[Any]:
        return []

    def warm_start(self, trial: optuna.Trial, model: Any) -> Any:
        return model

    def _report(self, trial: optuna.Trial, epoch: int, point: dict[str, Any]) -> None:
        """Each validated epoch: the current epoch for `hybridlab status`, and Optuna's intermediate value.

        Optuna keeps intermediate values for single-objective studies only; multi-objective studies get the
        whole curve as the `learning_curve` attribute when the trial ends (so do single-objective ones).
        """
        trial.set_user_attr("current_epoch", int(epoch))
        top1 = point.get("top1")
        if len(self.config.objectives) == 1 and top1 is not None:
            trial.report(float(top1), step=int(epoch))

    def _study_pace(self, trial: optuna.Trial) -> tuple[int | None, float | None]:
        """Trials still queued after this one, and the mean training time of the finished ones (for the ETA)."""
        try:
            trials = trial.study.get_trials(deepcopy=False)
        except Exception:  # noqa: BLE001  (an ETA is a nicety: never fail a trial over it)
            return None, None
        left = sum(1 for t in trials if t.state == TrialState.WAITING)
        times = [float(t.user_attrs["train_time_s"]) for t in trials
                 if t.state == TrialState.COMPLETE and isinstance(t.user_attrs.get("train_time_s"), (int, float))
                 and "reused_from" not in t.user_attrs]
        return left, (sum(times) / len(times) if times else None)

    def _start_line(self, trial: optuna.Trial, arch: Candidate | Baseline, seed: int, fidelity: str) -> str:
        from studies.progress import trial_start_line

        try:
            total = len(trial.study.get_trials(deepcopy=False))
        except Exception:  # noqa: BLE001
            total = None
        label = trial.user_attrs.get("fidelity_label") or fidelity  # "full", a rung, ...: the hash says nothing to people
        return f"[trial {trial.number}] " + trial_start_line(trial.number + 1, total, arch.pattern, seed, label)

    def train_device(self) -> str:
        return self.device or str(self.config.measure.get("device", "auto"))

    def _trainer_devices(self) -> dict[str, Any]:
        """Lightning's accelerator/devices for this worker: its own GPU, or `devices` of them for DDP."""
        device = self.train_device()
        if device.startswith("cuda"):
            index = device.split(":", 1)[1] if ":" in device else None
            if self.config.devices == 1 and index is not None:
                return {"accelerator": "gpu", "devices": [int(index)]}
            return {"accelerator": "gpu", "devices": self.config.devices}
        if device == "cpu":
            return {"accelerator": "cpu", "devices": self.config.devices}
        return {"accelerator": "auto", "devices": self.config.devices}

    def _resume_checkpoint(self, trial: optuna.Trial) -> Path | None:
        """The newest checkpoint of the attempts this trial retries (last, else best), most recent first.

        Training checks it before use and falls back past an unusable one (studies.checkpoints).
        """
        for number in reversed(trial.user_attrs.get("retry_history", [])):
            for name in ("last.ckpt", "best.ckpt"):
                ckpt = self.folder / "trials" / str(number) / name
                if ckpt.is_file():
                    return ckpt
        return None

    def _check_fits(self, arch: Candidate | Baseline, datamodule: Any) -> None:
        """A candidate whose weights or padded activations cannot fit is pruned with the estimate, unbuilt."""
        spec = getattr(arch, "spec", None)
        img_size = getattr(datamodule, "img_size", None) or self.config.data.get("img_size")
        batch = getattr(datamodule, "batch_size", None) or self.config.data.get("batch_size")
        if spec is None or not img_size or not batch:
            return
        from blocks.preflight import check_fits
        from hybridlab.errors import ConfigError

        try:
            check_fits(spec, int(img_size), int(batch), training=True, device=self.train_device())
        except ConfigError as exc:
            raise optuna.TrialPruned(exc.reason) from None

    def datamodule(self) -> Any:
        """The study's data module, built once and shared by its trials."""
        if self._datamodule is None:
            from studies.data import make_datamodule

            cfg = {k: v for k, v in self.config.data.items() if not k.startswith("_")}
            self._datamodule = make_datamodule(**cfg)
        return self._datamodule
