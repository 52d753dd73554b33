"""MambaVision presets as data, plus their timm registration (done on `import blocks`).

    PRESETS["mambavision_t"]                      # ModelSpec keyword arguments, pattern included
    preset_spec("mambavision_b", num_classes=10)   # a ModelSpec, ready for studies or .build()
    timm.create_model("mambavision_t", pattern="C | C*3 | (A M)*4 | M*2 A*2")   # same depths only
    timm.create_model("hybrid", pattern="C | C*3 | M*4 A*4 | M*2 A*2", dim=80)
    timm.create_model("mambavision_t", pretrained=True)   # the official weights, from Hugging Face
    timm.create_model("mambavision_t", pretrained=True, pretrained_cfg_overlay=dict(file="tiny_1k.pth.tar"))

The settings are the official constructors' (widths, depths, heads, windows, mlp ratio, drop path,
layer scale); the pattern follows the official rule: stages 1-2 conv blocks, then in every later
stage the first ceil(N/2) blocks are mixers and the rest self-attention.

Each preset's `pretrained_cfg` names the official weights (`hf_hub_id`/`hf_hub_filename`: NVIDIA's Hugging
Face repos; B, L and L3 also have `.in21k_ft_in1k` tags). A local file (`pretrained_cfg_overlay=dict(file=...)`)
may be the official `.pth.tar`, a training checkpoint (`state_dict`/`model` inside) or a plain state dict; it is
read with `weights_only=True`. Another class count drops the head (timm's rule); other misfits are one line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg

from blocks.grammar import parse
from blocks.model import HybridNet
from blocks.spec import ModelSpec
from hybridlab.errors import ConfigError, HybridlabError


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


# The official weights: Hugging Face repos of NVIDIA's MambaVision models, each holding the `.pth.tar` the
# official code downloads (a dict with the weights under `state_dict`; our keys are the official ones).
HF_WEIGHTS: dict[str, tuple[str, str]] = {
    "mambavision_t.in1k": ("nvidia/MambaVision-T-1K", "mambavision_tiny_1k.pth.tar"),
    "mambavision_t2.in1k": ("nvidia/MambaVision-T2-1K", "mambavision_tiny2_1k.pth.tar"),
    "mambavision_s.in1k": ("nvidia/MambaVision-S-1K", "mambavision_small_1k.pth.tar"),
    "mambavision_b.in1k": ("nvidia/MambaVision-B-1K", "mambavision_base_1k.pth.tar"),
    "mambavision_b.in21k_ft_in1k": ("nvidia/MambaVision-B-21K", "mambavision_base_21k.pth.tar"),
    "mambavision_l.in1k": ("nvidia/MambaVision-L-1K", "mambavision_large_1k.pth.tar"),
    "mambavision_l.in21k_ft_in1k": ("nvidia/MambaVision-L-21K", "mambavision_large_21k.pth.tar"),
    "mambavision_l2.in1k": ("nvidia/MambaVision-L2-1K", "mambavision_large2_1k.pth.tar"),
    "mambavision_l3_256.in21k_ft_in1k": ("nvidia/MambaVision-L3-256-21K", "mambavision_L3_21k_740m_256.pth.tar"),
    "mambavision_l3_512.in21k_ft_in1k": ("nvidia/MambaVision-L3-512-21K", "mambavision_L3_21k_740m_512.pth.tar"),
}
_EVAL: dict[str, dict[str, Any]] = {
    "mambavision_t": dict(crop_pct=1.0),
    "mambavision_t2": dict(crop_pct=0.98),
    "mambavision_s": dict(crop_pct=0.93),
    "mambavision_b": dict(crop_pct=1.0),
    "mambavision_l": dict(crop_pct=1.0),
    "mambavision_l2": dict(crop_pct=1.0),
    "mambavision_l3_256": dict(input_size=(3, 256, 256), crop_pct=1.0),
    "mambavision_l3_512": dict(input_size=(3, 512, 512), crop_pct=0.93, crop_mode="squash"),
}


def _hf_cfg(name: str, repo: str, filename: str) -> dict[str, Any]:
    return _cfg(**_EVAL[name.split(".")[0]], hf_hub_id=repo, hf_hub_filename=filename,
                origin_url=f"https://huggingface.co/{repo}")


default_cfgs = generate_default_cfgs(
    {"hybrid": _cfg(crop_pct=0.875), **{name: _hf_cfg(name, *where) for name, where in HF_WEIGHTS.items()}}
)

_FEATURE_CFG = dict(out_indices=(0, 1, 2, 3), feature_cls="getter")


def _create(variant: str, pretrained: bool, **kwargs: Any) -> HybridNet:
    if variant in PRESETS:
        kwargs = _preset_kwargs(variant, kwargs)
    if pretrained:
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        if overlay.get("state_dict") is None:
            cfg = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg"), overlay)
            overlay["state_dict"] = pretrained_weights(variant, cfg.file, cfg.hf_hub_id, cfg.hf_hub_filename)
        kwargs["pretrained_cfg_overlay"] = overlay
    try:
        model = build_model_with_cfg(HybridNet, variant, pretrained, feature_cfg=dict(_FEATURE_CFG),
                                     pretrained_filter_fn=_filter_weights, **kwargs)
    except RuntimeError as exc:
        if not pretrained or "state_dict" not in str(exc):
            raise
        raise _misfit(variant, kwargs) from None
    for part in (model, getattr(model, "model", None)):  # keep no second copy of the weights in the config
        cfg = getattr(part, "pretrained_cfg", None)
        if isinstance(cfg, dict):
            cfg.pop("state_dict", None)
    return model


def _misfit(variant: str, kwargs: dict[str, Any]) -> HybridlabError:
    """Say in one line which keys of the weights do not fit (missing, unexpected, other shapes)."""
    from blocks.checkpoint import load_official_checkpoint

    kwargs = dict(kwargs)
    weights = kwargs.pop("pretrained_cfg_overlay")["state_dict"]
    model = build_model_with_cfg(HybridNet, variant, False, feature_cfg=dict(_FEATURE_CFG), **kwargs)
    if getattr(model, "num_classes", 1000) != 1000:  # timm drops the head for another class count
        weights = {k: v for k, v in weights.items() if not k.startswith("head.")}
        model.head = None
    try:
        load_official_checkpoint(model, weights, strict=True)
    except HybridlabError as exc:
        return HybridlabError(f"the pretrained weights do not fit {variant}: {str(exc).split(': ', 1)[-1]}")
    return HybridlabError(f"the pretrained weights do not fit {variant}")


def pretrained_weights(variant: str, file: str | None, hf_hub_id: str | None,
                       hf_hub_filename: str | None) -> dict[str, Any]:
    """The state dict to start `variant` from: a local file (official `.pth.tar`, a training checkpoint or a plain
    state dict; read with weights_only), else the official file from Hugging Face; one-line errors."""
    from blocks.checkpoint import _read, _strip, _unwrap

    if not file:
        if not hf_hub_id:
            raise HybridlabError(f"{variant} has no published weights; pass a file: timm.create_model({variant!r}, "
                                 "pretrained=True, pretrained_cfg_overlay=dict(file='/path/to/weights.pth'))")
        file = _download(variant, hf_hub_id, hf_hub_filename or "pytorch_model.bin")
    return _strip(_unwrap(_read(file), use_ema=False))


def _download(variant: str, repo: str, filename: str) -> str:
    """The cached path of a Hugging Face file, downloading it when needed."""
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id=repo, filename=filename)
    except Exception as exc:  # noqa: BLE001 - no network, offline mode, missing package, ...: one line
        reason = " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__
        raise HybridlabError(
            f"cannot download the {variant} weights {repo}/{filename} from Hugging Face ({reason}); without "
            f"network, copy that file here and pass it: timm.create_model({variant!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='/path/to/{filename}'))") from None


def _filter_weights(state_dict: dict[str, Any], model: Any = None) -> dict[str, Any]:
    """timm's hook for weights it reads itself: unwrap `state_dict`/`model` and strip `module.`/`model.`."""
    from blocks.checkpoint import _strip, _unwrap

    return _strip(_unwrap(state_dict, use_ema=False))


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


__all__ = ["DEFAULT_PATTERN", "HF_WEIGHTS", "OFFICIAL_NAMES", "PRESETS", "official_pattern", "preset_spec",
           "pretrained_weights"]
