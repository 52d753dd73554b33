"""The `strategy: one_shot` settings of a study file, and the supernet layout its `free:` space describes.

    strategy:
      name: one_shot
      sampling: uniform        # uniform | fair | sandwich (blocks.path_sampling)
      share: true              # choices of a position share norms, MLP and layer scales
      epochs: 8                # supernet epochs (default: train.epochs)
      calib_batches: 8         # training batches that recalibrate the final norm per layout
      score_subset: null       # validation images each layout is scored on (null: all)
      search: auto             # auto (exhaustive up to 10,000 layouts) | exhaustive | evolution
      evolution: {population: 64, generations: 20}
      retrain_top: 5           # stand-alone trainings of the top of the predicted front
      retrain: [attn_last_half, "C | C*3 | M*4 A*4 | A*4"]   # named layouts, also trained stand-alone

Only `free:` search spaces qualify: every block of the searched stages is one of the symbols, and
nothing else varies (no model dimensions, layout families, variants or options), because a supernet
shares one set of fixed parts. A family name in `retrain` places the space's last symbol as attention
and its first as the mixer in every searched stage (`search_space.families.stage_layout`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from blocks.spec import ModelSpec
from hybridlab import validate as v
from hybridlab.errors import ConfigError
from search_space.families import FAMILIES, TABLE5, stage_layout
from search_space.space import SearchSpace

NAME = "one_shot"
KEYS = ("name", "sampling", "share", "epochs", "calib_batches", "score_subset", "search", "evolution",
        "retrain_top", "retrain")
SEARCHES = ("auto", "exhaustive", "evolution")
SAMPLINGS = ("uniform", "fair", "sandwich")
MAX_EXHAUSTIVE = 10_000  # `search: auto` scores every layout up to this many
# what a supernet score can fill in for each objective (the others need a stand-alone measurement)
SCORED_OBJECTIVES = ("top1", "val_loss", "params", "throughput_img_s")
_FREE_DIM = re.compile(r"s(\d+)_b(\d+)")


@dataclass(frozen=True)
class OneShotSettings:
    """The validated `strategy:` mapping of a one-shot study; `retrain` holds family names or patterns."""

    name: str = NAME
    sampling: str = "uniform"
    share: bool = True
    epochs: int | None = None  # None: the recipe's epochs
    calib_batches: int = 8
    score_subset: int | None = None
    search: str = "auto"
    population: int = 64
    generations: int = 20
    retrain_top: int = 5
    retrain: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sampling": self.sampling, "share": self.share, "epochs": self.epochs,
                "calib_batches": self.calib_batches, "score_subset": self.score_subset, "search": self.search,
                "evolution": {"population": self.population, "generations": self.generations},
                "retrain_top": self.retrain_top, "retrain": list(self.retrain)}

    def bind(self, recipe: Any, data: Any, space: Any = None, sampler: Any = None, auto_seeds: Any = None) -> OneShotSettings:
        """Nothing to derive from the rest of the study file (`check_study` checks the space and objectives)."""
        return self

    def describe(self) -> str:
        return f"one_shot ({self.sampling} sampling, retrain top {self.retrain_top} + {len(self.retrain)} named)"

    def exhaustive(self, num_layouts: int) -> bool:
        """Whether every layout is scored (else an evolutionary search scores what it visits)."""
        return self.search == "exhaustive" or (self.search == "auto" and num_layouts <= MAX_EXHAUSTIVE)


def parse_one_shot(raw: Any, where: str = "strategy") -> OneShotSettings:
    """Check the `strategy:` mapping of a one-shot study; the first problem is a one-line ConfigError."""
    cfg = v.mapping(raw, where)
    v.unknown_keys(cfg, KEYS, where)
    v.choice(cfg.get("name", NAME), (NAME,), f"{where}.name", "strategy")
    sampling = v.choice(cfg.get("sampling", "uniform"), SAMPLINGS, f"{where}.sampling", "sampling")
    share = v.boolean(cfg.get("share", True), f"{where}.share")
    epochs = v.optional_integer(cfg.get("epochs"), f"{where}.epochs", 1, 100_000)
    calib = v.integer(cfg.get("calib_batches", 8), f"{where}.calib_batches", 0, 100_000)
    subset = v.optional_integer(cfg.get("score_subset"), f"{where}.score_subset", 1, 100_000_000)
    search = v.choice(cfg.get("search", "auto"), SEARCHES, f"{where}.search", "search")
    evo = v.mapping(cfg.get("evolution"), f"{where}.evolution")
    v.unknown_keys(evo, ("population", "generations"), f"{where}.evolution")
    population = v.integer(evo.get("population", 64), f"{where}.evolution.population", 4, 100_000)
    generations = v.integer(evo.get("generations", 20), f"{where}.evolution.generations", 1, 100_000)
    top = v.integer(cfg.get("retrain_top", 5), f"{where}.retrain_top", 0, 1_000)
    named = cfg.get("retrain", [])
    retrain = v.list_of(named, lambda x, at: v.text(x, at, max_len=2_000), f"{where}.retrain", min_len=0,
                        max_len=1_000, unique=True) if named is not None else []
    return OneShotSettings(NAME, sampling, share, epochs, calib, subset, search, population, generations, top,
                           tuple(retrain))


@dataclass(frozen=True)
class SupernetLayout:
    """What the supernet is built from: the base model (first symbol everywhere), positions and choices."""

    base: ModelSpec
    positions: tuple[tuple[int, int], ...]  # 0-based (stage, block), network order
    choices: tuple[str, ...]  # canonical block texts

    @property
    def num_layouts(self) -> int:
        return len(self.choices) ** len(self.positions)

    def params_of(self, path: tuple[int, ...]) -> dict[str, str]:
        """The search-space parameters (`s3_b0: M`, ...) of a path: what a stand-alone trial is queued with."""
        return {f"s{s + 1}_b{j}": self.choices[c] for (s, j), c in zip(self.positions, path, strict=True)}

    def family_pattern(self, family: str) -> str:
        """The pattern of a Table 5 style family in every searched stage (mixer: first symbol, attention: last)."""
        from blocks.grammar import parse

        stages = [[b.canonical() for b in stage] for stage in self.base.parsed.stages]
        for s in sorted({s for s, _ in self.positions}):
            stages[s] = stage_layout(family, len(stages[s]), self.choices[0], self.choices[-1])
        return parse(" | ".join(" ".join(stage) for stage in stages)).canonical()


def supernet_layout(space: SearchSpace, where: str = "strategy") -> SupernetLayout:
    """The supernet of a `free:` space; a one-line ConfigError says why another kind of space cannot be one."""
    if space.free is None:
        kind = "layout families" if space.layout is not None else "no free layout"
        raise ConfigError(f"one_shot needs a 'search_space.free' space (every searched block one of the symbols), "
                          f"this one has {kind}", where)
    if space.variants:
        raise ConfigError("one_shot cannot search 'variants' (a supernet shares one set of block options); "
                          "list the variants as free symbols instead", where)
    others = [d.name for d in space.dimensions if not _FREE_DIM.fullmatch(d.name)]
    if others:
        raise ConfigError(f"one_shot searches block choices only, not {', '.join(others[:4])} (a supernet has one "
                          "width and one set of block options); fix them in 'model' or run them as separate studies",
                          where)
    symbols = [b.canonical() for b in space.free["symbols"]]
    if len(symbols) < 2:
        raise ConfigError("one_shot needs at least two symbols in search_space.free.symbols", where)
    first = {d.name: d.choices[0] for d in space.dimensions}
    base = space.candidate(first).spec
    positions = tuple(sorted((int(m[1]) - 1, int(m[2])) for m in (_FREE_DIM.fullmatch(d.name) for d in space.dimensions)))
    return SupernetLayout(base, positions, tuple(symbols))


def retrain_patterns(layout: SupernetLayout, names: tuple[str, ...], where: str = "strategy.retrain") -> dict[str, str]:
    """`{label: pattern}` for the named layouts: family names become their pattern, patterns stay."""
    from blocks.grammar import PatternError, parse

    out: dict[str, str] = {}
    for i, name in enumerate(names):
        at = f"{where}[{i}]"
        if name in FAMILIES:
            out[name] = layout.family_pattern(name)
            continue
        try:
            pattern = parse(name)
        except PatternError as exc:
            known = ", ".join(TABLE5)
            raise ConfigError(f"{v.short(name, 60)} is neither a family ({known}, ...) nor a pattern: {exc}", at) from None
        check_in_space(layout, pattern.canonical(), at)
        out[pattern.canonical()] = pattern.canonical()
    return out


def check_in_space(layout: SupernetLayout, pattern: str, where: str) -> tuple[int, ...]:
    """The path of a pattern in the supernet; a one-line ConfigError when the space does not hold it."""
    from blocks.grammar import parse

    parsed = parse(pattern)
    base = layout.base.parsed
    if parsed.depths != base.depths:
        raise ConfigError(f"depths {list(parsed.depths)} differ from the searched model's {list(base.depths)}", where)
    searched = set(layout.positions)
    path = []
    for s, stage in enumerate(parsed.stages):
        for j, block in enumerate(stage):
            text = block.canonical()
            if (s, j) in searched:
                if text not in layout.choices:
                    raise ConfigError(f"stage {s + 1} block {j + 1} is {text}, not one of {list(layout.choices)}", where)
                path.append(layout.choices.index(text))
            elif block != base.stages[s][j]:
                raise ConfigError(f"stage {s + 1} block {j + 1} is {text}, but the search fixes it to "
                                  f"{base.stages[s][j].canonical()}", where)
    return tuple(path)


def check_objectives(names: list[str], where: str = "objectives") -> None:
    """A supernet row needs a value for every objective: only the ones a score (or prediction) gives."""
    bad = [n for n in names if n not in SCORED_OBJECTIVES]
    if bad:
        raise ConfigError(f"one_shot scores {', '.join(SCORED_OBJECTIVES)} per layout, not {', '.join(bad)}", where)


def check_study(settings: OneShotSettings, space: SearchSpace, objectives: list[str]) -> SupernetLayout:
    """Cross-checks once the whole study file is read: the space, the named layouts and the objectives."""
    layout = supernet_layout(space)
    retrain_patterns(layout, settings.retrain)
    check_objectives(objectives)
    return layout


__all__ = ["NAME", "OneShotSettings", "SupernetLayout", "check_in_space", "check_objectives", "check_study",
           "parse_one_shot", "retrain_patterns", "supernet_layout"]
