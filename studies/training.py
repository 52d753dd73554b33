"""Training one candidate: a quiet Lightning trainer, and `train_and_evaluate`, which trains and validates it.

    recipe = TrainRecipe.from_dict({"epochs": 5, "lr": 2e-3, "opt": "adamw"})
    result = train_and_evaluate(model, make_datamodule("global_marks"), recipe, "results/s/trials/3", seed=0)
    result["top1"], result["last_ckpt"]

The jobs live in their own modules: the recipe (`studies.recipe`), the Lightning module with its optimizer and
schedule (`studies.lightning_module`) and the checkpoints (`studies.checkpoints`); their public names are
importable from here too. The learning rate follows a linear warm-up then a cosine decay to `min_lr`, stepped
every optimizer step, so short fidelity runs still see the whole schedule. Checkpoints (`last.ckpt`,
`best.ckpt`) go straight into `root_dir`, written atomically, so a killed trial resumes with `resume_from="last"`;
once the trial has finished, the recipe's `checkpoints` policy decides what stays (by default the best weights).
Loggers come from the recipe's `loggers` (`studies.loggers`), the per-epoch learning curve from
`studies.progress.LearningCurve`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from studies.checkpoints import (
    BEST_NAME,
    LAST_CKPT,
    AtomicCheckpointIO,
    DiskFullError,
    disk_full_error,
    is_disk_full,
    remove_stale_temporaries,
    resume_candidates,
    retain_checkpoints,
    usable_checkpoint,
)
from studies.lightning_module import ClassificationModule, NonFiniteLossError, WarmupCosine, param_groups
from studies.loggers import build_loggers
from studies.progress import LearningCurve, Report
from studies.recipe import PRECISIONS, TrainRecipe

__all__ = [
    "BEST_NAME", "LAST_CKPT", "PRECISIONS", "ClassificationModule", "DiskFullError", "NonFiniteLossError",
    "TrainRecipe", "WarmupCosine", "make_trainer", "param_groups", "train_and_evaluate",
]


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


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with torch's intra-op thread count at `threads` (None: unchanged); yields the count in
    force and restores the previous one afterwards, so a trial's setting does not leak into measurements."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if threads is not None:
            torch.set_num_threads(previous)


def show_progress_bar(requested: bool, stream: Any = None) -> bool:
    """Lightning's bar redraws one line with carriage returns (on stdout): readable in a terminal, noise in a
    log file. So it is shown only when requested and stdout is a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(requested) and bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


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
                       echo: Callable[[str], None] | None = None, report: Report | None = None,
                       experiment: str = "hybridlab", run_name: str | None = None) -> dict[str, Any]:
    """Train `model` on `datamodule` and validate it; returns the final validation metrics and where things went.

    Keys: top1, top5, val_loss (last validation), best_top1, epochs (completed), global_step, train_time_s (this
    call: fit + final validation), train_threads (torch's thread count while training: `recipe.threads` or the
    default), best_ckpt, last_ckpt (None when not kept), resumed_from, resume_note, stopped_by_time,
    learning_curve (a list of {epoch, train_loss, val_loss, top1}, one per validated epoch, earlier epochs of a
    resumed run included); `report(epoch, point)` is called with each new point as it comes.
    `logger=True` builds the recipe's `loggers` (CSV metrics under root_dir/logs/version_<n>/ by default;
    `experiment` and `run_name` name the MLflow/W&B experiment and run). `progress_bar` shows Lightning's bar
    only when stdout is a terminal (`show_progress_bar`); pass `studies.progress.ProgressLines` in `callbacks`
    for plain lines. After a trial that trained all its epochs, `recipe.checkpoints` decides which checkpoints
    stay (see TrainRecipe); a trial stopped early (time limit, error) keeps everything for its resume.
    `resume_from` is a checkpoint path or "last"; an unusable checkpoint falls back to an older one beside it or to a fresh start, and the one-line
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
        logger = build_loggers(recipe.loggers, root, experiment=experiment, run_name=run_name) or False
    curve = LearningCurve(report)
    L.seed_everything(seed, workers=True, verbose=False)
    module = ClassificationModule(model, recipe, num_classes=getattr(datamodule, "num_classes", None))
    start = time.perf_counter()
    with warnings.catch_warnings(), torch_threads(recipe.threads) as threads:
        for pattern in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        # Several devices: ddp_spawn, so this process keeps the trial (its sampled parameters and the built model
        # are shipped to every rank) instead of re-launching the whole study once per rank as plain ddp would.
        strategy = "ddp_spawn" if _device_count(devices) > 1 else "auto"
        trainer = make_trainer(recipe, root, callbacks=[*callbacks, curve], logger=logger,
                               progress_bar=show_progress_bar(progress_bar),
                               devices=devices, accelerator=accelerator, deterministic=deterministic, strategy=strategy,
                               max_time=max_time)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            metrics = dict(trainer.callback_metrics)
            last = root / LAST_CKPT
            if strategy == "ddp_spawn" and not curve.curve and last.is_file():  # the ranks kept it in the checkpoint
                saved = torch.load(last, map_location="cpu", weights_only=True).get("callbacks", {})
                curve.load_state_dict(saved.get(curve.state_key, {}))
            trained = _progress(trainer, last, strategy)["epochs"]
            if "val/top1" not in metrics or not curve.curve or curve.curve[-1]["epoch"] < trained:
                # resumed a finished run, or no validation due on the last epoch: validate the final weights
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
    stopped_by_time = bool(timer is not None and max_time is not None and timer.time_remaining() is not None
                           and timer.time_remaining() <= 0)
    done = _progress(trainer, last, strategy)
    best_path = (ckpt_cb.best_model_path or None) if ckpt_cb is not None else None
    kept = {"best": Path(best_path) if best_path else None, "last": last if last.is_file() else None}
    if not stopped_by_time and done["epochs"] >= recipe.epochs:
        kept = retain_checkpoints(root, recipe.checkpoints)
    return {
        "top1": _metric(metrics, "val/top1"),
        "top5": _metric(metrics, "val/top5"),
        "val_loss": _metric(metrics, "val/loss"),
        "best_top1": float(best_score) if best_score is not None else _metric(metrics, "val/top1"),
        **done,
        "train_time_s": elapsed,
        "train_threads": threads,
        "best_ckpt": str(kept["best"]) if kept["best"] is not None else None,
        "last_ckpt": str(kept["last"]) if kept["last"] is not None else None,
        "resumed_from": ckpt_path,
        "resume_note": resume_note,
        "stopped_by_time": stopped_by_time,
        "learning_curve": [dict(point) for point in curve.curve],
    }
