"""Study files: one YAML file per study, validated as a whole before any training.

Every problem is reported on its own line with the key it concerns (`model.num_heads: ...`), so a
user fixes the file once. `--set key=value` overrides (dotted keys, YAML values) apply before validation.
Each section is checked in `studies.config_sections`; the file is read by `studies.studyfile`.

Top-level settings besides the sections:

    n_trials:     trials to plan for a non-grid sampler (1 .. 100,000)
    max_retries:  how often a FAILED trial is tried again when the study is rerun (default 2, 0 = never)
    progress_every_s: a progress line this often within long epochs, besides one per epoch (default 60; null:
                  epoch lines only)
    strategy:     how the training budget is spent (studies.strategy; absent: every trial at the full budget)
    seeds:        a list of seeds, e.g. [0, 1, 2], or a budget:
                    seeds: auto                        # the defaults below
                    seeds: {auto: {initial: 2, max: 6, budget: 40, confidence: 0.95}}
                  `initial` seeds (0, 1, ...) go to every candidate first; more seeds go only to the
                  candidates whose intervals (at `confidence`) still overlap the front or the default
                  row, up to `max` seeds per candidate and `budget` trials in all (null: no cap).
    train.threads, measure.threads: torch threads while training / measuring (null or auto: torch's choice)

`StudyConfig.to_yaml()` writes a valid study file (the auto-seed settings in full, the storage
password masked), which the runner stores with the results.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blocks.spec import ModelSpec
from hybridlab.errors import ConfigError, HybridlabError
from hybridlab.metrics import Objective, parse_objectives
from hybridlab.urls import mask_password
from search_space.constraints import Constraints
from search_space.space import SearchSpace
from studies import config_sections as sections
from studies import finetune
from studies.baselines import parse_baseline
from studies.config_sections import MAX_GRID, MAX_TRIALS, SAMPLERS, AutoSeeds
from studies.strategy import parse_strategy
from studies.studyfile import (
    BUILTIN_DIR,
    StudyConfigError,
    apply_overrides,
    builtin_studies,
    check_nesting,
    load_raw,
    resolve_study_file,
)

TOP_KEYS = (
    "name", "description", "data", "model", "search_space", "train", "measure", "objectives", "sampler",
    "n_trials", "seeds", "constraints", "storage", "ablation", "devices", "baselines", "imports", "max_retries",
    "progress_every_s", "strategy",
)

MAX_LINE = 500


@dataclass
class StudyConfig:
    """A validated study. `raw` is the YAML mapping after overrides (what gets saved with results)."""

    name: str
    description: str
    data: dict[str, Any]
    model: ModelSpec
    space: SearchSpace
    recipe: Any  # studies.training.TrainRecipe
    measure: dict[str, Any]
    objectives: list[Objective]
    sampler: dict[str, Any]
    n_trials: int | None
    seeds: list[int]
    constraints: Constraints
    storage: str | None
    ablation: dict[str, Any] | None
    devices: int
    baselines: list[Any] = field(default_factory=list)  # studies.baselines.Baseline
    raw: dict[str, Any] = field(default_factory=dict)
    source: str = "<study>"
    max_retries: int = 2
    auto_seeds: AutoSeeds | None = None  # `seeds: auto`: `seeds` is then the first round
    train_threads: int | None = None  # `train.threads`; the measurement's are `measure["threads"]`
    progress_every_s: float | None = 60.0  # a progress line within long epochs this often (None: epoch lines only)
    pretrained: Any = None  # studies.finetune.Pretrained: `model.pretrained` (None: no fine-tuning)
    # `strategy:` (studies.strategy: halving's StrategySettings or one-shot's OneShotSettings); None: every trial
    # trained at the full budget
    strategy: Any = None

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def to_yaml(self) -> str:
        """The study file as validated: a valid study file again, with no storage password in it."""
        out = copy.deepcopy(self.raw)
        if self.auto_seeds is not None:
            out["seeds"] = {"auto": self.auto_seeds.to_dict()}
        if isinstance(out.get("storage"), str):
            out["storage"] = mask_password(out["storage"])
        return yaml.safe_dump(out, sort_keys=False)


def load_study_config(
    name_or_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    raw: Mapping[str, Any] | None = None,
    check_data: bool = True,
) -> StudyConfig:
    """Read, override and validate a study file (or a raw mapping); StudyConfigError lists every problem."""
    if raw is None:
        path = resolve_study_file(None if name_or_path is None else str(name_or_path))
        source = str(path)
        data = load_raw(path)
    else:
        source = str(name_or_path or "<study>")
        if not isinstance(raw, Mapping):
            raise StudyConfigError(source, [f"expected a mapping at the top level, got {type(raw).__name__}"])
        try:
            check_nesting(dict(raw))
        except ConfigError as exc:
            raise StudyConfigError(source, [str(exc)]) from None
        data = copy.deepcopy(dict(raw))
    data = apply_overrides(data, overrides)
    return _validate(data, source, check_data)


def _study_folder(source: str) -> Path:
    """The folder a study file's relative names (`imports:`) are resolved against."""
    path = Path(source)
    return path.parent if path.parent != Path("") else Path.cwd()


