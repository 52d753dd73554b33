"""Declarative search spaces: an Optuna trial (or one grid cell) -> a validated ModelSpec.

A space is built from a study file's `search_space:` section on top of a base ModelSpec:

    layout:    pattern families over token stages (the paper's Table 5), optional depths and n_attn
    free:      a free per-layer choice among block texts
    variants:  named alternatives that set block options (the paper's Table 4 mixer rows)
    options:   choices for one option of every block of a symbol, e.g. "M.d_state": [8, 16]
    model:     choices for model settings, e.g. dim: [32, 48]

`candidates()` enumerates a finite space for grid ablations (de-duplicated by architecture hash);
`suggest(trial)` samples one with Optuna's suggest API for TPE/NSGA-II/GP searches.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from blocks.grammar import BlockSpec, Pattern, parse
from blocks.spec import ModelSpec
from hybridlab.errors import ConfigError, HybridlabError
from search_space.families import FAMILIES, get_family, stage_layout

SECTIONS = ("layout", "free", "variants", "options", "model")
LAYOUT_KEYS = ("stages", "family", "per_stage", "n_attn", "depths", "mixer", "attention", "random_seeds")
FREE_KEYS = ("stages", "symbols", "depths")
MODEL_CHOICE_KEYS = ("dim", "in_dim", "mlp_ratio", "drop_path_rate", "layer_scale", "num_heads", "window_size", "dims", "init")


@dataclass(frozen=True)
class Candidate:
    """One architecture of the space: the spec, its row label and family, and the choices that made it."""

    spec: ModelSpec
    params: dict[str, Any]
    label: str
    family: str

    is_baseline = False

    @property
    def arch_hash(self) -> str:
        return self.spec.arch_hash()

    @property
    def pattern(self) -> str:
        return self.spec.pattern

    def settings(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def build(self):
        return self.spec.build()

    def measure_target(self) -> tuple[Any, dict[str, Any]]:
        return self.spec, {}


@dataclass
class Dimension:
    """One named choice. `when` makes it conditional on another dimension's value."""

    name: str
    choices: list[Any]
    when: tuple[str, tuple[Any, ...]] | None = None

    def active(self, params: Mapping[str, Any]) -> bool:
        return self.when is None or params.get(self.when[0]) in self.when[1]


