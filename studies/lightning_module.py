"""The Lightning module that trains one candidate: loss (label smoothing or mixup/cutmix), EMA, metrics, and
the optimizer (timm's factory, with the harness's no-weight-decay rules) under a per-step warm-up + cosine schedule.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from timm.utils import ModelEmaV3

from hybridlab.errors import ConfigError, HybridlabError
from studies.recipe import TrainRecipe


class NonFiniteLossError(HybridlabError):
    """The training loss became NaN or inf: the trial stops (lower lr, clip gradients or use fp32)."""


# -- optimizer and schedule ------------------------------------------------------------------------------------------------


def no_weight_decay_patterns(model: nn.Module) -> set[str]:
    """The names that get no weight decay besides biases and 1-D params: the model's `no_weight_decay()` names
    (exact or wildcard, as timm reads them) and `*keyword*` for each `no_weight_decay_keywords()` entry (which
    timm's factory ignores)."""
    names = set(getattr(model, "no_weight_decay", lambda: ())() or ())
    keywords = getattr(model, "no_weight_decay_keywords", lambda: ())() or ()
    return names | {f"*{keyword}*" for keyword in keywords}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """timm's groups: biases / norms / other 1-D params / `no_weight_decay_patterns` without weight decay (first
    group), the other weights with `weight_decay`; one group at weight decay 0 when `weight_decay` is 0."""
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_weight_decay_patterns(model))


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """timm's layer-wise lr decay groups (each with its `lr_scale`) from the model's `group_matcher`, with the same
    no-weight-decay rules as `param_groups`; frozen parameters are left out."""
    if not hasattr(model, "group_matcher"):
        raise ConfigError(f"{type(model).__name__} has no group_matcher(), so its layers cannot be told apart",
                          "train.layer_decay")
    return param_groups_layer_decay(model, weight_decay, no_weight_decay_list=no_weight_decay_patterns(model),
                                    layer_decay=layer_decay)


def frozen_modules(model: nn.Module, stages: tuple[str | int, ...]) -> list[nn.Module]:
    """The modules `train.freeze_stages` names: `stem` is the patch embedding, stage k is `levels[k-1]`."""
    if not stages:
        return []
    levels = getattr(model, "levels", None)
    if getattr(model, "patch_embed", None) is None or not isinstance(levels, nn.ModuleList):
        raise ConfigError(f"{type(model).__name__} has no stem and stages to freeze (a pattern model has)",
                          "train.freeze_stages")
    out = []
    for item in stages:
        if item == "stem":
            out.append(model.patch_embed)
        elif int(item) > len(levels):
            raise ConfigError(f"stage {item} does not exist (the model has {len(levels)} stages)", "train.freeze_stages")
        else:
            out.append(levels[int(item) - 1])
    return out


def freeze(modules: list[nn.Module]) -> None:
    """No gradient for the modules' parameters, and their norms in eval mode (running statistics kept)."""
    for module in modules:
        module.requires_grad_(False)
        module.eval()


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
        self.frozen = frozen_modules(model, r.freeze_stages)
        freeze(self.frozen)
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
        for module in self.frozen:
            module.eval()
        if self.model_ema is not None:
            self.model_ema.module.eval()

    def train(self, mode: bool = True) -> ClassificationModule:
        """Frozen stages stay in eval mode whenever Lightning switches the module back to training."""
        super().train(mode)
        for module in getattr(self, "frozen", ()):
            module.eval()
        return self

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
        if r.layer_decay is None:
            group_fn = lambda m: param_groups(m, r.weight_decay)  # noqa: E731
        else:
            group_fn = lambda m: layer_decay_groups(m, r.weight_decay, r.layer_decay)  # noqa: E731
        optimizer = create_optimizer_v2(self.model, opt=r.opt, lr=r.lr, weight_decay=r.weight_decay,
                                        momentum=r.momentum, param_group_fn=group_fn)
        for group in optimizer.param_groups:  # timm's schedulers apply lr_scale; the LambdaLR below scales this lr
            if "lr_scale" in group:
                group["lr"] = r.lr * group["lr_scale"]
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        schedule = WarmupCosine(total, int(round(r.warmup_epochs * per_epoch)), r.min_lr / r.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
