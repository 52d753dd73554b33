"""Training one candidate: a Lightning module around any timm-style classifier, a recipe, and a quiet trainer.

    recipe = TrainRecipe.from_dict({"epochs": 5, "lr": 2e-3, "opt": "adamw"})
    result = train_and_evaluate(model, make_datamodule("global_marks"), recipe, "results/s/trials/3", seed=0)
    result["top1"], result["last_ckpt"]

The learning rate follows a linear warm-up then a cosine decay to `min_lr`, stepped every optimizer step (torch
LambdaLR, interval "step"), so short fidelity runs still see the whole schedule. Checkpoints (`last.ckpt`,
`best.ckpt`) go straight into `root_dir`, so a killed trial resumes with `resume_from="last"`.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, list_optimizers
from timm.utils import ModelEmaV3

from hybridlab.errors import ConfigError, HybridlabError
from studies.checkpoints import (
    BEST_NAME,
    LAST_CKPT,
    AtomicCheckpointIO,
    disk_full_error,
    is_disk_full,
    remove_stale_temporaries,
    resume_candidates,
    usable_checkpoint,
)

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")


class NonFiniteLossError(HybridlabError):
    """The training loss became NaN or inf: the trial stops (lower lr, clip gradients or use fp32)."""


# -- recipe ---------------------------------------------------------------------------------------------------------------

_INT = {"epochs": 1, "batch_size": 1, "accumulate_grad_batches": 1, "val_every_n_epochs": 1}
_FLOAT = {  # name: (minimum, maximum, minimum is exclusive)
    "lr": (0.0, None, True), "weight_decay": (0.0, None, False), "momentum": (0.0, 1.0, False),
    "warmup_epochs": (0.0, None, False), "min_lr": (0.0, None, False), "label_smoothing": (0.0, 0.999, False),
    "mixup": (0.0, None, False), "cutmix": (0.0, None, False), "mixup_prob": (0.0, 1.0, False),
    "mixup_switch_prob": (0.0, 1.0, False), "clip_grad": (0.0, None, True), "ema_decay": (0.0, 0.999999, True),
}
_OPTIONAL = {"batch_size", "clip_grad", "limit_train_batches", "limit_val_batches"}


@dataclass(frozen=True)
class TrainRecipe:
    """How one candidate is trained. `batch_size` None keeps the data module's; `warmup_epochs` may be fractional
    (it is clipped to the run length); `mixup`/`cutmix` are the Beta alphas (0 = off); `clip_grad` is a max
    gradient norm; `ema` validates with EMA weights; `limit_*_batches` are fidelity knobs (int = batches,
    float = fraction, as in Lightning)."""

    epochs: int = 10
    batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    opt: str = "adamw"
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    clip_grad: float | None = None
    ema: bool = False
    ema_decay: float = 0.9998
    ema_warmup: bool = True
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    val_every_n_epochs: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _check_setting(f.name, getattr(self, f.name), "train"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "train") -> TrainRecipe:
        """Build from a study file's section; an unknown key or bad value raises ConfigError naming `where.key`."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"must be a mapping of training settings, got {type(data).__name__}", where)
        known = [f.name for f in fields(cls)]
        values = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"unknown training setting {key!r} (known: {', '.join(known)})", f"{where}.{key}")
            values[key] = _check_setting(key, value, where)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def uses_mixup(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mixup_prob > 0


def _check_setting(name: str, value: Any, where: str) -> Any:
    key = f"{where}.{name}"
    if value is None and name in _OPTIONAL:
        return None
    if name in _INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer, got {value!r}", key)
        if value < _INT[name]:
            raise ConfigError(f"must be >= {_INT[name]}, got {value}", key)
        return value
    if name in _FLOAT:
        lo, hi, exclusive = _FLOAT[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"must be a finite number, got {value!r}", key)
        if value < lo or (exclusive and value == lo):
            raise ConfigError(f"must be {'>' if exclusive else '>='} {lo}, got {value}", key)
        if hi is not None and value > hi:
            raise ConfigError(f"must be <= {hi}, got {value}", key)
        return float(value)
    if name in ("ema", "ema_warmup"):
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {value!r}", key)
        return value
    if name == "opt":
        if not isinstance(value, str) or value.lower() not in list_optimizers():
            raise ConfigError(f"unknown optimizer {value!r} (e.g. adamw, lamb, sgd; any timm optimizer name)", key)
        return value.lower()
    if name == "precision":
        value = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if value not in PRECISIONS:
            raise ConfigError(f"must be one of {', '.join(PRECISIONS)}, got {value!r}", key)
        return value
    if name in ("limit_train_batches", "limit_val_batches"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a batch count or a fraction, got {value!r}", key)
        if isinstance(value, int) and value < 0 or isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ConfigError(f"must be a count >= 0 or a fraction in (0, 1], got {value}", key)
        return value
    raise ConfigError(f"unknown training setting {name!r}", key)  # pragma: no cover - fields and checks agree


# -- optimizer and schedule ------------------------------------------------------------------------------------------------


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and biases / norms / other 1-D params / the model's `no_weight_decay()` names
    (exact or wildcard) / names containing a `no_weight_decay_keywords()` entry, without weight decay."""
    skip = set(getattr(model, "no_weight_decay", lambda: ())() or ())
    keywords = tuple(getattr(model, "no_weight_decay_keywords", lambda: ())() or ())
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if (param.ndim <= 1 or name.endswith(".bias") or name in skip
                or any(fnmatch.fnmatch(name, pattern) for pattern in skip) or any(k in name for k in keywords)):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    return groups


class WarmupCosine:
    """LR factor per optimizer step: linear warm-up to 1 over `warmup` steps, then cosine down to `floor`."""

    def __init__(self, total: int, warmup: int, floor: float) -> None:
        self.total, self.warmup, self.floor = max(1, total), min(max(0, warmup), max(1, total)), floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# -- Lightning module -----------------------------------------------------------------------------------------------------


class ClassificationModule(L.LightningModule):
    """Trains `model` (any nn.Module mapping (B, C, H, W) to logits) with `recipe`.

    Logs `train/loss` (epoch mean), `train/lr`, and per validation epoch `val/loss`, `val/top1`, `val/top5`
    (percent; top-5 becomes top-k for fewer than 5 classes). With `recipe.ema` the EMA weights are validated.
    """

    def __init__(self, model: nn.Module, recipe: TrainRecipe | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.recipe = recipe or TrainRecipe()
        self.num_classes = num_classes or getattr(model, "num_classes", None)
        r = self.recipe
        self.mixup: Mixup | None = None
        if r.uses_mixup:
            if not self.num_classes:
                raise ConfigError("mixup/cutmix need the number of classes (pass num_classes)", "train.mixup")
            self.mixup = Mixup(mixup_alpha=r.mixup, cutmix_alpha=r.cutmix, prob=r.mixup_prob,
                               switch_prob=r.mixup_switch_prob, label_smoothing=r.label_smoothing,
                               num_classes=self.num_classes)
            self.train_criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            self.train_criterion = nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)
        self.model_ema: ModelEmaV3 | None = None
        if r.ema:
            self.model_ema = ModelEmaV3(model, decay=r.ema_decay, use_warmup=r.ema_warmup)
            self.model_ema.requires_grad_(False)
        self._ema_step = -1
        self.save_hyperparameters({"recipe": r.to_dict(), "num_classes": self.num_classes})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated: the EMA copy when on, else the trained model."""
        return self.model_ema.module if self.model_ema is not None else self.model

    def on_train_epoch_start(self) -> None:
        # A model handed over in eval mode (e.g. after a speed measurement) must still train; the EMA copy never does.
        self.model.train()
        if self.model_ema is not None:
            self.model_ema.module.eval()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        x, y = batch[0], batch[1]
        if self.mixup is not None:
            if len(x) % 2:  # timm's Mixup needs an even batch
                x, y = x[:-1], y[:-1]
            if len(x) == 0:
                return None  # Lightning skips the optimizer step
            x, target = self.mixup(x, y)
        else:
            target = y
        loss = self.train_criterion(self.model(x), target)
        if not torch.isfinite(loss.detach()).item():
            raise NonFiniteLossError(
                f"training loss is {loss.detach().float().item()} at epoch {self.current_epoch} step "
                f"{self.global_step} (batch {batch_idx}); lower the lr, set clip_grad or use precision 32-true")
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(x),
                 sync_dist=self.trainer.world_size > 1)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[-1]["lr"], on_step=True, on_epoch=False,
                 batch_size=1)
        if self.model_ema is not None and self.global_step != self._ema_step:  # once per optimizer step
            self._ema_step = self.global_step
            self.model_ema.update(self.model, step=self.global_step)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self.eval_model(x).float()
        loss = F.cross_entropy(logits, y)
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices.eq(y[:, None])
        top1 = hits[:, 0].float().mean() * 100.0
        top5 = hits.any(dim=1).float().mean() * 100.0
        sync = self.trainer.world_size > 1
        self.log("val/loss", loss, on_epoch=True, batch_size=len(y), sync_dist=sync)
        self.log("val/top1", top1, on_epoch=True, batch_size=len(y), sync_dist=sync, prog_bar=True)
        self.log("val/top5", top5, on_epoch=True, batch_size=len(y), sync_dist=sync)

    def configure_optimizers(self) -> Any:
        r = self.recipe
        optimizer = create_optimizer_v2(param_groups(self.model, r.weight_decay), opt=r.opt, lr=r.lr,
                                        weight_decay=r.weight_decay, momentum=r.momentum)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        schedule = WarmupCosine(total, int(round(r.warmup_epochs * per_epoch)), r.min_lr / r.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


# -- trainer -----------------------------------------------------------------------------------------------------------------

_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                  "lightning.fabric.utilities.seed", "lightning.fabric.utilities.rank_zero")
_NOISY_WARNINGS = (".*does not have many workers.*", ".*log_every_n_steps.*", ".*exists and is not empty.*",
                   ".*Checkpoint directory.*", ".*LeafSpec.*", ".*is_leaf.*", ".*sync_dist.*",
                   ".*Total length of .* across ranks is zero.*", ".*The number of training batches.*",
                   ".*module\\(s\\) in eval mode.*")