@dataclass
class SearchSpace:
    """The parsed `search_space:` section over a base model."""

    base: ModelSpec
    dimensions: list[Dimension] = field(default_factory=list)
    layout: dict[str, Any] | None = None
    free: dict[str, Any] | None = None
    variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    variants_name: str = "variant"

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, base: ModelSpec) -> SearchSpace:
        """Validate the section; every problem is a ConfigError naming its key."""
        config = dict(config or {})
        _unknown(config, SECTIONS, "search_space")
        space = cls(base=base)
        if "layout" in config and "free" in config:
            raise ConfigError("use either 'layout' or 'free', not both", "search_space")
        if config.get("layout") is not None:
            space._add_layout(_mapping(config["layout"], "search_space.layout"))
        if config.get("free") is not None:
            space._add_free(_mapping(config["free"], "search_space.free"))
        if config.get("variants") is not None:
            space._add_variants(_mapping(config["variants"], "search_space.variants"))
        if config.get("options") is not None:
            space._add_options(_mapping(config["options"], "search_space.options"))
        if config.get("model") is not None:
            space._add_model(_mapping(config["model"], "search_space.model"))
        space._check_all_buildable()
        return space

    def _stage_list(self, raw: Any, where: str) -> list[int]:
        n = self.base.parsed.num_stages
        stages = raw if isinstance(raw, list) else [raw]
        out = []
        for s in stages:
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= n:
                raise ConfigError(f"stage numbers are 1..{n} (the base pattern has {n} stages), got {s!r}", where)
            out.append(s)
        if len(set(out)) != len(out):
            raise ConfigError("a stage is listed twice", where)
        return out

    def _depth_choices(self, raw: Any, stages: list[int], where: str) -> dict[int, list[int]]:
        raw = _mapping(raw or {}, where)
        out = {}
        for key, value in raw.items():
            stage = int(key) if str(key).isdigit() else key
            if stage not in stages:
                raise ConfigError(f"stage {key!r} is not one of the searched stages {stages}", where)
            out[stage] = _int_choices(value, f"{where}.{key}", minimum=1)
        return out

    def _add_layout(self, cfg: dict[str, Any]) -> None:
        where = "search_space.layout"
        _unknown(cfg, LAYOUT_KEYS, where)
        stages = self._stage_list(cfg.get("stages", [self.base.parsed.num_stages]), f"{where}.stages")
        families = _choices(cfg.get("family", "attn_last_half"), f"{where}.family")
        for name in families:
            get_family(str(name), f"{where}.family")
        per_stage = cfg.get("per_stage", False)
        if not isinstance(per_stage, bool):
            raise ConfigError(f"expected true or false, got {per_stage!r}", f"{where}.per_stage")
        n_attn = None if cfg.get("n_attn") is None else _int_choices(cfg["n_attn"], f"{where}.n_attn", minimum=0)
        seeds = _int_choices(cfg.get("random_seeds", [0]), f"{where}.random_seeds", minimum=0)
        mixer = self._block_text(cfg.get("mixer", "M"), f"{where}.mixer")
        attention = self._block_text(cfg.get("attention", "A"), f"{where}.attention")
        depths = self._depth_choices(cfg.get("depths"), stages, f"{where}.depths")
        self.layout = {"stages": stages, "per_stage": per_stage, "mixer": mixer, "attention": attention}
        family_keys = [f"family_s{s}" for s in stages] if per_stage else ["family"]
        for key in family_keys:
            self.dimensions.append(Dimension(key, list(families)))
        for s in stages:
            if s in depths:
                self.dimensions.append(Dimension(f"depth_s{s}", depths[s]))
        takes_n = tuple(f for f in families if FAMILIES[f].takes_n_attn)
        if n_attn is not None and takes_n:
            for key in family_keys:
                suffix = "" if key == "family" else key[len("family"):]
                self.dimensions.append(Dimension(f"n_attn{suffix}", n_attn, when=(key, takes_n)))
        if "random" in families:
            for key in family_keys:
                suffix = "" if key == "family" else key[len("family"):]
                self.dimensions.append(Dimension(f"layout_seed{suffix}", seeds, when=(key, ("random",))))

    def _add_free(self, cfg: dict[str, Any]) -> None:
        where = "search_space.free"
        _unknown(cfg, FREE_KEYS, where)
        stages = self._stage_list(cfg.get("stages", [self.base.parsed.num_stages]), f"{where}.stages")
        symbols = [self._block_text(s, f"{where}.symbols") for s in _choices(cfg.get("symbols", ["M", "A"]), f"{where}.symbols")]
        fixed_depths = _mapping(cfg.get("depths") or {}, f"{where}.depths")
        self.free = {"stages": stages, "symbols": symbols}
        for s in stages:
            raw = fixed_depths.get(s, fixed_depths.get(str(s)))
            depth = self.base.parsed.depths[s - 1] if raw is None else _int_choices(raw, f"{where}.depths.{s}", 1)
            if isinstance(depth, list):
                if len(depth) != 1:
                    raise ConfigError("free layouts take one fixed depth per stage", f"{where}.depths.{s}")
                depth = depth[0]
            for i in range(depth):
                self.dimensions.append(Dimension(f"s{s}_b{i}", list(symbols)))

    def _add_variants(self, cfg: dict[str, Any]) -> None:
        where = "search_space.variants"
        _unknown(cfg, ("name", "choices"), where)
        self.variants_name = str(cfg.get("name", "variant"))
        if not self.variants_name.isidentifier():
            raise ConfigError(f"variant name {self.variants_name!r} must be an identifier", f"{where}.name")
        choices = _mapping(cfg.get("choices"), f"{where}.choices")
        if not choices:
            raise ConfigError("needs at least one choice", f"{where}.choices")
        for label, overrides in choices.items():
            overrides = _mapping(overrides or {}, f"{where}.choices.{label}")
            checked: dict[str, dict[str, Any]] = {}
            for symbol, opts in overrides.items():
                checked[str(symbol)] = self._check_options(str(symbol), _mapping(opts or {}, f"{where}.choices.{label}.{symbol}"),
                                                           f"{where}.choices.{label}.{symbol}")
            self.variants[str(label)] = checked
        self.dimensions.append(Dimension(self.variants_name, list(self.variants)))

    def _add_options(self, cfg: dict[str, Any]) -> None:
        for key, values in cfg.items():
            where = f"search_space.options.{key}"
            if not isinstance(key, str) or key.count(".") != 1:
                raise ConfigError("option keys look like SYMBOL.option, e.g. M.d_state", where)
            symbol, name = key.split(".")
            checked = [self._check_options(symbol, {name: v}, where)[name] for v in _choices(values, where)]
            self.dimensions.append(Dimension(key, checked))

    def _add_model(self, cfg: dict[str, Any]) -> None:
        for key, values in cfg.items():
            where = f"search_space.model.{key}"
            if key not in MODEL_CHOICE_KEYS:
                raise ConfigError(f"cannot search over {key!r} (searchable: {', '.join(MODEL_CHOICE_KEYS)})", where)
            choices = values if isinstance(values, list) else [values]
            if not choices:
                raise ConfigError("needs at least one choice", where)
            self.dimensions.append(Dimension(key, [tuple(c) if isinstance(c, list) else c for c in choices]))

    def _block_text(self, text: Any, where: str) -> BlockSpec:
        try:
            pattern = parse(str(text))
        except HybridlabError as exc:
            raise ConfigError(str(exc), where) from None
        if pattern.depths != (1,):
            raise ConfigError(f"expected one block such as 'M' or 'M[d_state=16]', got {text!r}", where)
        return pattern.stages[0][0]

    def _check_options(self, symbol: str, options: Mapping[str, Any], where: str) -> dict[str, Any]:
        block = self._block_text(symbol, where)
        schema = block.block_type.options
        out = {}
        for name, value in options.items():
            if name not in schema:
                raise ConfigError(f"unknown option {name!r} for block {symbol!r} (known: {', '.join(schema)})", where)
            try:
                out[name] = schema[name].coerce(value)
            except ValueError as exc:
                raise ConfigError(f"option {name!r} of block {symbol!r}: {exc}", where) from None
        return out

    def _check_all_buildable(self, limit: int = 4096) -> None:
        """Validate every candidate's spec (cheap: no model is built) so an impossible combination fails
        before any training; huge free spaces are checked on their first `limit` assignments."""
        for params in itertools.islice(self._param_sets(), limit):
            self.candidate(params)

    # -- enumeration and sampling ---------------------------------------------------------------
    @property
    def is_finite(self) -> bool:
        return True  # every dimension is a finite list of choices

    def size(self) -> int:
        """Number of assignments (before de-duplication); counted without enumerating big free spaces."""
        if not any(d.when for d in self.dimensions):
            return math.prod(len(d.choices) for d in self.dimensions)
        return sum(1 for _ in self._param_sets())

    def sample_candidates(self, limit: int) -> list[Candidate]:
        """The first `limit` assignments' candidates: cheap checks on spaces too big to enumerate."""
        return [self.candidate(p) for p in itertools.islice(self._param_sets(), limit)]

    def _param_sets(self) -> Iterator[dict[str, Any]]:
        """Every assignment of the active dimensions (conditional ones only where they apply)."""

        def expand(i: int, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
            if i == len(self.dimensions):
                yield dict(params)
                return
            dim = self.dimensions[i]
            if not dim.active(params):
                yield from expand(i + 1, params)
                return
            for value in dim.choices:
                params[dim.name] = value
                yield from expand(i + 1, params)
                del params[dim.name]

        yield from expand(0, {})

    def candidates(self) -> list[Candidate]:
        """All distinct architectures, in enumeration order; equal architectures keep the first label."""
        seen: set[str] = set()
        out = []
        for params in self._param_sets():
            cand = self.candidate(params)
            if cand.arch_hash not in seen:
                seen.add(cand.arch_hash)
                out.append(cand)
        return out

    def suggest(self, trial: optuna.Trial) -> Candidate:
        """Sample a candidate with Optuna's suggest API (conditional dimensions only when active)."""
        params: dict[str, Any] = {}
        for dim in self.dimensions:
            if dim.active(params):
                choices = [_storable(c) for c in dim.choices]
                params[dim.name] = _restore(trial.suggest_categorical(dim.name, choices), dim.choices)
        return self.candidate(params)

    # -- params -> spec -------------------------------------------------------------------------
    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        """Build the candidate for one assignment of the dimensions."""
        parsed = self.base.parsed
        stages = [list(stage) for stage in parsed.stages]
        family = ""
        if self.layout is not None:
            families = []
            for s in self.layout["stages"]:
                suffix = f"_s{s}" if self.layout["per_stage"] else ""
                fam = params[f"family{suffix}"]
                families.append(fam)
                depth = params.get(f"depth_s{s}", parsed.depths[s - 1])
                texts = stage_layout(fam, depth, "m", "a", params.get(f"n_attn{suffix}"), params.get(f"layout_seed{suffix}", 0))
                stages[s - 1] = [self.layout["attention"] if t == "a" else self.layout["mixer"] for t in texts]
            family = families[0] if len(set(families)) == 1 else "+".join(families)
        if self.free is not None:
            family = "free"
            for s in self.free["stages"]:
                n = sum(1 for k in params if k.startswith(f"s{s}_b"))
                symbols = {str(b.canonical()): b for b in self.free["symbols"]}
                stages[s - 1] = [symbols[_storable(params[f"s{s}_b{i}"])] for i in range(n)]
        overrides: dict[str, dict[str, Any]] = {}
        if self.variants:
            for symbol, opts in self.variants[params[self.variants_name]].items():
                overrides.setdefault(symbol, {}).update(opts)
        for key, value in params.items():
            if "." in key:
                symbol, name = key.split(".")
                overrides.setdefault(symbol, {})[name] = value
        pattern = Pattern(tuple(tuple(_with_options(b, overrides) for b in stage) for stage in stages))
        settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items() if k in MODEL_CHOICE_KEYS}
        try:
            spec = self.base.with_settings(pattern=pattern.canonical(), **settings)
        except HybridlabError as exc:
            raise ConfigError(f"{exc} (for choices {dict(params)})", "search_space") from None
        label = self._label(params, family)
        return Candidate(spec=spec, params=dict(params), label=label, family=family)

    def _label(self, params: Mapping[str, Any], family: str) -> str:
        parts = []
        if self.layout is not None and family:
            parts.append(family)
        if self.variants:
            parts.append(str(params[self.variants_name]))
        for dim in self.dimensions:
            if ("." in dim.name or dim.name in MODEL_CHOICE_KEYS or dim.name.startswith(("depth_s", "n_attn"))) and dim.name in params:
                if len(dim.choices) > 1:
                    parts.append(f"{dim.name}={_storable(params[dim.name])}")
        return " ".join(parts) or family or "base"


