"""Progress a person can follow in a log file, and the learning curve a trial leaves behind.

    lines = ProgressLines("trial 3", echo=print, every_s=60, trials_left=7, mean_trial_s=420)
    curve = LearningCurve(report=lambda epoch, m: trial.report(m["top1"], step=epoch))
    train_and_evaluate(model, dm, recipe, folder, seed=0, callbacks=[lines, curve])

`ProgressLines` prints one plain line per epoch (and every `every_s` seconds inside long epochs) through `echo`:
no carriage returns or bars, so nohup, SLURM and `tee` logs stay readable. `LearningCurve` keeps
{epoch, train_loss, val_loss, top1} after each validated epoch (epoch counted from 1: the number of epochs
trained), saves it in the checkpoint so a resumed trial keeps its earlier epochs, and hands each new point to
`report` (the runner forwards it to Optuna).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

Echo = Callable[[str], None]
Report = Callable[[int, dict[str, float]], None]


def _echo_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def format_duration(seconds: float | None) -> str:
    """`1:02:03` (h:mm:ss), `4:05` (m:ss) or `?` when unknown: short enough for a progress line."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def trial_start_line(number: int, total: int | None, pattern: str, seed: int | None, fidelity: str | None) -> str:
    """The line a runner prints when a trial starts: `trial 3 of 12 · pattern 'T T C' · seed 0 · fidelity full`."""
    parts = [f"trial {number} of {total}" if total else f"trial {number}", f"pattern {pattern!r}"]
    if seed is not None:
        parts.append(f"seed {seed}")
    if fidelity:
        parts.append(f"fidelity {fidelity}")
    return " · ".join(parts)


def _scalar(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if value is None:
        return None
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return value if math.isfinite(value) else None


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) and batch else batch
    return int(len(first)) if hasattr(first, "__len__") else 0


class ProgressLines(Callback):
    """One line per epoch, and one every `every_s` seconds within an epoch (None: epoch lines only), e.g.

        [trial 3] epoch 2/10 · loss 1.234 · top-1 45.6% · 812 img/s · ETA trial 3:10 · study 1:02:00

    `loss` is the epoch's mean training loss (the running mean inside an epoch), `top-1` the last validation's,
    `img/s` the training images per second since the previous line (over the whole epoch on epoch lines;
    validation time left out). The trial's ETA comes from the batches done in this run; the study's is added when
    `trials_left` (trials after this one) is given: `trials_left` x `mean_trial_s` (or, without it, this trial's
    projected length) + the trial's ETA. Only rank 0 prints. The running loss stays on the device until a line is
    printed (no extra GPU sync per step). `clock` is injectable for tests.
    """

    def __init__(self, label: str, echo: Echo | None = None, every_s: float | None = None,
                 trials_left: int | None = None, mean_trial_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.echo, self.every_s = label, echo or _echo_stderr, every_s
        self.trials_left, self.mean_trial_s, self.clock = trials_left, mean_trial_s, clock
        self.lines: list[str] = []  # what was printed, for whoever wants it afterwards
        self._start = 0.0
        self._start_batches = 0
        self._window_start = 0.0
        self._window_images = 0
        self._excluded = 0.0
        self._epoch_start = 0.0
        self._epoch_images = 0
        self._epoch_excluded = 0.0
        self._val_start: float | None = None
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_n = 0
        self._top1: float | None = None

    # -- bookkeeping -----------------------------------------------------------------------------------------------------------

    def _done_batches(self, trainer: L.Trainer, batch_idx: int) -> int:
        per_epoch = _batches_per_epoch(trainer)
        return trainer.current_epoch * per_epoch + batch_idx + 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._window_start = self.clock()
        self._start_batches = trainer.current_epoch * _batches_per_epoch(trainer)  # a resumed run starts later

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._loss_n = 0.0, 0
        self._epoch_start, self._epoch_images, self._epoch_excluded = self.clock(), 0, 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):  # Lightning hands back the loss divided by the accumulation count
            self._loss_sum = self._loss_sum + loss.detach().float() * max(1, trainer.accumulate_grad_batches)
            self._loss_n += 1
        self._window_images += _batch_size(batch)
        self._epoch_images += _batch_size(batch)
        if self.every_s is not None and self.clock() - self._window_start >= self.every_s:
            self._print(trainer, batch_idx, within=True)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = self.clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_start is not None:
            self._excluded += self.clock() - self._val_start
            self._epoch_excluded += self.clock() - self._val_start
            self._val_start = None
        top1 = _scalar(trainer.callback_metrics, "val/top1")
        if top1 is not None and not trainer.sanity_checking:
            self._top1 = top1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer, _batches_per_epoch(trainer) - 1, within=False)

    # -- the line --------------------------------------------------------------------------------------------------------------

    def _print(self, trainer: L.Trainer, batch_idx: int, within: bool) -> None:
        now = self.clock()
        if within:  # since the previous line; at an epoch's end, over the whole epoch
            images, seconds = self._window_images, now - self._window_start - self._excluded
        else:
            images, seconds = self._epoch_images, now - self._epoch_start - self._epoch_excluded
        rate = images / max(seconds, 1e-9) if images else None
        self._window_start, self._window_images, self._excluded = now, 0, 0.0
        if not trainer.is_global_zero:
            return
        per_epoch = _batches_per_epoch(trainer)
        total = per_epoch * (trainer.max_epochs or 1)
        done = min(self._done_batches(trainer, batch_idx), total)
        ran = done - self._start_batches
        elapsed = now - self._start
        eta = elapsed * (total - done) / ran if ran > 0 else None
        loss = None if within else _scalar(trainer.callback_metrics, "train/loss")
        if loss is None and self._loss_n:
            loss = float(self._loss_sum) / self._loss_n
        epoch = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        if within:
            epoch += f" step {batch_idx + 1}/{per_epoch}"
        parts = [f"[{self.label}] {epoch}", f"loss {loss:.4g}" if loss is not None else "loss ?",
                 f"top-1 {self._top1:.1f}%" if self._top1 is not None else "top-1 -",
                 f"{rate:,.0f} img/s" if rate is not None else "? img/s", f"ETA trial {format_duration(eta)}"]
        if self.trials_left is not None:
            mean = self.mean_trial_s if self.mean_trial_s is not None else (elapsed + eta if eta is not None else None)
            study = eta + self.trials_left * mean if eta is not None and mean is not None else None
            parts.append(f"study {format_duration(study)}")
        line = " · ".join(parts)
        self.lines.append(line)
        self.echo(line)


