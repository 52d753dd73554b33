"""Reading a study file's `search_space:` section into dimensions (named finite choices).

Sections (each optional): `layout` (pattern families over token stages; `mixer` one block text, or a list
of them, which makes the mixer a dimension `mixer`), `free` (a per-layer choice
among block texts), `variants` (named block-option sets), `options` (choices for one option of a
symbol, `"M.d_state": [8, 16]`) and `model` (choices for model settings). Every problem is a one-line
ConfigError naming its key; `search_space.space.SearchSpace` turns the dimensions into candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blocks.grammar import BlockSpec, parse
from blocks.spec import ModelSpec
from hybridlab import validate as v
from hybridlab.errors import ConfigError, HybridlabError
from search_space.families import FAMILIES, get_family

SECTIONS = ("layout", "free", "variants", "options", "model")
LAYOUT_KEYS = ("stages", "family", "per_stage", "n_attn", "depths", "mixer", "attention", "random_seeds")
FREE_KEYS = ("stages", "symbols", "depths")
MODEL_CHOICE_KEYS = ("dim", "in_dim", "mlp_ratio", "drop_path_rate", "layer_scale", "num_heads", "window_size", "dims", "init")
MIXER_DIMENSION = "mixer"  # the layout's mixer when `layout.mixer` lists several blocks
MAX_CHOICES = 1024  # per dimension: a grid over more is never meant
MAX_DEPTH = 64  # blocks per searched stage


@dataclass
class Dimension:
    """One named choice. `when` makes it conditional on another dimension's value."""

    name: str
    choices: list[Any]
    when: tuple[str, tuple[Any, ...]] | None = None

    def active(self, params: Mapping[str, Any]) -> bool:
        return self.when is None or params.get(self.when[0]) in self.when[1]


@dataclass
class Sections:
    """What the section says: the dimensions, plus the layout / free / variants rules that use them."""

    dimensions: list[Dimension] = field(default_factory=list)
    layout: dict[str, Any] | None = None
    free: dict[str, Any] | None = None
    variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    variants_name: str = "variant"


def read_sections(config: Any, base: ModelSpec) -> Sections:
    """Validate the `search_space:` mapping over `base`; the first problem raises a ConfigError."""
    config = v.mapping(config, "search_space")
    v.unknown_keys(config, SECTIONS, "search_space")
    if config.get("layout") is not None and config.get("free") is not None:
        raise ConfigError("use either 'layout' or 'free', not both", "search_space")
    reader = _Reader(base)
    for name in SECTIONS:
        if config.get(name) is not None:
            getattr(reader, name)(v.mapping(config[name], f"search_space.{name}"))
    return reader.out