def _with_options(block: BlockSpec, overrides: Mapping[str, Mapping[str, Any]]) -> BlockSpec:
    extra = overrides.get(block.symbol)
    if not extra:
        return block
    defaults = block.block_type.defaults()
    merged = dict(block.options)
    merged.update(extra)
    return BlockSpec(block.symbol, tuple(sorted((k, v) for k, v in merged.items() if v != defaults[k])))


def _storable(value: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: lists become their text."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, BlockSpec):
        return value.canonical()
    return value


def _restore(value: Any, choices: Sequence[Any]) -> Any:
    for choice in choices:
        if _storable(choice) == value:
            return choice
    return value


def _unknown(cfg: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in cfg:
        if key not in known:
            raise ConfigError(f"unknown key {key!r} (known: {', '.join(known)})", f"{where}.{key}")


def _mapping(value: Any, where: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping, got {type(value).__name__}", where)
    return dict(value)


def _choices(value: Any, where: str) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError("needs at least one choice", where)
    if len({str(i) for i in items}) != len(items):
        raise ConfigError("a choice is listed twice", where)
    return items


def _int_choices(value: Any, where: str, minimum: int) -> list[int]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ConfigError(f"expected integers >= {minimum}, got {item!r}", where)
        out.append(item)
    if not out:
        raise ConfigError("needs at least one choice", where)
    return out


__all__ = ["Candidate", "Dimension", "SearchSpace"]
