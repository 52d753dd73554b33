"""Training a weight-sharing supernet with the study's recipe, data, seed and checkpoints.

`SuperNetModule` is the study's `ClassificationModule` (same loss, mixup, EMA, optimizer and schedule) whose
training step runs the path(s) a `PathSampler` draws: one for uniform and fair sampling, several for sandwich
sampling, whose losses are summed so their gradients accumulate into one optimizer step. The sampler's state
goes into every checkpoint, so a resumed run draws the same sequence an uninterrupted one would. Validation
runs one path per batch from a fixed seeded list, so the curve is an average over layouts and comparable
between epochs.

`train_supernet` runs it through `studies.training.make_trainer` (atomic `last.ckpt`/`best.ckpt` in the folder,
resumed from `last.ckpt` after a kill) and writes the final weights to `supernet.pt` (the EMA copy with
`train.ema`) for scoring.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from blocks.path_sampling import PathSampler
from blocks.supernet import SuperNet
from hybridlab.atomic import atomic_write
from studies.checkpoints import remove_stale_temporaries, resume_candidates, usable_checkpoint
from studies.lightning_module import ClassificationModule, NonFiniteLossError
from studies.recipe import TrainRecipe

WEIGHTS = "supernet.pt"
SAMPLER_KEY = "path_sampler"
VAL_PATH_SEED = 7_919


def build_supernet(layout: Any, share: bool, seed: int) -> SuperNet:
    """The supernet of a `studies.one_shot_config.SupernetLayout`, initialised from `seed`."""
    torch.manual_seed(seed)
    return SuperNet(layout.base, layout.positions, layout.choices, share=share)


def make_sampler(net: SuperNet, kind: str, seed: int) -> PathSampler:
    """A path sampler over `net`; sandwich sampling ranks the choices of each position by their parameters."""
    sizes = None
    if kind == "sandwich":
        sizes = [[sum(p.numel() for p in choice.parameters()) for choice in position] for position in net.options]
    return PathSampler(kind, len(net.positions), len(net.choices), seed=seed, choice_sizes=sizes)


def validation_path(net: SuperNet, batch_idx: int) -> tuple[int, ...]:
    """The layout validation batch `batch_idx` runs (the same every epoch)."""
    g = torch.Generator().manual_seed(VAL_PATH_SEED + batch_idx)
    return tuple(torch.randint(len(net.choices), (len(net.positions),), generator=g).tolist())


class SuperNetModule(ClassificationModule):
    """`ClassificationModule` over a supernet: sampled paths per training step, the sampler in checkpoints."""

    def __init__(self, net: SuperNet, recipe: TrainRecipe, sampler: PathSampler, num_classes: int | None = None) -> None:
        super().__init__(net, recipe, num_classes=num_classes)
        self.sampler = sampler
        self.paths_run = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        x, y = batch[0], batch[1]
        if self.mixup is not None:
            if len(x) % 2:
                x, y = x[:-1], y[:-1]
            if len(x) == 0:
                return None
            x, target = self.mixup(x, y)
        else:
            target = y
        paths = self.sampler.next()
        loss = sum(self.train_criterion(self.model(x, path), target) for path in paths)
        self.paths_run += len(paths)
        if not torch.isfinite(loss.detach()).item():
            raise NonFiniteLossError(
                f"supernet training loss is {loss.detach().float().item()} at epoch {self.current_epoch} step "
                f"{self.global_step}; lower the lr, set clip_grad or use precision 32-true")
        self.log("train/loss", loss.detach() / len(paths), on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        path = validation_path(self.model, batch_idx)
        model = self.eval_model
        x, y = batch[0], batch[1]
        logits = model(x, path).float()
        loss = torch.nn.functional.cross_entropy(logits, y)
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices.eq(y[:, None])
        self.log("val/loss", loss, on_epoch=True, batch_size=len(y))
        self.log("val/top1", hits[:, 0].float().mean() * 100.0, on_epoch=True, batch_size=len(y), prog_bar=True)
        self.log("val/top5", hits.any(dim=1).float().mean() * 100.0, on_epoch=True, batch_size=len(y))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SAMPLER_KEY] = self.sampler.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if SAMPLER_KEY in checkpoint:
            self.sampler.load_state_dict(checkpoint[SAMPLER_KEY])


def train_supernet(net: SuperNet, datamodule: L.LightningDataModule, recipe: TrainRecipe, root: Path, seed: int,
                   sampling: str, callbacks: Sequence[Callback] = (), echo: Callable[[str], None] = print,
                   accelerator: str = "auto", devices: Any = 1) -> dict[str, Any]:
    """Train `net` (resuming `root/last.ckpt` when there is one); returns the run's figures, weights in supernet.pt."""
    from studies.progress import LearningCurve
    from studies.training import _NOISY_WARNINGS, make_trainer, torch_threads

    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    resume, note = usable_checkpoint(resume_candidates("last", root), echo=echo)
    if resume is not None:
        echo(f"[supernet] resuming from {resume}")
    if recipe.batch_size is not None and hasattr(datamodule, "batch_size"):
        datamodule.batch_size = recipe.batch_size
    if hasattr(datamodule, "shuffle_seed"):
        datamodule.shuffle_seed = seed
    L.seed_everything(seed, workers=True, verbose=False)
    sampler = make_sampler(net, sampling, seed)
    module = SuperNetModule(net, recipe, sampler, num_classes=getattr(datamodule, "num_classes", None))
    curve = LearningCurve(None)
    start = time.perf_counter()
    with warnings.catch_warnings(), torch_threads(recipe.threads) as threads:
        for pattern in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        trainer = make_trainer(recipe, root, callbacks=[*callbacks, curve], accelerator=accelerator, devices=devices)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    elapsed = time.perf_counter() - start
    weights = module.eval_model.state_dict()
    atomic_write(root / WEIGHTS, lambda tmp: torch.save({k: t.detach().cpu() for k, t in weights.items()}, tmp))
    metrics = trainer.callback_metrics
    return {
        "supernet_val_top1": float(metrics["val/top1"]) if "val/top1" in metrics else None,
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "sampler_steps": sampler.steps,
        "train_time_s": elapsed,
        "train_threads": threads,
        "resumed_from": str(resume) if resume else None,
        "resume_note": note,
        "learning_curve": [dict(p) for p in curve.curve],
    }


def load_supernet(net: SuperNet, root: Path) -> SuperNet:
    """`net` with the trained weights of `root/supernet.pt`."""
    state = torch.load(root / WEIGHTS, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


__all__ = ["WEIGHTS", "SuperNetModule", "build_supernet", "load_supernet", "make_sampler", "train_supernet",
           "validation_path"]