class _Reader:
    def __init__(self, base: ModelSpec) -> None:
        self.base = base
        self.out = Sections()

    def add(self, name: str, choices: list[Any], when: tuple[str, tuple[Any, ...]] | None = None) -> None:
        self.out.dimensions.append(Dimension(name, choices, when))

    def stage_list(self, raw: Any, where: str) -> list[int]:
        n = self.base.parsed.num_stages

        def stage(s: Any, at: str) -> int:
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= n:
                raise ConfigError(f"stage numbers are 1..{n} (the base pattern has {n} stages), got {v.short(s)}", where)
            return s

        out = v.list_of(raw, stage, where)
        if len(set(out)) != len(out):
            raise ConfigError("a stage is listed twice", where)
        return out

    def depth_choices(self, raw: Any, stages: list[int], where: str) -> dict[int, list[int]]:
        out = {}
        for key, value in v.mapping(raw, where).items():
            stage = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) < 4 else key
            if stage not in stages:
                raise ConfigError(f"stage {v.short(key)} is not one of the searched stages {stages}", where)
            out[stage] = int_choices(value, f"{where}.{key}", 1, MAX_DEPTH)
        return out

    def layout(self, cfg: dict[str, Any]) -> None:
        where = "search_space.layout"
        v.unknown_keys(cfg, LAYOUT_KEYS, where)
        stages = self.stage_list(cfg.get("stages", [self.base.parsed.num_stages]), f"{where}.stages")
        families = choices(cfg.get("family", "attn_last_half"), f"{where}.family")
        for name in families:
            if not isinstance(name, str):
                raise ConfigError(f"expected a family name, got {v.short(name)}", f"{where}.family")
            get_family(name, f"{where}.family")
        per_stage = v.boolean(cfg.get("per_stage", False), f"{where}.per_stage")
        n_attn = None if cfg.get("n_attn") is None else int_choices(cfg["n_attn"], f"{where}.n_attn", 0, MAX_DEPTH)
        seeds = int_choices(cfg.get("random_seeds", [0]), f"{where}.random_seeds", 0, 2**32 - 1)
        raw_mixer = cfg.get("mixer", "M")
        mixers = mixer_choices(raw_mixer, f"{where}.mixer") if isinstance(raw_mixer, list) else None
        mixer = mixers[0] if mixers else block_text(raw_mixer, f"{where}.mixer")
        attention = block_text(cfg.get("attention", "A"), f"{where}.attention")
        depths = self.depth_choices(cfg.get("depths"), stages, f"{where}.depths")
        self.out.layout = {"stages": stages, "per_stage": per_stage, "mixer": mixer, "attention": attention,
                           "mixer_searched": mixers is not None}
        family_keys = [f"family_s{s}" for s in stages] if per_stage else ["family"]
        for key in family_keys:
            self.add(key, list(families))
        if mixers is not None:
            self.add(MIXER_DIMENSION, mixers)
        for s in stages:
            if s in depths:
                self.add(f"depth_s{s}", depths[s])
        takes_n = tuple(f for f in families if FAMILIES[f].takes_n_attn)
        for key in family_keys:
            suffix = "" if key == "family" else key[len("family"):]
            if n_attn is not None and takes_n:
                self.add(f"n_attn{suffix}", n_attn, when=(key, takes_n))
            if "random" in families:
                self.add(f"layout_seed{suffix}", seeds, when=(key, ("random",)))

    def free(self, cfg: dict[str, Any]) -> None:
        where = "search_space.free"
        v.unknown_keys(cfg, FREE_KEYS, where)
        stages = self.stage_list(cfg.get("stages", [self.base.parsed.num_stages]), f"{where}.stages")
        symbols = [block_text(s, f"{where}.symbols") for s in choices(cfg.get("symbols", ["M", "A"]), f"{where}.symbols")]
        fixed_depths = v.mapping(cfg.get("depths"), f"{where}.depths")
        self.out.free = {"stages": stages, "symbols": symbols}
        for s in stages:
            raw = fixed_depths.get(s, fixed_depths.get(str(s)))
            depth = self.base.parsed.depths[s - 1]
            if raw is not None:
                depths = int_choices(raw, f"{where}.depths.{s}", 1, MAX_DEPTH)
                if len(depths) != 1:
                    raise ConfigError("free layouts take one fixed depth per stage", f"{where}.depths.{s}")
                depth = depths[0]
            for i in range(depth):
                self.add(f"s{s}_b{i}", list(symbols))

    def variants(self, cfg: dict[str, Any]) -> None:
        where = "search_space.variants"
        v.unknown_keys(cfg, ("name", "choices"), where)
        name = v.text(cfg.get("name", "variant"), f"{where}.name")
        if not name.isidentifier():
            raise ConfigError(f"variant name {v.short(name)} must be an identifier", f"{where}.name")
        if any(d.name == name for d in self.out.dimensions):
            raise ConfigError(f"variant name {v.short(name)} is already a dimension of the layout", f"{where}.name")
        self.out.variants_name = name
        table = v.mapping(cfg.get("choices"), f"{where}.choices")
        if not table:
            raise ConfigError("needs at least one choice", f"{where}.choices")
        for label, overrides in table.items():
            at = f"{where}.choices.{v.text(str(label), f'{where}.choices')}"
            checked: dict[str, dict[str, Any]] = {}
            for symbol, opts in v.mapping(overrides, at).items():
                checked[str(symbol)] = check_options(str(symbol), v.mapping(opts, f"{at}.{symbol}"), f"{at}.{symbol}")
            self.out.variants[str(label)] = checked
        self.add(name, list(self.out.variants))

    def options(self, cfg: dict[str, Any]) -> None:
        for key, values in cfg.items():
            where = f"search_space.options.{v.short(key, 60)}"
            if not isinstance(key, str) or key.count(".") != 1:
                raise ConfigError("option keys look like SYMBOL.option, e.g. M.d_state", where)
            symbol, name = key.split(".")
            checked = [check_options(symbol, {name: c}, where)[name] for c in choices(values, where)]
            self.add(key, checked)

    def model(self, cfg: dict[str, Any]) -> None:
        for key, values in cfg.items():
            where = f"search_space.model.{v.short(key, 60)}"
            if key not in MODEL_CHOICE_KEYS:
                raise ConfigError(f"cannot search over {v.short(key)} (searchable: {', '.join(MODEL_CHOICE_KEYS)})", where)
            picked = choices(values, where)
            for c in picked:
                if not (c is None or isinstance(c, (int, float, str, list))) or isinstance(c, list) and \
                        not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in c):
                    raise ConfigError(f"expected a number, a name or a list of numbers, got {v.short(c)}", where)
            self.add(key, [tuple(c) if isinstance(c, list) else c for c in picked])


