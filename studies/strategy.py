"""A study's `strategy:` section: how it spends its training budget (absent: every trial at the full budget).

    strategy:
      name: halving        # successive halving over rungs of one resource (studies.halving)
      eta: 3               # keep the top 1/eta of each rung (default 3)
      resource: epochs     # epochs (default) | train_subset | img_size
      rungs: [1, 3, 9]     # the budget of each rung in `resource` units; the last is the full budget
      # or: min_budget: 1  # rungs full/eta^k down to min_budget (default: full/eta^2, at least 1)

`parse_strategy(raw, where)` checks the section on its own; `StrategySettings.bind(recipe, data)` then checks it
against the rest of the study file (the full budget is `train.epochs`, `data.train_subset` or the data's image
size) and fills in derived values. Every problem is one ConfigError line naming the key. Strategies register
their parser in `PARSERS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from hybridlab import validate as v
from hybridlab.errors import ConfigError

RESOURCES = ("epochs", "train_subset", "img_size")
HALVING_KEYS = ("name", "eta", "resource", "rungs", "min_budget")
MAX_RUNGS = 12
MAX_ETA = 1_000


@dataclass(frozen=True)
class StrategySettings:
    """A validated `strategy:` section; `name` says which strategy runs the study."""

    name: str

    def bind(self, recipe: Any, data: Mapping[str, Any] | None, space: Any = None, sampler: Mapping[str, Any] | None = None,
             auto_seeds: Any = None) -> StrategySettings:
        """Checked against the rest of the study file: its recipe, data, search space, sampler and seeds (None where
        that section is itself invalid); returns the settings with derived values filled in."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class HalvingSettings(StrategySettings):
    """Successive halving: rung k trains to `rungs[k]` units of `resource`; the top 1/`eta` go on."""

    eta: int = 3
    resource: str = "epochs"
    rungs: tuple[int, ...] | None = None  # None until bound when derived from `min_budget`
    min_budget: int | None = None

    @property
    def last(self) -> int:
        """The index of the last rung (the full budget)."""
        return len(self.rungs or ()) - 1

    def bind(self, recipe: Any, data: Mapping[str, Any] | None, space: Any = None, sampler: Mapping[str, Any] | None = None,
             auto_seeds: Any = None) -> HalvingSettings:
        if sampler and sampler.get("name") != "grid":
            raise ConfigError(f"halving promotes within a planned grid: needs sampler grid, got {sampler.get('name')}",
                              "strategy")
        if auto_seeds is not None:
            raise ConfigError("halving needs a list of seeds (every promoted architecture continues with each), "
                              "not seeds: auto", "strategy")
        full, key = full_budget(self.resource, recipe, data)
        if full is None:
            return self
        bound = self
        if self.rungs is None:
            rungs = derive_rungs(full, self.eta, self.min_budget)
            if len(rungs) < 2:
                raise ConfigError(f"{key} = {full} leaves no lower rung at eta {self.eta}"
                                  f"{f' and min_budget {self.min_budget}' if self.min_budget else ''}; "
                                  "give a larger budget, a smaller eta or explicit rungs", "strategy")
            bound = replace(self, rungs=rungs)
        elif self.rungs[-1] != full:
            raise ConfigError(f"the last rung must be the full budget {key} = {full}, got {self.rungs[-1]}",
                              "strategy.rungs")
        if self.resource == "img_size" and space is not None:
            from studies.config_sections import check_windows

            for i, size in enumerate(bound.rungs or ()):
                try:
                    check_windows(space, size)
                except ConfigError as exc:
                    raise ConfigError(exc.reason, f"strategy.rungs[{i}]") from None
        return bound

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "eta": self.eta, "resource": self.resource}
        if self.rungs is not None:
            out["rungs"] = list(self.rungs)
        else:
            out["min_budget"] = self.min_budget
        return out

    def describe(self) -> str:
        rungs = "/".join(str(r) for r in self.rungs) if self.rungs else f"from min_budget {self.min_budget}"
        return f"halving (eta {self.eta}, {self.resource} rungs {rungs})"


