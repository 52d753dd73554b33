"""Turn what the user named (module, ModelSpec, preset/timm name, or pattern) into a buildable model.

A name that timm knows (our presets register on `import blocks`) wins over a pattern; anything
else is parsed as a pattern with ModelSpec settings. Every model gets an `arch_id` for the
measurement cache: the ModelSpec's arch_hash when there is one, else a hash of what built it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hybridlab.errors import ConfigError, HybridlabError, PatternError


@dataclass
class ModelSource:
    """A model to measure: either a factory for fresh builds (meta-buildable) or a given module."""

    label: str
    arch_id: str
    build: Callable[[], nn.Module] | None = None
    module: nn.Module | None = None
    spec: Any = None  # the ModelSpec, when the model came from one (for the pre-flight size check)

    @property
    def given(self) -> bool:
        """True when the caller passed the module (its weights must not be changed)."""
        return self.module is not None


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def module_arch_id(model: nn.Module) -> str:
    """The ModelSpec hash when the module carries one (HybridNet), else a hash of its structure."""
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "arch_hash"):
        return f"spec:{spec.arch_hash()}"
    shapes = [(n, list(p.shape)) for n, p in model.named_parameters()]
    return f"module:{type(model).__qualname__}:{_digest([repr(model), shapes])}"


def infer_in_chans(model: nn.Module) -> int:
    """Input channels from the spec, a timm attribute or config, or the first Conv2d; 3 otherwise."""
    spec = getattr(model, "spec", None)
    if spec is not None and getattr(spec, "in_chans", None):
        return int(spec.in_chans)
    if isinstance(getattr(model, "in_chans", None), int):
        return model.in_chans
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, Mapping) else None
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        return first.in_channels
    if size:
        return int(size[0])
    return 3


def is_model_name(name: str) -> bool:
    """True when timm (with our presets registered) knows `name`."""
    import timm

    import blocks  # noqa: F401  (registers the presets with timm)

    return bool(timm.is_model(name))


def _preset_spec(name: str, settings: dict[str, Any]) -> Any:
    """Our presets go through their ModelSpec (same arch hash as the equal pattern); None otherwise."""
    try:
        from blocks.presets import PRESETS, preset_spec
    except ImportError:  # pragma: no cover - presets are part of this project
        return None
    return preset_spec(name, **settings) if name in PRESETS else None


def _timm_source(name: str, settings: dict[str, Any], img_size: int | None) -> ModelSource:
    import timm

    kwargs = dict(settings)

    def create(**extra: Any) -> nn.Module:
        try:
            return timm.create_model(name, pretrained=False, **kwargs, **extra)
        except HybridlabError:
            raise
        except (TypeError, ValueError, AssertionError, KeyError) as exc:
            text = " ".join(str(exc).split()) or exc.__class__.__name__
            raise ConfigError(f"cannot build {name!r} with {kwargs or 'defaults'}: {text}", "model") from None

    with torch.device("meta"):
        probe = create()
    # Models whose constructor takes img_size (ViT, Swin, ...) are built for the measured size.
    extra: dict[str, Any] = {}
    cfg_size = (getattr(probe, "pretrained_cfg", None) or {}).get("input_size")
    if img_size is not None and cfg_size and tuple(cfg_size[-2:]) != (img_size, img_size):
        try:
            accepts = "img_size" in inspect.signature(type(probe).__init__).parameters
        except (TypeError, ValueError):
            accepts = False
        if accepts and "img_size" not in kwargs:
            extra["img_size"] = img_size
            with torch.device("meta"):
                probe = create(**extra)
    arch_id = module_arch_id(probe)
    if not arch_id.startswith("spec:"):
        arch_id = f"timm:{name}:{_digest({**kwargs, **extra, 'timm': timm.__version__})}"
    return ModelSource(label=name, arch_id=arch_id, build=lambda: create(**extra))


def resolve_model(
    model: Any,
    settings: Mapping[str, Any] | None = None,
    img_size: int | None = None,
) -> ModelSource:
    """A ModelSource for an nn.Module, a ModelSpec, a preset/timm name or a pattern string.

    `settings` are model settings: ModelSpec fields for specs and patterns, constructor keyword
    arguments for timm names; a given nn.Module takes none.
    """
    from blocks.spec import ModelSpec

    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    if isinstance(model, ModelSource):
        if settings:
            raise ConfigError(f"model settings {sorted(settings)} cannot be applied to a resolved model", "model")
        return model
    if isinstance(model, nn.Module):
        if settings:
            raise ConfigError(
                f"model settings {sorted(settings)} cannot be applied to an already built module", "model"
            )
        return ModelSource(label=type(model).__name__, arch_id=module_arch_id(model), module=model)
    if isinstance(model, ModelSpec):
        spec = model.with_settings(**settings) if settings else model
        return ModelSource(label=spec.pattern, arch_id=f"spec:{spec.arch_hash()}", build=spec.build, spec=spec)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"expected a module, ModelSpec, model name or pattern, got {model!r}", "model")
    text = model.strip()
    preset = _preset_spec(text, settings)
    if preset is not None:
        return ModelSource(label=text, arch_id=f"spec:{preset.arch_hash()}", build=preset.build, spec=preset)
    if is_model_name(text):
        return _timm_source(text, settings, img_size)
    try:
        spec = ModelSpec.create(text, **settings)
    except PatternError as exc:
        looks_like_name = all(c.isalnum() or c in "_-." for c in text) and any(c.islower() for c in text)
        if looks_like_name:
            raise ConfigError(
                f"unknown model {text!r}: not a preset or timm model name, and not a pattern ({exc.reason})",
                "model",
            ) from None
        raise
    return ModelSource(label=spec.pattern, arch_id=f"spec:{spec.arch_hash()}", build=spec.build, spec=spec)


__all__ = ["ModelSource", "infer_in_chans", "is_model_name", "module_arch_id", "resolve_model"]