def _batches_per_epoch(trainer: L.Trainer) -> int:
    count = trainer.num_training_batches
    return int(count) if isinstance(count, (int, float)) and math.isfinite(count) and count > 0 else 1


class LearningCurve(Callback):
    """{epoch, train_loss, val_loss, top1} after each epoch that ended with a validation, in `self.curve`.

    `report(epoch, point)` is called once per new point (epoch counted from 1); points restored from a resumed
    checkpoint are reported again at the start, so a retried trial's curve is whole (Optuna ignores a step it
    already has). A validation outside fit (the final one `train_and_evaluate` runs when the last epoch had
    none) adds the last epoch's point if it is missing. Values that are not finite are stored as NaN.
    """

    def __init__(self, report: Report | None = None) -> None:
        self.report = report
        self.curve: list[dict[str, float]] = []
        self._pending: dict[str, float] | None = None
        self._last_train_loss = float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"curve": [dict(point) for point in self.curve]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curve = [dict(point) for point in state_dict.get("curve", [])]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.report is not None and trainer.is_global_zero:
            for point in self.curve:
                self.report(int(point["epoch"]), dict(point))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        point = {"val_loss": _nan(_scalar(metrics, "val/loss")), "top1": _nan(_scalar(metrics, "val/top1"))}
        if trainer.state.fn == "fit":  # inside fit: the epoch's training loss is known at the epoch's end
            self._pending = point
        else:
            epoch = int(trainer.current_epoch)  # after fit: the number of epochs trained
            if epoch > 0 and not any(int(p["epoch"]) == epoch for p in self.curve):
                self._add(trainer, {"epoch": float(epoch), "train_loss": self._last_train_loss, **point})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_train_loss = _nan(_scalar(trainer.callback_metrics, "train/loss"))
        if self._pending is not None:
            point = {"epoch": float(trainer.current_epoch + 1), "train_loss": self._last_train_loss, **self._pending}
            self._pending = None
            self._add(trainer, point)

    def _add(self, trainer: L.Trainer, point: dict[str, float]) -> None:
        point["epoch"] = int(point["epoch"])
        self.curve.append(point)
        if self.report is not None and trainer.is_global_zero:
            self.report(point["epoch"], dict(point))


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