def _resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if accelerator == "cuda" else accelerator


def make_trainer(recipe: TrainRecipe, root_dir: str | Path, callbacks: Sequence[Callback] = (),
                 logger: Logger | Iterable[Logger] | bool = False, progress_bar: bool = False, devices: int | str = 1,
                 accelerator: str = "auto", deterministic: bool | Literal["warn"] = True,
                 max_time: float | str | timedelta | None = None, checkpoint: bool = True,
                 strategy: str = "auto") -> L.Trainer:
    """A quiet trainer for `recipe`: no sanity check, no model summary; checkpoints in root_dir: `best.ckpt` (best
    val/top1, `trainer.checkpoint_callback`) and `last.ckpt` (rewritten every epoch, for resuming).

    `deterministic=True` is exact on CPU; on GPU it becomes "warn" (deterministic kernels where torch has them,
    a warning otherwise), since custom kernels such as mamba-ssm's are not deterministic anyway and several timm
    layers have no deterministic CUDA backward. `max_time` in seconds (or Lightning's "DD:HH:MM:SS").
    """
    root = Path(root_dir)
    root.mkdir(parents=True, exist_ok=True)
    accel = _resolve_accelerator(accelerator)
    if deterministic is True and accel == "gpu":
        deterministic = "warn"
    if deterministic and accel == "gpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    all_callbacks = list(callbacks)
    if checkpoint:
        # Lightning 2.6 writes `save_last` only when a top-k file was written in the same step (the metric
        # improved) or at train end, so a killed trial could resume from a stale epoch. Hence a second,
        # monitor-free checkpoint named "last" that is rewritten after every epoch.
        all_callbacks.append(ModelCheckpoint(dirpath=root, filename=BEST_NAME, monitor="val/top1", mode="max",
                                             save_top_k=1, auto_insert_metric_name=False,
                                             enable_version_counter=False))
        all_callbacks.append(ModelCheckpoint(dirpath=root, filename=LAST_CKPT[:-5], monitor=None, save_top_k=1,
                                             auto_insert_metric_name=False, enable_version_counter=False))
    if isinstance(max_time, (int, float)) and not isinstance(max_time, bool):
        max_time = timedelta(seconds=float(max_time))
    optional = {}
    if recipe.limit_train_batches is not None:
        optional["limit_train_batches"] = recipe.limit_train_batches
    if recipe.limit_val_batches is not None:
        optional["limit_val_batches"] = recipe.limit_val_batches
    return L.Trainer(
        accelerator=accel, devices=devices, strategy=strategy, precision=recipe.precision,
        max_epochs=recipe.epochs, max_time=max_time, deterministic=deterministic,
        benchmark=False if deterministic else None,
        gradient_clip_val=recipe.clip_grad, gradient_clip_algorithm="norm" if recipe.clip_grad else None,
        accumulate_grad_batches=recipe.accumulate_grad_batches, check_val_every_n_epoch=recipe.val_every_n_epochs,
        callbacks=all_callbacks, plugins=[AtomicCheckpointIO()] if checkpoint else None,
        logger=logger, enable_checkpointing=checkpoint, enable_progress_bar=progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=10, default_root_dir=root,
        **optional)


