"""Baselines: reference models trained and measured in the same study, on the same data and machine.

A study file may list them by label:

    baselines:
      conv_only: {pattern: "C*2 | C*4"}           # a pattern on the study's base model settings
      resnet18: {timm: resnet18}                   # any timm model (kwargs: {...} optional)

They get their own trials (`is_baseline` true, family `baseline`) and the report draws them with their
own markers, so a candidate is always compared with what a reviewer would ask for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from blocks.spec import ModelSpec
from hybridlab import validate as v
from hybridlab.errors import ConfigError, HybridlabError


@dataclass(frozen=True)
class Baseline:
    """A pattern baseline (`spec`) or a timm model (`timm` name with `kwargs`)."""

    label: str
    spec: ModelSpec | None = None
    timm: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 1000
    in_chans: int = 3

    @property
    def pattern(self) -> str:
        return self.spec.pattern if self.spec is not None else f"timm:{self.timm}"

    @property
    def family(self) -> str:
        return "baseline"

    is_baseline = True

    @property
    def arch_hash(self) -> str:
        if self.spec is not None:
            return self.spec.arch_hash()
        blob = json.dumps({"timm": self.timm, "kwargs": self.kwargs, "num_classes": self.num_classes,
                           "in_chans": self.in_chans}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def settings(self) -> dict[str, Any]:
        if self.spec is not None:
            return self.spec.to_dict()
        return {"timm": self.timm, **self.kwargs, "num_classes": self.num_classes, "in_chans": self.in_chans}

    def build(self) -> nn.Module:
        if self.spec is not None:
            return self.spec.build()
        import timm

        return timm.create_model(self.timm, pretrained=False, num_classes=self.num_classes, in_chans=self.in_chans,
                                 **self.kwargs)

    def measure_target(self) -> tuple[Any, dict[str, Any]]:
        """What `hybridlab.measure.measure` takes: the spec, or the timm name plus its settings."""
        if self.spec is not None:
            return self.spec, {}
        return self.timm, {"num_classes": self.num_classes, "in_chans": self.in_chans, "model_kwargs": self.kwargs}


def parse_baseline(label: Any, entry: Any, base: ModelSpec) -> Baseline:
    """Validate one `baselines:` entry against the study's base model (num_classes, in_chans, settings)."""
    label = v.text(label, "baselines", max_len=100) if not isinstance(label, (int, float)) else str(label)
    where = f"baselines.{label}"
    if not isinstance(entry, Mapping):
        raise ConfigError("expected {pattern: ...} or {timm: NAME, kwargs: {...}}", where)
    v.unknown_keys(entry, ("pattern", "timm", "kwargs"), where)
    if ("pattern" in entry) == ("timm" in entry):
        raise ConfigError("give exactly one of 'pattern' or 'timm'", where)
    kwargs = v.mapping(entry.get("kwargs"), f"{where}.kwargs")
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"expected setting names, got {v.short(key)}", f"{where}.kwargs")
    if "pattern" in entry:
        pattern = v.text(entry["pattern"], f"{where}.pattern", max_len=10_000)
        try:
            spec = base.with_settings(pattern=pattern, **kwargs)
        except HybridlabError as exc:
            raise ConfigError(str(exc), f"{where}.pattern") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(v.short(str(exc)), f"{where}.kwargs") from None
        return Baseline(label, spec=spec, num_classes=base.num_classes, in_chans=base.in_chans)
    import timm

    import blocks  # noqa: F401  (registers the presets, which are baselines too)

    name = v.text(entry["timm"], f"{where}.timm")
    if not timm.is_model(name):
        raise ConfigError(f"timm has no model {v.short(name)}", f"{where}.timm")
    return Baseline(label, timm=name, kwargs=kwargs, num_classes=base.num_classes, in_chans=base.in_chans)
