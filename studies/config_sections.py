"""The sections of a study file, each checked on its own: one ConfigError line naming the key.

`studies.config` calls these in turn and collects every problem, so a user fixes the file once.
Sections owned by other layers (the data module, `TrainRecipe`, `MeasureProfile`, `ModelSpec`) check
their own values; their errors are relocated under the section (`ConfigError.within`), and the few
upper bounds they leave open are in `UPPER_LIMITS`, checked here before they are called.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocks.spec import ModelSpec
from hybridlab import validate as v
from hybridlab.errors import ConfigError, HybridlabError
from hybridlab.userimports import import_modules
from search_space.space import SearchSpace

SAMPLERS = ("grid", "tpe", "nsga2", "gp", "random")
SAMPLER_KEYS = ("name", "seed", "n_startup_trials", "population_size")
MAX_GRID = 10_000
MAX_ARCHITECTURES = 10_000  # n_trials counts architectures (each runs once per seed); studies.planning plans no more
MAX_TRIALS = 100_000  # the seed budget and sampler start-up trials: planning more is a typo, not a study
MAX_SEED = 2**32 - 1  # NumPy's and Lightning's seed range
MAX_SEEDS = 1_000
MAX_RETRIES = 100
MAX_THREADS = 4_096
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")

# Upper bounds for settings whose owners check only the lower side: a value above is a typo that would
# hang or exhaust memory (`measure.warmup_s: 1e9`, `train.epochs: 2**40`).
UPPER_LIMITS: dict[str, float] = {
    "train.epochs": 100_000, "train.batch_size": 65_536, "train.accumulate_grad_batches": 65_536,
    "train.val_every_n_epochs": 100_000, "train.warmup_epochs": 100_000, "train.lr": 10.0, "train.min_lr": 10.0,
    "train.weight_decay": 100.0, "train.mixup": 100.0, "train.cutmix": 100.0, "train.clip_grad": 1e9,
    "data.batch_size": 65_536, "data.val_batch_size": 65_536, "data.num_workers": 1_024, "data.img_size": 4_096,
    "data.num_train": 100_000_000, "data.num_val": 100_000_000, "data.train_subset": 100_000_000,
    "data.val_subset": 100_000_000, "data.num_classes": 1_000_000, "data.seed": MAX_SEED, "data.data_seed": MAX_SEED,
    "model.dim": 65_536, "model.in_dim": 65_536, "model.num_classes": 1_000_000, "model.in_chans": 1_024,
    "measure.batch_size": 65_536, "measure.img_size": 4_096, "measure.repeats": 1_000, "measure.warmup_iters": 1_000_000,
    "measure.warmup_s": 3_600, "measure.window_s": 3_600, "measure.iters": 1_000_000, "measure.max_iters": 1_000_000,
    "measure.threads": MAX_THREADS, "measure.seed": MAX_SEED, "measure.in_chans": 1_024, "measure.num_classes": 1_000_000,
}


def number_problems(data: Any, where: str = "") -> list[ConfigError]:
    """Every NaN, inf or integer beyond 2^53 anywhere in the file, and every value above `UPPER_LIMITS`."""
    out: list[ConfigError] = []
    stack = [(data, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, Mapping):
            stack.extend((val, f"{at}.{k}" if at else str(k)) for k, val in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((val, f"{at}[{i}]") for i, val in reversed(list(enumerate(node))))
        elif isinstance(node, float) and not math.isfinite(node):
            out.append(ConfigError(f"expected a finite number, got {node!r}", at[:200]))
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > v.MAX_INT:
            out.append(ConfigError(f"integer too large (at most {v.MAX_INT:,}), got {v.short(node, 40)}", at[:200]))
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and at in UPPER_LIMITS \
                and node > UPPER_LIMITS[at]:
            out.append(ConfigError(f"must be <= {UPPER_LIMITS[at]:,g}, got {node!r}", at))
    return out


# -- plain settings ---------------------------------------------------------------------------------------------------

def imports(value: Any, folder: Path) -> None:
    """Import the study's own block modules, looked up next to the study file and in the current folder."""
    names = v.list_of(value, lambda n, at: v.text(n, at, max_len=200), "imports", min_len=0) if value is not None else []
    if names:
        import_modules(names, where="imports", search=[folder])


