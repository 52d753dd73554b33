"""Load official MambaVision checkpoints (or our own) into a HybridNet, strictly, with one-line errors.

Our preset keys equal the official ones, so loading is unwrapping plus prefix stripping, no renaming:
- wrappers: `state_dict`, `model` (timm/official training scripts), `state_dict_ema`/`model_ema` with use_ema;
- prefixes: `module.` (DataParallel/DDP), `model.` (the Hugging Face wrapper), and, like the official
  loader, `encoder.`/`backbone.` (only keys under that prefix are kept).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hybridlab.errors import HybridlabError

WRAPPERS = ("state_dict", "model")
EMA_WRAPPERS = ("state_dict_ema", "model_ema")
STRIP_PREFIXES = ("module.", "model.")  # stripped when every key has it
SELECT_PREFIXES = ("encoder.", "backbone.")  # the sub-dict under it is taken
_SHOW = 3


@dataclass
class LoadResult:
    """What did not fit: key names, and (key, checkpoint shape, model shape) for shape mismatches."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_few(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_few(self.unexpected)})")
        if self.mismatched:
            shown = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} with other shapes ({_few(shown)})")
        return "; ".join(parts)


def load_official_checkpoint(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    use_ema: bool = False,
    strict: bool = True,
) -> LoadResult:
    """Load weights into `model`; with `strict`, any missing/unexpected/mis-shaped key raises one line.

    Without `strict` the fitting tensors are loaded and the rest is reported in the returned LoadResult.
    """
    source = _read(path_or_state_dict)
    state = _strip(_unwrap(source, use_ema))
    own = model.state_dict()
    result = LoadResult()
    for key in own:
        if key not in state and not key.endswith("num_batches_tracked"):
            result.missing.append(key)
    loadable = {}
    for key, value in state.items():
        if key not in own:
            result.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            result.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            loadable[key] = value
    if strict and not result.ok:
        raise HybridlabError(f"checkpoint does not fit the model: {result.describe()}")
    assign = any(t.is_meta for t in own.values())
    model.load_state_dict(loadable, strict=False, assign=assign)
    return result


def _read(source: Any) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise HybridlabError(f"expected a checkpoint path or a state dict, got {type(source).__name__}")
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise HybridlabError(f"checkpoint not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        # timm-style training checkpoints also pickle the argparse Namespace of the run
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or unsafe pickle, truncated file, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HybridlabError(f"cannot read checkpoint {path}: {reason}") from None


def _unwrap(ckpt: Mapping[str, Any], use_ema: bool) -> Mapping[str, Any]:
    if use_ema:
        for key in EMA_WRAPPERS:
            if isinstance(ckpt.get(key), Mapping):
                return _tensors(ckpt[key], key)
        raise HybridlabError(
            f"no EMA weights in checkpoint (looked for {', '.join(EMA_WRAPPERS)}; top-level keys: {_few(list(ckpt))})"
        )
    for key in WRAPPERS:
        if isinstance(ckpt.get(key), Mapping):
            return _tensors(ckpt[key], key)
    return _tensors(ckpt, "checkpoint")


def _tensors(state: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise HybridlabError(f"{where} holds no tensors, so it is not a state dict (keys: {_few(list(state))})")
    if len(tensors) != len(state):
        others = [k for k in state if k not in tensors]
        raise HybridlabError(f"{where} mixes tensors with other values ({_few(others)}); not a state dict")
    return tensors


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
        for prefix in SELECT_PREFIXES:
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if sub and not any(k.startswith("patch_embed.") for k in state):
                state = sub
                changed = True
    return state


def _few(items: list[str]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOW])
    return shown + (f", ... {len(items) - _SHOW} more" if len(items) > _SHOW else "")


__all__ = ["LoadResult", "load_official_checkpoint"]
