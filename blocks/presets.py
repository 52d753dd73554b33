"""MambaVision presets as data, plus their timm registration (done on `import blocks`).

    PRESETS["mambavision_t"]                      # ModelSpec keyword arguments, pattern included
    preset_spec("mambavision_b", num_classes=10)   # a ModelSpec, ready for studies or .build()
    timm.create_model("mambavision_t", pattern="C | C*3 | (A M)*4 | M*2 A*2")   # same depths only
    timm.create_model("hybrid", pattern="C | C*3 | M*4 A*4 | M*2 A*2", dim=80)

The settings are the official constructors' (widths, depths, heads, windows, mlp ratio, drop path,
layer scale); the pattern follows the official rule: stages 1-2 conv blocks, then in every later
stage the first ceil(N/2) blocks are mixers and the rest self-attention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from blocks.grammar import parse
from blocks.model import HybridNet
from blocks.spec import ModelSpec
from hybridlab.errors import ConfigError


def official_pattern(depths: Sequence[int]) -> str:
    """The official MambaVision layout for `depths`: conv stages 1-2, then ceil(N/2) M and floor(N/2) A."""
    stages = []
    for i, n in enumerate(depths):
        n = int(n)
        if n < 1:
            raise ConfigError(f"stage {i + 1} depth must be at least 1, got {n}", "depths")
        if i < 2:
            stages.append(f"C*{n}")
            continue
        mixers, attn = math.ceil(n / 2), n // 2
        stages.append(f"M*{mixers}" + (f" A*{attn}" if attn else ""))
    return parse(" | ".join(stages)).canonical()


def _preset(depths, dim, in_dim, heads, windows, drop_path, layer_scale) -> dict[str, Any]:
    return dict(
        pattern=official_pattern(depths),
        dim=dim,
        in_dim=in_dim,
        num_heads=tuple(heads),
        window_size=tuple(windows),
        mlp_ratio=4.0,
        drop_path_rate=drop_path,
        layer_scale=layer_scale,
        layer_scale_conv=None,
    )


_SMALL_HEADS, _LARGE_HEADS = (2, 4, 8, 16), (4, 8, 16, 32)
_W224 = (8, 8, 14, 7)
PRESETS: dict[str, dict[str, Any]] = {
    "mambavision_t": _preset((1, 3, 8, 4), 80, 32, _SMALL_HEADS, _W224, 0.2, None),
    "mambavision_t2": _preset((1, 3, 11, 4), 80, 32, _SMALL_HEADS, _W224, 0.2, None),
    "mambavision_s": _preset((3, 3, 7, 5), 96, 64, _SMALL_HEADS, _W224, 0.2, None),
    "mambavision_b": _preset((3, 3, 10, 5), 128, 64, _SMALL_HEADS, _W224, 0.3, 1e-5),
    "mambavision_l": _preset((3, 3, 10, 5), 196, 64, _LARGE_HEADS, _W224, 0.3, 1e-5),
    "mambavision_l2": _preset((3, 3, 12, 5), 196, 64, _LARGE_HEADS, _W224, 0.3, 1e-5),
    "mambavision_l3_256": _preset((3, 3, 20, 10), 256, 64, _LARGE_HEADS, (8, 8, 16, 8), 0.5, 1e-5),
    "mambavision_l3_512": _preset((3, 3, 20, 10), 256, 64, _LARGE_HEADS, (8, 8, 32, 16), 0.5, 1e-5),
}
"""ModelSpec keyword arguments of every preset (num_classes etc. take ModelSpec defaults)."""

OFFICIAL_NAMES: dict[str, str] = {
    "mambavision_t": "mamba_vision_T",
    "mambavision_t2": "mamba_vision_T2",
    "mambavision_s": "mamba_vision_S",
    "mambavision_b": "mamba_vision_B",
    "mambavision_l": "mamba_vision_L",
    "mambavision_l2": "mamba_vision_L2",
    "mambavision_l3_256": "mamba_vision_L3_256_21k",
    "mambavision_l3_512": "mamba_vision_L3_512_21k",
}
"""Our preset name -> the official constructor whose weights it loads (B/L also load the _21k ones)."""

DEFAULT_PATTERN = PRESETS["mambavision_t"]["pattern"]


def preset_spec(name: str, **overrides: Any) -> ModelSpec:
    """The preset's ModelSpec with `overrides`; a new `pattern` must keep the preset's depths."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})", "model")
    return ModelSpec.create(**_preset_kwargs(name, overrides))