def name(value: Any) -> str:
    """A study name is a folder name: letters, digits, `_`, `-`, `.`; no separators, spaces or line breaks."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"expected a study name of up to 100 letters, digits, '_', '-', '.', got {v.short(value)}",
                          "name")
    return value


def description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 10_000:
        raise ConfigError(f"expected text of at most 10,000 characters, got {v.short(value)}", "description")
    return value


def storage(value: Any) -> str | None:
    return None if value is None else v.text(value, "storage", max_len=4_096)


def n_trials(value: Any) -> int | None:
    return v.optional_integer(value, "n_trials", 1, MAX_ARCHITECTURES)


def devices(value: Any) -> int:
    return v.integer(value, "devices", 1, 1_024)


def progress_every_s(value: Any) -> float | None:
    """Seconds between progress lines within an epoch (None: one line per epoch only)."""
    if value is None:
        return None
    return v.number(value, "progress_every_s", 1.0, 86_400.0)


def max_retries(value: Any) -> int:
    """How often a failed trial is tried again on a rerun (0 = never)."""
    return v.integer(value, "max_retries", 0, MAX_RETRIES)


def threads(value: Any, where: str) -> int | None:
    """A thread count, or None (`auto`: leave torch's own choice)."""
    if value is None or value == "auto":
        return None
    return v.integer(value, where, 1, MAX_THREADS)


def sampler(value: Any) -> dict[str, Any]:
    cfg = {"name": value} if isinstance(value, str) else v.mapping(value, "sampler")
    v.unknown_keys(cfg, SAMPLER_KEYS, "sampler")
    cfg["name"] = v.choice(cfg.get("name", "tpe"), SAMPLERS, "sampler.name", "sampler")
    cfg["seed"] = v.integer(cfg.get("seed", 0), "sampler.seed", 0, MAX_SEED)
    if "n_startup_trials" in cfg:
        v.integer(cfg["n_startup_trials"], "sampler.n_startup_trials", 0, MAX_TRIALS)
    if "population_size" in cfg:
        v.integer(cfg["population_size"], "sampler.population_size", 2, 10_000)
    return cfg


# -- strategy ---------------------------------------------------------------------------------------------------------

def check_strategy(settings: Any, space: SearchSpace, objectives: list[str]) -> None:
    """Cross-checks of a one-shot strategy against the search space and the objectives."""
    from studies.one_shot_config import check_study

    check_study(settings, space, objectives)


# -- seeds ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AutoSeeds:
    """`seeds: auto`: a seed budget instead of a list (see `studies.config` for the settings)."""

    initial: int = 2
    max: int = 6
    budget: int | None = None
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "max": self.max, "budget": self.budget, "confidence": self.confidence}


def seeds(value: Any) -> tuple[list[int], AutoSeeds | None]:
    """A seed list, or `auto` / `{auto: {initial, max, budget, confidence}}` (initial seeds 0..initial-1)."""
    if value == "auto" or isinstance(value, Mapping):
        auto = _auto_seeds({} if value == "auto" else value)
        return list(range(auto.initial)), auto
    items = v.list_of(value, lambda s, at: v.integer(s, "seeds", 0, MAX_SEED), "seeds", max_len=MAX_SEEDS)
    if len(set(items)) != len(items):
        raise ConfigError("a seed is listed twice", "seeds")
    return items, None


def _auto_seeds(value: Mapping[str, Any]) -> AutoSeeds:
    v.unknown_keys(value, ("auto",), "seeds")
    cfg = v.mapping(value.get("auto"), "seeds.auto")
    v.unknown_keys(cfg, ("initial", "max", "budget", "confidence"), "seeds.auto")
    initial = v.integer(cfg.get("initial", 2), "seeds.auto.initial", 2, MAX_SEEDS)
    most = v.integer(cfg.get("max", max(6, initial)), "seeds.auto.max", initial, MAX_SEEDS)
    budget = v.optional_integer(cfg.get("budget"), "seeds.auto.budget", 1, MAX_TRIALS)
    confidence = v.number(cfg.get("confidence", 0.95), "seeds.auto.confidence", 0.5, 0.999, exclusive_min=True)
    return AutoSeeds(initial, most, budget, confidence)


def check_seed_budget(auto: AutoSeeds, space: SearchSpace, n_baselines: int) -> None:
    """The budget must at least pay for the first round: every candidate and baseline at `initial` seeds."""
    if auto.budget is None or space.size() > MAX_GRID:
        return
    rows = len(space.candidates()) + n_baselines
    if auto.budget < rows * auto.initial:
        raise ConfigError(f"budget {auto.budget} does not cover the first round ({rows} candidates x "
                          f"{auto.initial} seeds = {rows * auto.initial} trials)", "seeds.auto.budget")


# -- sections checked by their owners ---------------------------------------------------------------------------------

def data(value: Any, check: bool) -> dict[str, Any]:
    from studies.data import DATASETS, make_datamodule

    cfg = v.mapping(value, "data", required=True)
    if "name" not in cfg:
        raise ConfigError(f"missing 'name' (datasets: {', '.join(DATASETS)})", "data.name")
    v.choice(cfg["name"], tuple(DATASETS), "data.name", "dataset")
    try:
        datamodule = make_datamodule(**{str(k): val for k, val in cfg.items()})
        if check and hasattr(datamodule, "check"):
            datamodule.check()
    except ConfigError as exc:
        raise v.located(exc, "data") from None
    except HybridlabError as exc:
        raise ConfigError(str(exc), "data") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(v.short(str(exc)), "data") from None
    cfg["_num_classes"] = datamodule.num_classes
    cfg["_in_chans"] = datamodule.in_chans
    cfg["_img_size"] = datamodule.img_size
    return cfg


