"""ModelSpec: a pattern plus every other architecture setting, validated, hashable and buildable.

This is the `spec` step of pattern -> spec -> model -> trial -> results -> report: studies sample
specs, the measurement cache and de-duplication key on `arch_hash()`, and `build()` makes the model.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from blocks.grammar import Pattern, parse
from hybridlab.errors import ConfigError

STEM_STRIDES = (1, 2, 4)
INITS = ("official", "default")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture settings; argument names mirror the official MambaVision constructor.

    `dims` overrides the stage widths (default `dim * 2**i`); per-stage lists have one entry per stage.
    `init` is "official" (MambaVision's from-scratch init: every Linear trunc_normal(std=.02)) or "default"
    (each layer keeps its own: PyTorch's, Mamba's dt_proj init). The official init learns slowly on short
    schedules, where "default" reaches useful accuracy much sooner.
    """

    pattern: str
    dim: int = 80
    in_dim: int = 32
    num_heads: tuple[int, ...] = (2, 4, 8, 16)
    window_size: tuple[int, ...] = (8, 8, 14, 7)
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    layer_scale: float | None = None
    layer_scale_conv: float | None = None
    stem_stride: int = 4
    num_classes: int = 1000
    in_chans: int = 3
    dims: tuple[int, ...] | None = None
    init: str = "official"

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def create(cls, pattern: str | Pattern, **settings: Any) -> ModelSpec:
        """Validate and normalise: canonical pattern, tuples for lists, one clear error per problem."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            known = ", ".join(f.name for f in fields(cls) if f.name != "pattern")
            raise ConfigError(f"unknown model setting {unknown[0]!r} (known: {known})", "model")
        parsed = parse(pattern)
        values = {f.name: f.default for f in fields(cls)}
        values.update({k: v for k, v in settings.items() if v is not None or k in ("layer_scale", "layer_scale_conv", "dims")})
        n = parsed.num_stages
        values["pattern"] = parsed.canonical()
        values["num_heads"] = _per_stage(values["num_heads"], n, "num_heads")
        values["window_size"] = _per_stage(values["window_size"], n, "window_size")
        if values["dims"] is not None:
            values["dims"] = _per_stage(values["dims"], n, "dims")
        for key in ("dim", "in_dim", "num_classes", "in_chans", "stem_stride"):
            values[key] = _int(values[key], key, minimum=0 if key == "num_classes" else 1)
        values["mlp_ratio"] = _float(values["mlp_ratio"], "mlp_ratio", minimum=0.0)
        values["drop_path_rate"] = _float(values["drop_path_rate"], "drop_path_rate", minimum=0.0)
        if values["drop_path_rate"] >= 1.0:
            raise ConfigError(f"must be below 1, got {values['drop_path_rate']}", "drop_path_rate")
        for key in ("layer_scale", "layer_scale_conv"):
            if values[key] is not None:
                values[key] = _float(values[key], key, minimum=0.0)
        if values["init"] not in INITS:
            raise ConfigError(f"must be one of {', '.join(INITS)}, got {values['init']!r}", "init")
        if values["stem_stride"] not in STEM_STRIDES:
            raise ConfigError(f"must be one of {', '.join(map(str, STEM_STRIDES))}, got {values['stem_stride']}", "stem_stride")
        spec = cls(**values)
        spec._check_heads(parsed)
        return spec

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        data = dict(data)
        if "pattern" not in data:
            raise ConfigError("missing 'pattern'", "model")
        return cls.create(data.pop("pattern"), **data)

    def with_settings(self, **changes: Any) -> ModelSpec:
        """A copy with some settings changed, validated again."""
        data = self.to_dict()
        data.update(changes)
        return ModelSpec.from_dict(data)

    # -- derived -----------------------------------------------------------------------------
    @property
    def parsed(self) -> Pattern:
        return parse(self.pattern)

    @property
    def depths(self) -> tuple[int, ...]:
        return self.parsed.depths

    @property
    def stage_dims(self) -> tuple[int, ...]:
        if self.dims is not None:
            return tuple(self.dims)
        return tuple(self.dim * 2**i for i in range(self.parsed.num_stages))

    @property
    def num_features(self) -> int:
        return self.stage_dims[-1]

    def feature_map_sides(self, img_size: int) -> tuple[int, ...]:
        """Side of each stage's feature map for a square `img_size` input.

        The stem's and the downsamplers' stride-2 convs (3x3, padding 1) round up: 30 px -> 15 -> 8.
        """
        side = int(img_size)
        for _ in range(self.stem_stride.bit_length() - 1):  # stem_stride is 1, 2 or 4
            side = (side + 1) // 2
        sides = [side]
        for _ in range(self.parsed.num_stages - 1):
            sides.append((sides[-1] + 1) // 2)
        return tuple(sides)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("num_heads", "window_size", "dims"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def arch_hash(self, length: int = 12) -> str:
        """Stable short hash of the canonical pattern and every other setting (for de-duplication)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:length]

    def build(self, **extra: Any):
        """Instantiate the model (`blocks.model.HybridNet`); `extra` goes to its constructor."""
        from blocks.model import HybridNet

        return HybridNet(spec=self, **extra)

    def _check_heads(self, parsed: Pattern) -> None:
        for i, (stage, width, heads) in enumerate(zip(parsed.stages, self.stage_dims, self.num_heads)):
            if heads < 1:
                raise ConfigError(f"stage {i + 1} has {heads} heads; need at least 1", "num_heads")
            uses_heads = [b.symbol for b in stage if _accepts(b.block_type.cls, "num_heads")]
            if uses_heads and width % heads:
                raise ConfigError(
                    f"stage {i + 1}: {heads} heads do not divide width {width} (blocks {''.join(sorted(set(uses_heads)))})",
                    "num_heads",
                )
        for i, w in enumerate(self.window_size):
            if w < 1:
                raise ConfigError(f"stage {i + 1} window {w} must be at least 1", "window_size")


def _accepts(cls: Any, name: str) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _per_stage(value: Any, n: int, key: str) -> tuple[int, ...]:
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return (int(value),) * n
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"expected an integer or a list of {n} integers, got {value!r}", key)
    items = list(value)
    if len(items) != n:
        raise ConfigError(f"has {len(items)} entries but the pattern has {n} stages", key)
    return tuple(_int(v, key, minimum=1) for v in items)


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise ConfigError(f"expected an integer, got {value!r}", key)
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value}", key)
    return int(value)


def _float(value: Any, key: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number, got {value!r}", key)
    if value < minimum:
        raise ConfigError(f"must be at least {minimum:g}, got {value}", key)
    return float(value)


__all__ = ["ModelSpec"]