def _preset_kwargs(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    settings = dict(PRESETS[name])
    overrides = {k: v for k, v in overrides.items() if not (k == "pattern" and v is None)}
    pattern = overrides.get("pattern")
    if pattern is not None:
        want, got = parse(settings["pattern"]).depths, parse(pattern).depths
        if want != got:
            raise ConfigError(
                f"pattern {parse(pattern).canonical()!r} has depths {list(got)} but preset {name} "
                f"has depths {list(want)}; use the 'hybrid' model for other depths",
                "model.pattern",
            )
    settings.update(overrides)
    return settings


# -- timm registration -------------------------------------------------------------------------
def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.conv_down.0",
        "classifier": "head",
        "license": "see NVlabs/MambaVision for the official weights' license",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "hybrid": _cfg(crop_pct=0.875),
        "mambavision_t": _cfg(crop_pct=1.0),
        "mambavision_t2": _cfg(crop_pct=0.98),
        "mambavision_s": _cfg(crop_pct=0.93),
        "mambavision_b": _cfg(crop_pct=1.0),
        "mambavision_l": _cfg(crop_pct=1.0),
        "mambavision_l2": _cfg(crop_pct=1.0),
        "mambavision_l3_256": _cfg(input_size=(3, 256, 256), crop_pct=1.0),
        "mambavision_l3_512": _cfg(input_size=(3, 512, 512), crop_pct=0.93, crop_mode="squash"),
    }
)

_FEATURE_CFG = dict(out_indices=(0, 1, 2, 3), feature_cls="getter")


def _create(variant: str, pretrained: bool, **kwargs: Any) -> HybridNet:
    if variant in PRESETS:
        kwargs = _preset_kwargs(variant, kwargs)
    return build_model_with_cfg(HybridNet, variant, pretrained, feature_cfg=dict(_FEATURE_CFG), **kwargs)


@register_model
def hybrid(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """Any pattern: timm.create_model('hybrid', pattern=..., dim=..., num_heads=[...], ...)."""
    return _create("hybrid", pretrained, **kwargs)


@register_model
def mambavision_t(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """MambaVision-T (31.8M): C | C*3 | M*4 A*4 | M*2 A*2, dim 80."""
    return _create("mambavision_t", pretrained, **kwargs)


@register_model
def mambavision_t2(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """MambaVision-T2 (35.1M), dim 80, depths 1-3-11-4."""
    return _create("mambavision_t2", pretrained, **kwargs)


@register_model
def mambavision_s(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """MambaVision-S (50.1M), dim 96, depths 3-3-7-5."""
    return _create("mambavision_s", pretrained, **kwargs)


@register_model
def mambavision_b(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """MambaVision-B (97.7M), dim 128, depths 3-3-10-5, layer scale 1e-5."""
    return _create("mambavision_b", pretrained, **kwargs)


@register_model
def mambavision_l(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """MambaVision-L (228.0M), dim 196, depths 3-3-10-5, heads 4-8-16-32, layer scale 1e-5."""
    return _create("mambavision_l", pretrained, **kwargs)


@register_model
def mambavision_l2(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """MambaVision-L2 (241.6M), dim 196, depths 3-3-12-5."""
    return _create("mambavision_l2", pretrained, **kwargs)


@register_model
def mambavision_l3_256(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """MambaVision-L3 at 256 px (739.6M), dim 256, depths 3-3-20-10, windows 8-8-16-8."""
    return _create("mambavision_l3_256", pretrained, **kwargs)


@register_model
def mambavision_l3_512(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """MambaVision-L3 at 512 px (739.6M), windows 8-8-32-16."""
    return _create("mambavision_l3_512", pretrained, **kwargs)


__all__ = ["DEFAULT_PATTERN", "OFFICIAL_NAMES", "PRESETS", "official_pattern", "preset_spec"]
