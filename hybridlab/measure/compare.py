"""`compare()`: a candidate and its baselines under one profile, with candidate / baseline ratios.

Which way is better for each figure comes from the one metric vocabulary (`hybridlab.metrics`);
a ratio is always candidate / baseline (throughput > 1: faster; latency < 1: faster).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hybridlab.measure.api import measure, resolve_source, split_overrides
from hybridlab.measure.cache import MeasureCache
from hybridlab.measure.guard import ContentionGuard, warnings_for
from hybridlab.measure.record import MeasureProfile, MeasureRecord
from hybridlab.measure.resolve import ModelSource, is_model_name
from hybridlab.measure.side_by_side import CandidateThroughput, iqr_bounds, measure_side_by_side
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
    side_by_side: bool = False,
    **overrides: Any,
) -> Comparison:
    """Measure `model` and each baseline under the same profile, in this process, one after another.

    Model settings in `overrides` apply to pattern and preset baselines too; other timm names get only
    in_chans / num_classes (from the settings or the profile). All models are resolved (and so
    validated) before any is measured. With `side_by_side`, throughput is timed for all models in
    `profile.repeats` interleaved rounds (`side_by_side.measure_side_by_side`), and its ratio is the
    median of the per-round ratios, so a busy period cannot favour one model.
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
    if side_by_side and sources and resolved.wants("throughput"):
        return _compare_side_by_side(target, sources, profile, cache, say, guard)
    say(f"measuring {target.label}")
    result = Comparison(record=measure(target, profile, cache=cache, guard=guard))
    for source in sources:
        say(f"measuring baseline {source.label}")
        result.baselines.append(measure(source, profile, cache=cache, guard=guard))
    for rec in result.baselines:
        result.ratios[_unique(rec.model, result.ratios)] = ratios(result.record, rec)
    return result


def _unique(label: str, taken: Mapping[str, Any]) -> str:
    out, n = label, 2
    while out in taken:
        out, n = f"{label}#{n}", n + 1
    return out


def _compare_side_by_side(
    target: ModelSource,
    sources: list[ModelSource],
    profile: MeasureProfile,
    cache: MeasureCache | str | None,
    say: Callable[[str], None],
    guard: ContentionGuard | None,
) -> Comparison:
    """Every figure but throughput one model after another (cacheable); throughput of all models in
    `profile.repeats` interleaved rounds, with throughput ratios taken within each round."""
    others = tuple(f for f in profile.figures if f != "throughput") or ("compute",)
    records = []
    for n, source in enumerate([target, *sources]):
        say(f"measuring {'baseline ' if n else ''}{source.label} ({', '.join(others)})")
        records.append(measure(source, profile.replace(figures=others), cache=cache, guard=guard))
    labels: dict[str, ModelSource] = {}
    for source in [target, *sources]:
        labels[_unique(source.label, labels)] = source
    say(f"timing throughput side by side: {len(labels)} models, {profile.repeats} interleaved rounds")
    sbs = measure_side_by_side(labels, profile, rounds=profile.repeats, reference=next(iter(labels)), seed=profile.seed, guard=guard)
    for rec, (label, _) in zip(records, labels.items()):
        _fill_throughput(rec, sbs.candidates[label], sbs.profile)
    result = Comparison(record=records[0], baselines=records[1:])
    mine = sbs.candidates[next(iter(labels))].rates
    for rec, label in zip(records[1:], list(labels)[1:]):
        key = _unique(rec.model, result.ratios)
        result.ratios[key] = ratios(result.record, rec)
        per_round = [a / b for a, b in zip(mine, sbs.candidates[label].rates) if b > 0]
        result.ratios[key]["throughput_img_s"] = round(iqr_bounds(per_round)[0], 6) if per_round else None
    return result


def _fill_throughput(record: MeasureRecord, cand: CandidateThroughput, profile: dict[str, Any]) -> None:
    mid, lo, hi = cand.throughput
    record.throughput_img_s, record.throughput_lo, record.throughput_hi = mid, lo, hi
    record.throughput_iqr_img_s = None if lo is None or hi is None else hi - lo
    record.throughput_interval = "iqr"
    record.throughput_cpu_img_s = iqr_bounds(cand.cpu_rates)[0]
    record.throughput_runs = [round(r, 3) for r in cand.rates]
    record.inference_batch_size = cand.batch_size
    if record.peak_mem_mb is None:
        record.peak_mem_mb = cand.peak_mem_mb
    record.profile = profile
    record.timing["inference"] = {"side_by_side": True, "rounds": len(cand.rates), "batch": cand.batch_size,
                                  "iters_per_window": cand.iters_per_window, "retried": cand.retried}  # fmt: skip
    if cand.noisy:
        record.noisy = True
        mine = f"throughput side by side: {cand.noisy_reason}"
        record.noisy_reason = f"{record.noisy_reason}; {mine}" if record.noisy_reason else mine
    record.cached = False  # the throughput was measured now


def _is_preset(name: str) -> bool:
    try:
        from blocks.presets import PRESETS
    except ImportError:  # pragma: no cover
        return False
    return name in PRESETS


__all__ = ["Comparison", "compare", "ratios"]