def block_text(text: Any, where: str) -> BlockSpec:
    """One block such as `M` or `M[d_state=16]`."""
    if not isinstance(text, str):
        raise ConfigError(f"expected a block such as 'M' or 'M[d_state=16]', got {v.short(text)}", where)
    try:
        pattern = parse(text)
    except HybridlabError as exc:
        raise ConfigError(str(exc), where) from None
    if pattern.depths != (1,):
        raise ConfigError(f"expected one block such as 'M' or 'M[d_state=16]', got {v.short(text)}", where)
    return pattern.stages[0][0]


def mixer_choices(raw: list[Any], where: str) -> list[BlockSpec]:
    """`layout.mixer` as a list: distinct blocks (compared by canonical text, so `M[d_state=8]` is `M`)."""
    blocks = v.list_of(raw, block_text, where, max_len=MAX_CHOICES)
    seen: dict[str, int] = {}
    for i, block in enumerate(blocks):
        text = block.canonical()
        if text in seen:
            raise ConfigError(f"{v.short(text)} is the same block as {where}[{seen[text]}]", f"{where}[{i}]")
        seen[text] = i
    return blocks


def check_options(symbol: str, options: Mapping[Any, Any], where: str) -> dict[str, Any]:
    """Block options of `symbol`, each coerced by the block's own option schema."""
    block = block_text(symbol, where)
    schema = block.block_type.options
    out = {}
    for name, value in options.items():
        if name not in schema:
            raise ConfigError(f"unknown option {v.short(name)} for block {symbol!r} (known: {', '.join(schema)})", where)
        try:
            out[name] = schema[name].coerce(value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ConfigError(f"option {name!r} of block {symbol!r}: {v.short(str(exc))}", where) from None
    return out


def choices(value: Any, where: str) -> list[Any]:
    """A non-empty list of distinct choices (a lone value is a list of one)."""
    items = v.list_of(value, lambda x, at: x, where, max_len=MAX_CHOICES)
    if len({v.short(i) for i in items}) != len(items):
        raise ConfigError("a choice is listed twice", where)
    return items


def int_choices(value: Any, where: str, minimum: int, maximum: int) -> list[int]:
    return v.list_of(value, lambda x, at: v.integer(x, where, minimum, maximum), where, max_len=MAX_CHOICES)


__all__ = [
    "MIXER_DIMENSION", "MODEL_CHOICE_KEYS", "SECTIONS", "Dimension", "Sections", "block_text", "check_options",
    "mixer_choices", "read_sections",
]