def _progress(trainer: L.Trainer, last: Path, strategy: str) -> dict[str, int]:
    """Completed epochs and steps. After ddp_spawn this process's trainer did not run the loop, so the
    counters come from the last checkpoint rank 0 wrote."""
    if strategy == "ddp_spawn" and last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        return {"epochs": int(ckpt["epoch"]) + 1, "global_step": int(ckpt["global_step"])}
    return {"epochs": int(trainer.current_epoch), "global_step": int(trainer.global_step)}


def _device_count(devices: int | str | Sequence[int]) -> int:
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        return len([d for d in devices.split(",") if d.strip()]) if "," in devices else (int(devices) if devices.isdigit() else 1)
    return int(devices)


def _echo_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _metric(metrics: Mapping[str, Any], key: str) -> float:
    value = metrics.get(key)
    return float(value) if value is not None else float("nan")


def train_and_evaluate(model: nn.Module, datamodule: L.LightningDataModule, recipe: TrainRecipe | Mapping[str, Any],
                       root_dir: str | Path, seed: int, resume_from: str | Path | None = None,
                       callbacks: Sequence[Callback] = (), progress_bar: bool = False,
                       logger: Logger | Iterable[Logger] | bool = True, devices: int | str = 1,
                       accelerator: str = "auto", deterministic: bool | Literal["warn"] = True,
                       max_time: float | str | timedelta | None = None,
                       echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train `model` on `datamodule` and validate it; returns the final validation metrics and where things went.

    Keys: top1, top5, val_loss (last validation), best_top1, epochs (completed), global_step, train_time_s (this
    call: fit + final validation), best_ckpt, last_ckpt, resumed_from, resume_note, stopped_by_time.
    `logger=True` writes CSV metrics under root_dir/logs/version_<n>/. `resume_from` is a checkpoint path or
    "last"; an unusable checkpoint falls back to an older one beside it or to a fresh start, and the one-line
    `resume_note` saying so also goes to `echo` (default: stderr). A full disk raises DiskFullError. `seed` seeds
    everything (`L.seed_everything(seed, workers=True)`) and becomes the data module's `shuffle_seed`; the model
    is built by the caller, so its initialisation follows whatever seed was set before.
    """
    root = Path(root_dir)
    root.mkdir(parents=True, exist_ok=True)
    if not isinstance(recipe, TrainRecipe):
        recipe = TrainRecipe.from_dict(recipe)
    remove_stale_temporaries(root)  # left by a write that a kill interrupted
    resume, resume_note = usable_checkpoint(resume_candidates(resume_from, root), echo=echo or _echo_stderr,
                                            explicit=resume_from is not None and str(resume_from) not in ("last", "auto"))
    ckpt_path = str(resume) if resume is not None else None
    if recipe.batch_size is not None and hasattr(datamodule, "batch_size"):
        datamodule.batch_size = recipe.batch_size
    if hasattr(datamodule, "shuffle_seed"):  # the trial seed drives the shuffle order; data `seed` keeps subsets
        datamodule.shuffle_seed = seed
    if logger is True:
        logger = CSVLogger(save_dir=root, name="logs")
    L.seed_everything(seed, workers=True, verbose=False)
    module = ClassificationModule(model, recipe, num_classes=getattr(datamodule, "num_classes", None))
    start = time.perf_counter()
    with warnings.catch_warnings():
        for pattern in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        # Several devices: ddp_spawn, so this process keeps the trial (its sampled parameters and the built model
        # are shipped to every rank) instead of re-launching the whole study once per rank as plain ddp would.
        strategy = "ddp_spawn" if _device_count(devices) > 1 else "auto"
        trainer = make_trainer(recipe, root, callbacks=callbacks, logger=logger, progress_bar=progress_bar,
                               devices=devices, accelerator=accelerator, deterministic=deterministic, strategy=strategy,
                               max_time=max_time)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            metrics = dict(trainer.callback_metrics)
            if "val/top1" not in metrics:  # e.g. resumed a finished run, or val not due on the last epoch
                trainer.validate(module, datamodule=datamodule, verbose=False)
                metrics.update(trainer.callback_metrics)
        except OSError as err:
            if is_disk_full(err):
                raise disk_full_error(root, err) from None
            raise
    elapsed = time.perf_counter() - start
    ckpt_cb = trainer.checkpoint_callback
    best_score = ckpt_cb.best_model_score if ckpt_cb is not None else None
    last = root / LAST_CKPT
    timer = next((cb for cb in trainer.callbacks if type(cb).__name__ == "Timer"), None)
    return {
        "top1": _metric(metrics, "val/top1"),
        "top5": _metric(metrics, "val/top5"),
        "val_loss": _metric(metrics, "val/loss"),
        "best_top1": float(best_score) if best_score is not None else _metric(metrics, "val/top1"),
        **_progress(trainer, last, strategy),
        "train_time_s": elapsed,
        "best_ckpt": (ckpt_cb.best_model_path or None) if ckpt_cb is not None else None,
        "last_ckpt": str(last) if last.is_file() else None,
        "resumed_from": ckpt_path,
        "resume_note": resume_note,
        "stopped_by_time": bool(timer is not None and max_time is not None and timer.time_remaining() is not None
                                and timer.time_remaining() <= 0),
    }
