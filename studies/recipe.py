"""How one candidate is trained: `TrainRecipe`, the validated `train:` section of a study file.

    recipe = TrainRecipe.from_dict({"epochs": 5, "lr": 2e-3, "opt": "adamw"}, where="train")

Every value is checked on construction; a bad one raises one ConfigError line naming `train.<key>`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from timm.optim import list_optimizers

from hybridlab.errors import ConfigError

LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")
CHECKPOINT_POLICIES = ("best", "last", "both", "full", "none_after_finish")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")

_INT = {"epochs": 1, "batch_size": 1, "accumulate_grad_batches": 1, "val_every_n_epochs": 1, "threads": 1}
_INT_MAX = {"threads": 4096}
_FLOAT = {  # name: (minimum, maximum, minimum is exclusive)
    "lr": (0.0, None, True), "weight_decay": (0.0, None, False), "momentum": (0.0, 1.0, False),
    "warmup_epochs": (0.0, None, False), "min_lr": (0.0, None, False), "label_smoothing": (0.0, 0.999, False),
    "mixup": (0.0, None, False), "cutmix": (0.0, None, False), "mixup_prob": (0.0, 1.0, False),
    "mixup_switch_prob": (0.0, 1.0, False), "clip_grad": (0.0, None, True), "ema_decay": (0.0, 0.999999, True),
}
_OPTIONAL = {"batch_size", "clip_grad", "limit_train_batches", "limit_val_batches", "threads", "layer_decay"}
# Fine-tuning settings left out of `to_dict` at their defaults: a recipe without them hashes as before
_FINETUNE_DEFAULTS: dict[str, Any] = {"layer_decay": None, "freeze_stages": ()}


@dataclass(frozen=True)
class TrainRecipe:
    """How one candidate is trained. `batch_size` None keeps the data module's; `warmup_epochs` may be fractional
    (it is clipped to the run length); `mixup`/`cutmix` are the Beta alphas (0 = off); `clip_grad` is a max
    gradient norm; `ema` validates with EMA weights; `limit_*_batches` are fidelity knobs (int = batches,
    float = fraction, as in Lightning); `threads` is torch's intra-op thread count while training (None leaves
    torch's default; fewer threads than cores avoids OpenMP spin-waits when other processes share the CPU).

    `loggers`: Lightning loggers to write (`csv`, `tensorboard`, `mlflow`, `wandb`; see `studies.loggers`).
    `checkpoints`: what a trial keeps. While it runs, always `last.ckpt` and `best.ckpt` with optimizer state
    (resume needs them); once it finished all its epochs: `best` (default) keeps only the best epoch's weights
    in `best.ckpt`, `last` only the last epoch's weights in `last.ckpt`, `both` both as weights, `full` both
    untouched (a finished trial can then be trained further), `none_after_finish` neither.

    Fine-tuning: `layer_decay` (0 < d <= 1) scales each layer's lr by d^(layers after it), through timm's
    layer-decay groups and the model's `group_matcher` (stem lowest, head at the full lr); `freeze_stages` lists
    `stem` and stage numbers (from 1, as in a search space's `layout.stages`; a stage includes the downsample at
    its end) whose parameters get no gradient and whose norms stay in eval mode."""

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
    threads: int | None = None
    loggers: tuple[str, ...] = ("csv",)
    checkpoints: str = "best"
    layer_decay: float | None = None
    freeze_stages: tuple[str | int, ...] = ()

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
        """Plain values (lists, not tuples), so YAML and JSON writers store them without Python tags."""
        out = asdict(self)
        out["loggers"] = list(self.loggers)
        out["freeze_stages"] = list(self.freeze_stages)
        for key, default in _FINETUNE_DEFAULTS.items():
            if getattr(self, key) == default:
                del out[key]
        return out

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
        if name in _INT_MAX and value > _INT_MAX[name]:
            raise ConfigError(f"must be <= {_INT_MAX[name]}, got {value}", key)
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
    if name == "loggers":
        return _check_loggers(value, key)
    if name == "checkpoints":
        if value not in CHECKPOINT_POLICIES:
            raise ConfigError(f"must be one of {', '.join(CHECKPOINT_POLICIES)}, got {value!r}", key)
        return value
    if name == "layer_decay":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
            raise ConfigError(f"must be a number in (0, 1] (e.g. 0.75), got {value!r}", key)
        return float(value)
    if name == "freeze_stages":
        return _check_freeze(value, key)
    if name in ("limit_train_batches", "limit_val_batches"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a batch count or a fraction, got {value!r}", key)
        if isinstance(value, int) and value < 0 or isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ConfigError(f"must be a count >= 0 or a fraction in (0, 1], got {value}", key)
        return value
    raise ConfigError(f"unknown training setting {name!r}", key)  # pragma: no cover - fields and checks agree


def _check_loggers(value: Any, key: str) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"must be a list of logger names ({', '.join(LOGGERS)}), got {value!r}", key)
    out: list[str] = []
    for name in names:
        name = name.lower()
        if name not in LOGGERS:
            raise ConfigError(f"unknown logger {name!r} (known: {', '.join(LOGGERS)})", key)
        if name in out:
            raise ConfigError(f"logger {name!r} is listed twice", key)
        out.append(name)
    return tuple(out)


def _check_freeze(value: Any, key: str) -> tuple[str | int, ...]:
    """`stem` and stage numbers from 1, each once (a lone `stem` or number is a list of one)."""
    items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"must be a list of 'stem' and stage numbers (from 1), got {value!r}", key)
    out: list[str | int] = []
    for item in items:
        if item == "stem":
            pass
        elif isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(f"must list 'stem' and stage numbers (from 1), got {item!r}", key)
        elif item < 1:
            raise ConfigError(f"stages are numbered from 1 (as in layout.stages); use 'stem' for the patch "
                              f"embedding, got {item}", key)
        if item in out:
            raise ConfigError(f"{item!r} is listed twice", key)
        out.append(item)
    return tuple(out)