def _validate(data: dict[str, Any], source: str, check_data: bool) -> StudyConfig:
    numbers = sections.number_problems(data)
    if numbers:  # NaN, inf, 2^63 and values past their bounds: nothing below should see them
        raise StudyConfigError(source, [str(e) for e in numbers])
    problems: list[str] = []

    def attempt(fn: Callable[[], Any], default: Any = None) -> Any:
        try:
            return fn()
        except StudyConfigError as exc:
            problems.extend(exc.problems)
        except HybridlabError as exc:
            problems.append(str(exc))
        return default

    attempt(lambda: sections.imports(data.get("imports"), _study_folder(source)))  # user blocks before patterns
    for key in data:
        if key not in TOP_KEYS:
            problems.append(f"unknown key {sections.v.short(key)} (known: {', '.join(TOP_KEYS)})")
    name = attempt(lambda: sections.name(data.get("name")), "study")
    description = attempt(lambda: sections.description(data.get("description")), "")
    data_cfg = attempt(lambda: sections.data(data.get("data"), check_data))
    base = attempt(lambda: sections.model(data.get("model"), data_cfg))
    space = attempt(lambda: SearchSpace.from_config(data.get("search_space"), base)) if base else None
    recipe, train_threads = attempt(lambda: sections.train(data.get("train")), (None, None))
    pretrained = attempt(lambda: finetune.parse_pretrained(data.get("model"), check_data))
    if base is not None and recipe is not None:
        attempt(lambda: finetune.check_stages(recipe, base))
    measure = attempt(lambda: sections.measure(data.get("measure"), data_cfg), {})
    objectives = attempt(lambda: parse_objectives(data.get("objectives"), "objectives"), [])
    sampler = attempt(lambda: sections.sampler(data.get("sampler")), {})
    n_trials = attempt(lambda: sections.n_trials(data.get("n_trials")))
    seeds, auto_seeds = attempt(lambda: sections.seeds(data.get("seeds", [0])), ([0], None))
    constraints = attempt(lambda: Constraints.from_config(data.get("constraints")), Constraints())
    storage = attempt(lambda: sections.storage(data.get("storage")))
    ablation = attempt(lambda: sections.ablation(data.get("ablation"), space))
    devices = attempt(lambda: sections.devices(data.get("devices", 1)), 1)
    max_retries = attempt(lambda: sections.max_retries(data.get("max_retries", 2)), 2)
    progress_every_s = attempt(lambda: sections.progress_every_s(data.get("progress_every_s", 60.0)), 60.0)
    entries = attempt(lambda: sections.v.mapping(data.get("baselines"), "baselines"), {}) if base else {}
    baselines = [b for b in (attempt(lambda k=k, e=e: parse_baseline(k, e, base)) for k, e in entries.items()) if b]
    strategy = attempt(lambda: parse_strategy(data.get("strategy"), "strategy"))
    one_shot = getattr(strategy, "name", None) == "one_shot"  # plans its own trials: no n_trials, no grid
    if one_shot and space is not None:
        attempt(lambda: sections.check_strategy(strategy, space, [o.name for o in objectives]))
    if space is not None and sampler.get("name") != "grid" and n_trials is None and not one_shot:
        problems.append("n_trials: required unless the sampler is 'grid'")
    if space is not None and sampler.get("name") == "grid" and space.size() > MAX_GRID and not one_shot:
        problems.append(f"sampler: a grid over {space.size():,} assignments is too big (max {MAX_GRID:,}); "
                        "use tpe, nsga2 or gp")
    if space is not None and data_cfg is not None:
        attempt(lambda: sections.check_windows(space, data_cfg["_img_size"]))
    if space is not None and auto_seeds is not None and sampler.get("name") == "grid":
        attempt(lambda: sections.check_seed_budget(auto_seeds, space, len(entries)))
    if strategy is not None:
        strategy = attempt(lambda: strategy.bind(recipe, data_cfg, space, sampler, auto_seeds), strategy)
    if problems:  # a last guard for values quoted by other layers: no line over MAX_LINE characters
        raise StudyConfigError(source, [p if len(p) <= MAX_LINE else p[: MAX_LINE - 3] + "..." for p in problems])
    return StudyConfig(
        name=name, description=description, data=data_cfg, model=base, space=space, recipe=recipe,
        measure=measure, objectives=objectives, sampler=sampler, n_trials=n_trials, seeds=seeds,
        constraints=constraints, storage=storage, ablation=ablation, devices=devices, baselines=baselines, raw=data,
        source=source, max_retries=max_retries, auto_seeds=auto_seeds, train_threads=train_threads,
        progress_every_s=progress_every_s, pretrained=pretrained, strategy=strategy,
    )


__all__ = [
    "BUILTIN_DIR", "MAX_GRID", "MAX_TRIALS", "SAMPLERS", "TOP_KEYS", "AutoSeeds", "StudyConfig", "StudyConfigError",
    "apply_overrides", "builtin_studies", "load_raw", "load_study_config", "resolve_study_file",
]
