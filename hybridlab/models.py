"""Resolve what a user typed (preset name or pattern, plus settings) into a ModelSpec.

Shared by `hybridlab show` and `hybridlab bench`, so both accept exactly the same model arguments.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from hybridlab.errors import ConfigError

if TYPE_CHECKING:  # blocks imports torch: the CLI parser, which imports this module, must not
    from blocks.spec import ModelSpec

_SETTINGS = {
    "dim": int, "in_dim": int, "mlp_ratio": float, "drop_path_rate": float, "layer_scale": float,
    "layer_scale_conv": float, "stem_stride": int, "num_classes": int, "in_chans": int,
}
_LISTS = ("num_heads", "window_size", "dims")


def is_preset(name: str) -> bool:
    from blocks.presets import PRESETS

    return name in PRESETS


def resolve_spec(target: str, **settings: Any) -> ModelSpec:
    """A preset name (settings override it) or a pattern string (settings complete it)."""
    from blocks.spec import ModelSpec

    settings = {k: v for k, v in settings.items() if v is not None}
    if is_preset(target):
        from blocks.presets import preset_spec

        return preset_spec(target, **settings)
    return ModelSpec.create(target, **settings)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Model settings for a pattern (or overrides for a preset); names mirror the official constructor."""
    group = parser.add_argument_group("model settings (for a pattern, or to override a preset)")
    for name, kind in _SETTINGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=str, metavar=kind.__name__.upper())
    for name in _LISTS:
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="N,N,...", help="one per stage, or one for all")
    group.add_argument(
        "--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="any other ModelSpec setting (YAML values)"
    )


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ModelSpec settings given on the command line, converted and named for error messages."""
    out: dict[str, Any] = {}
    for name, kind in _SETTINGS.items():
        raw = getattr(args, name, None)
        if raw is None:
            continue
        try:
            out[name] = kind(raw)
        except ValueError:
            raise ConfigError(f"expected {kind.__name__}, got {raw!r}", f"--{name.replace('_', '-')}") from None
    for name in _LISTS:
        raw = getattr(args, name, None)
        if raw is None:
            continue
        try:
            values = [int(v) for v in str(raw).replace(" ", "").split(",") if v]
        except ValueError:
            raise ConfigError(f"expected integers separated by commas, got {raw!r}", f"--{name.replace('_', '-')}") from None
        out[name] = values[0] if len(values) == 1 and name != "dims" else values
    import yaml

    for item in getattr(args, "model_kwargs", []) or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", "--model-kwargs")
        out[key.strip()] = yaml.safe_load(text)
    return out
