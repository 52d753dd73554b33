"""`compare()`: a candidate and its baselines under one profile, with candidate / baseline ratios.

Which way is better for each figure comes from the one metric vocabulary (`hybridlab.metrics`);
a ratio is always candidate / baseline (throughput > 1: faster; latency < 1: faster).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hybridlab.measure.api import measure, resolve_source, split_overrides
from hybridlab.measure.cache import MeasureCache
from hybridlab.measure.guard import ContentionGuard, warnings_for
from hybridlab.measure.record import MeasureProfile, MeasureRecord
from hybridlab.measure.resolve import ModelSource, is_model_name
from hybridlab.metrics import RATIO_METRICS


def ratios(record: MeasureRecord, baseline: MeasureRecord) -> dict[str, float | None]:
    """candidate / baseline for every figure both have (throughput > 1: faster; latency < 1: faster)."""
    out: dict[str, float | None] = {}
    for key in RATIO_METRICS:
        a, b = getattr(record, key), getattr(baseline, key)
        out[key] = float(f"{a / b:.6g}") if a is not None and b not in (None, 0) else None
    return out


@dataclass
class Comparison:
    """A candidate and its baselines, measured in one run, with candidate/baseline ratios by baseline label."""

    record: MeasureRecord
    baselines: list[MeasureRecord] = field(default_factory=list)
    ratios: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """`model: reason` for every record whose timing stayed contended (empty when all are clean)."""
        return warnings_for([self.record, *self.baselines])

    def to_dict(self) -> dict[str, Any]:
        out = self.record.to_dict()
        out["baselines"] = [b.to_dict() for b in self.baselines]
        out["ratios"] = self.ratios
        out["measurement_warnings"] = self.warnings
        return out


def compare(
    model: Any,
    baselines: Sequence[Any],
    profile: MeasureProfile | None = None,
    *,
    cache: MeasureCache | str | None = None,
    progress: Callable[[str], None] | None = None,
    guard: ContentionGuard | None = None,
    **overrides: Any,
) -> Comparison:
    """Measure `model` and each baseline under the same profile, in this process, one after another.

    Model settings in `overrides` apply to pattern and preset baselines too; other timm names get only
    in_chans / num_classes (from the settings or the profile). All models are resolved (and so validated) before any is measured.
    """
    profile, settings = split_overrides(profile, overrides)
    say = progress or (lambda _msg: None)
    resolved = profile.resolved()
    # Resolve everything first: a misspelt baseline fails at once, not after minutes of measuring.
    target = resolve_source(model, resolved, settings)
    sources = []
    for base in baselines:
        if isinstance(base, (nn.Module, ModelSource)):
            base_settings: dict[str, Any] = {}
        elif isinstance(base, str) and is_model_name(base) and not _is_preset(base):
            base_settings = {k: settings[k] for k in ("in_chans", "num_classes") if k in settings}
        else:
            base_settings = dict(settings)
        sources.append(resolve_source(base, resolved, base_settings))
    say(f"measuring {target.label}")
    result = Comparison(record=measure(target, profile, cache=cache, guard=guard))
    for source in sources:
        say(f"measuring baseline {source.label}")
        rec = measure(source, profile, cache=cache, guard=guard)
        label, n = rec.model, 2
        while label in result.ratios:
            label, n = f"{rec.model}#{n}", n + 1
        result.baselines.append(rec)
        result.ratios[label] = ratios(result.record, rec)
    return result


def _is_preset(name: str) -> bool:
    try:
        from blocks.presets import PRESETS
    except ImportError:  # pragma: no cover
        return False
    return name in PRESETS


__all__ = ["Comparison", "compare", "ratios"]