def model(value: Any, data_cfg: dict[str, Any] | None) -> ModelSpec:
    cfg = v.mapping(value, "model", required=True)
    preset = cfg.pop("preset", None)
    from studies.finetune import pop_pretrained_keys

    pop_pretrained_keys(cfg)  # checked by studies.finetune
    if data_cfg is not None:
        cfg.setdefault("num_classes", data_cfg["_num_classes"])
        cfg.setdefault("in_chans", data_cfg["_in_chans"])
    try:
        if preset is not None:
            from blocks.presets import preset_spec

            return preset_spec(v.text(preset, "model.preset"), **{str(k): val for k, val in cfg.items()})
        if "pattern" not in cfg:
            raise ConfigError("needs 'pattern' or 'preset'", "model")
        pattern = v.text(cfg.pop("pattern"), "model.pattern", max_len=10_000)
        return ModelSpec.create(pattern, **{str(k): val for k, val in cfg.items()})
    except ConfigError as exc:
        raise v.located(exc, "model") from None
    except HybridlabError as exc:  # a pattern error: its own message says where in the pattern
        raise ConfigError(str(exc), "model.pattern") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(v.short(str(exc)), "model") from None


def train(value: Any) -> tuple[Any, int | None]:
    """The TrainRecipe, and `train.threads` (torch threads while training; None = torch's choice)."""
    from studies.training import TrainRecipe

    cfg = v.mapping(value, "train")
    train_threads = threads(cfg.pop("threads", None), "train.threads")
    fields = {str(k): val for k, val in cfg.items()}
    if train_threads is not None:
        fields["threads"] = train_threads  # applied by the training run (torch.set_num_threads, then restored)
    try:
        recipe = TrainRecipe.from_dict(fields)
    except ConfigError as exc:
        raise v.located(exc, "train") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(v.short(str(exc)), "train") from None
    from studies.loggers import check_loggers

    check_loggers(recipe.loggers)  # a missing logger package would fail every trial: say so before planning
    return recipe, train_threads


def measure(value: Any, data_cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The `measure:` settings, checked by MeasureProfile; `threads: auto` is None."""
    from hybridlab.measure import MeasureProfile

    cfg = v.mapping(value, "measure")
    phase = v.choice(cfg.pop("phase", "trial"), ("trial", "after"), "measure.phase", "phase")
    if "threads" in cfg:
        cfg["threads"] = threads(cfg["threads"], "measure.threads")
    if data_cfg is not None:
        cfg.setdefault("img_size", data_cfg["_img_size"])
        cfg.setdefault("in_chans", data_cfg["_in_chans"])
    try:
        MeasureProfile.from_dict({str(k): val for k, val in cfg.items()})
    except ConfigError as exc:
        raise v.located(exc, "measure") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(v.short(str(exc)), "measure") from None
    if phase != "trial":
        cfg["phase"] = phase  # `after`: `hybridlab run` ends with the side-by-side phase (studies.measure_phase)
    return cfg


def ablation(value: Any, space: SearchSpace | None) -> dict[str, Any] | None:
    if value is None:
        return None
    cfg = v.mapping(value, "ablation")
    v.unknown_keys(cfg, ("default_label", "names"), "ablation")
    names = cfg.get("names")
    if isinstance(names, list):  # the row order
        v.list_of(names, lambda n, at: v.text(n, at, max_len=1_000), "ablation.names")
    else:  # label -> row name
        for label, shown in v.mapping(names, "ablation.names").items():
            v.text(shown, f"ablation.names.{v.short(label, 60)}", max_len=1_000)
    if "default_label" in cfg:
        v.text(cfg["default_label"], "ablation.default_label", max_len=1_000)
    if space is not None and "default_label" in cfg:
        labels = {c.label for c in space.sample_candidates(MAX_GRID)}
        if cfg["default_label"] not in labels:
            raise ConfigError(f"{v.short(cfg['default_label'])} is not a label of the search space "
                              f"(labels: {', '.join(sorted(labels))})", "ablation.default_label")
    return cfg


def check_windows(space: SearchSpace, img: int) -> None:
    """A window larger than its token stage's feature map only adds zero padding: refuse it."""
    for cand in space.sample_candidates(64):
        spec = cand.spec
        for i, (stage, side) in enumerate(zip(spec.parsed.stages, spec.feature_map_sides(img))):
            for block in stage:
                if not block.block_type.is_token:
                    continue
                w = block.option("window") or spec.window_size[i]
                if w > side:
                    where = "model.window_size" if not block.option("window") else "search_space"
                    raise ConfigError(
                        f"stage {i + 1} window {w} is larger than its {side}x{side} feature map at img_size {img} "
                        f"(stem stride {spec.stem_stride}); use at most {side}", where)