def full_budget(resource: str, recipe: Any, data: Mapping[str, Any] | None) -> tuple[int | None, str]:
    """The full budget of `resource` in this study, and the key it comes from (None: not known yet)."""
    if resource == "epochs":
        return (int(recipe.epochs) if recipe is not None else None), "train.epochs"
    if data is None:
        return None, f"data.{resource}"
    if resource == "train_subset":
        if data.get("train_subset") is None:
            raise ConfigError("resource train_subset needs data.train_subset (the full budget)", "strategy.resource")
        return int(data["train_subset"]), "data.train_subset"
    return int(data.get("img_size") or data["_img_size"]), "data.img_size"


def derive_rungs(full: int, eta: int, min_budget: int | None = None) -> tuple[int, ...]:
    """full/eta^k for k = K..0, rounded, K as large as keeps the smallest at least `min_budget`
    (default: full/eta^2, at least 1)."""
    floor = max(1, min_budget if min_budget is not None else full // eta**2)
    steps = 0
    while full / eta ** (steps + 1) >= floor and steps + 1 < MAX_RUNGS:
        steps += 1
    out: list[int] = []
    for k in range(steps, -1, -1):
        value = max(floor, round(full / eta**k))
        if not out or value > out[-1]:
            out.append(value)
    return tuple(out)


def parse_halving(raw: Mapping[str, Any], where: str) -> HalvingSettings:
    v.unknown_keys(raw, HALVING_KEYS, where)
    eta = v.integer(raw.get("eta", 3), f"{where}.eta", 2, MAX_ETA)
    resource = v.choice(raw.get("resource", "epochs"), RESOURCES, f"{where}.resource", "resource")
    if "rungs" in raw and raw.get("min_budget") is not None:
        raise ConfigError("give rungs or min_budget, not both", where)
    rungs = None
    if "rungs" in raw:
        low = 4 if resource == "img_size" else 1
        rungs = tuple(v.list_of(raw["rungs"], lambda x, at: v.integer(x, at, low, 100_000_000), f"{where}.rungs",
                                min_len=2, max_len=MAX_RUNGS, wrap_scalar=False))
        for i, (a, b) in enumerate(zip(rungs, rungs[1:])):
            if b <= a:
                raise ConfigError(f"rungs must increase, got {b} after {a}", f"{where}.rungs[{i + 1}]")
    min_budget = v.optional_integer(raw.get("min_budget"), f"{where}.min_budget", 1, 100_000_000)
    return HalvingSettings("halving", eta=eta, resource=resource, rungs=rungs, min_budget=min_budget)


def parse_one_shot(cfg: Mapping[str, Any], where: str) -> Any:
    """`name: one_shot`: a weight-sharing supernet search (studies.one_shot_config)."""
    from studies.one_shot_config import parse_one_shot as parse

    return parse(cfg, where)


PARSERS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {"halving": parse_halving, "one_shot": parse_one_shot}


def parse_strategy(raw: Any, where: str = "strategy") -> StrategySettings | None:
    """The `strategy:` section (None when absent: every trial trains to the full budget)."""
    if raw is None:
        return None
    cfg = {"name": raw} if isinstance(raw, str) else v.mapping(raw, where)
    if "name" not in cfg:
        raise ConfigError(f"missing 'name' (strategies: {', '.join(PARSERS)})", f"{where}.name")
    name = v.choice(cfg["name"], tuple(PARSERS), f"{where}.name", "strategy")
    return PARSERS[name](cfg, where)


def budget_fraction(settings: HalvingSettings, architectures: int) -> float:
    """The share of the full grid's budget (in resource units) that halving spends on `architectures`: a rung over
    epochs continues its parent, so it costs only the epochs it adds; the other resources start each rung anew."""
    if not settings.rungs or architectures <= 0:
        return math.nan
    n, spent, before = architectures, 0, 0
    for budget in settings.rungs:
        spent += n * (budget - before)
        before = budget if settings.resource == "epochs" else 0
        n = -(-n // settings.eta)
    return spent / (architectures * settings.rungs[-1])
