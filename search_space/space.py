"""Declarative search spaces: an Optuna trial (or one grid cell) -> a validated ModelSpec.

A space is built from a study file's `search_space:` section on top of a base ModelSpec:

    layout:    pattern families over token stages (the paper's Table 5), optional depths and n_attn, and
               one mixer block or a list of them (then `mixer` is a dimension; labels read `family/mixer`)
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

from blocks.grammar import BlockSpec, Pattern
from blocks.spec import ModelSpec
from hybridlab.errors import ConfigError, HybridlabError
from search_space.families import stage_layout
from search_space.sections import MIXER_DIMENSION, MODEL_CHOICE_KEYS, Dimension, read_sections


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
        """Validate the section (see `search_space.sections`); every problem is a ConfigError naming its key."""
        sections = read_sections(config, base)
        space = cls(base=base, dimensions=sections.dimensions, layout=sections.layout, free=sections.free,
                    variants=sections.variants, variants_name=sections.variants_name)
        space._check_all_buildable()
        return space

    def _check_all_buildable(self, limit: int = 4096, sample: int = 256) -> None:
        """Validate every candidate's spec (no model is built) so an impossible combination fails before any
        training. Spaces over `limit` assignments are checked on their first `sample` assignments plus one
        assignment per choice index (every choice of every dimension is then used at least once)."""
        if self.size() <= limit:
            for params in self._param_sets():
                self.candidate(params)
            return
        for params in itertools.islice(self._param_sets(), sample):
            self.candidate(params)
        for k in range(max(len(d.choices) for d in self.dimensions)):
            params: dict[str, Any] = {}
            for dim in self.dimensions:
                if dim.active(params):
                    params[dim.name] = dim.choices[k % len(dim.choices)]
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
                choices = [storable(c) for c in dim.choices]
                params[dim.name] = _restore(trial.suggest_categorical(dim.name, choices), dim.choices)
        return self.candidate(params)

    # -- params -> spec -------------------------------------------------------------------------
    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        """Build the candidate for one assignment of the dimensions."""
        parsed = self.base.parsed
        stages = [list(stage) for stage in parsed.stages]
        family = ""
        if self.layout is not None:
            mixer = params.get(MIXER_DIMENSION, self.layout["mixer"]) if self._mixer_is_searched() else self.layout["mixer"]
            families = []
            for s in self.layout["stages"]:
                suffix = f"_s{s}" if self.layout["per_stage"] else ""
                fam = params[f"family{suffix}"]
                families.append(fam)
                depth = params.get(f"depth_s{s}", parsed.depths[s - 1])
                texts = stage_layout(fam, depth, "m", "a", params.get(f"n_attn{suffix}"), params.get(f"layout_seed{suffix}", 0))
                stages[s - 1] = [self.layout["attention"] if t == "a" else mixer for t in texts]
            family = families[0] if len(set(families)) == 1 else "+".join(families)
        if self.free is not None:
            family = "free"
            for s in self.free["stages"]:
                n = sum(1 for k in params if k.startswith(f"s{s}_b"))
                symbols = {str(b.canonical()): b for b in self.free["symbols"]}
                stages[s - 1] = [symbols[storable(params[f"s{s}_b{i}"])] for i in range(n)]
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

    def _mixer_is_searched(self) -> bool:
        return self.layout is not None and bool(self.layout.get("mixer_searched"))

    def _label(self, params: Mapping[str, Any], family: str) -> str:
        parts = []
        if self.layout is not None and family:
            mixer = params.get(MIXER_DIMENSION) if self._mixer_is_searched() else None
            parts.append(f"{family}/{storable(mixer)}" if mixer is not None else family)
        if self.variants:
            parts.append(str(params[self.variants_name]))
        for dim in self.dimensions:
            if ("." in dim.name or dim.name in MODEL_CHOICE_KEYS or dim.name.startswith(("depth_s", "n_attn"))) and dim.name in params:
                if len(dim.choices) > 1:
                    parts.append(f"{dim.name}={storable(params[dim.name])}")
        return " ".join(parts) or family or "base"


def _with_options(block: BlockSpec, overrides: Mapping[str, Mapping[str, Any]]) -> BlockSpec:
    extra = overrides.get(block.symbol)
    if not extra:
        return block
    defaults = block.block_type.defaults()
    merged = dict(block.options)
    merged.update(extra)
    return BlockSpec(block.symbol, tuple(sorted((k, v) for k, v in merged.items() if v != defaults[k])))


def storable(value: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: lists become their text."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, BlockSpec):
        return value.canonical()
    return value


def _restore(value: Any, choices: Sequence[Any]) -> Any:
    for choice in choices:
        if storable(choice) == value:
            return choice
    return value


__all__ = ["MODEL_CHOICE_KEYS", "Candidate", "Dimension", "SearchSpace"]
