"""Throughput of several candidates measured side by side: interleaved rounds in one process.

On a shared machine the absolute img/s of a model drifts with whatever else runs (a busy period can
cut it 5x), so two candidates timed minutes apart are not comparable. Here every candidate is built
once, warmed up, and then timed in `rounds` rounds, one window per candidate per round, in an order
shuffled per round by a seeded RNG (A B C, C A B, ...). A slow period therefore hits every candidate
alike, and the ratio to the reference, taken within each round, stays stable when absolute figures
do not. Each candidate reports the median over rounds with its interquartile range, the per-round
ratios to the reference with their median and IQR, and whether any of its windows stayed contended.

It also reports throughput per CPU-second of this process (`throughput_cpu_*`): images over the
CPU time the process actually got in the window. With one thread this approximates the undisturbed
img/s even when the process only got part of a core, so on a busy machine its ratios are the steadier
estimate (with several spin-waiting threads it counts spinning as work, so it is not).

    result = measure_side_by_side({"default": spec_a, "conv": spec_b}, profile, rounds=5, reference="default")
    result.candidates["conv"].to_dict()["throughput_rel"]
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from hybridlab.errors import ConfigError
from hybridlab.measure.api import fresh_guard, numeric_settings, resolve_source, split_overrides
from hybridlab.measure.env import collect_env
from hybridlab.measure.guard import ContentionGuard
from hybridlab.measure.phases import autocast_for, synthetic_input
from hybridlab.measure.record import MeasureProfile
from hybridlab.measure.resolve import infer_in_chans
from hybridlab.measure.timing import (
    PeakMemory,
    free_memory,
    iters_for,
    quartiles,
    time_windows,
    warm_up,
    with_oom_backoff,
)

MAX_ROUNDS = 1000


def iqr_bounds(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(median, q25, q75) with 'inclusive' quartiles, so two values already give an interval."""
    if not values:
        return None, None, None
    lo, hi = quartiles(values)
    return float(statistics.median(values)), lo, hi


@dataclass
class CandidateThroughput:
    """One candidate's side-by-side figures; `to_dict` uses the result-file names."""

    label: str
    arch_id: str
    batch_size: int
    iters_per_window: int
    threads: int | None
    rates: list[float] = field(default_factory=list)  # img/s, one per round, in round order
    rel: list[float] = field(default_factory=list)  # rate / reference rate in the same round
    cpu_rates: list[float] = field(default_factory=list)  # images per CPU-second of this process, per round
    cpu_rel: list[float] = field(default_factory=list)  # cpu rate / reference cpu rate in the same round
    peak_mem_mb: float | None = None
    noisy: bool = False
    noisy_reason: str | None = None
    retried: int = 0

    @property
    def throughput(self) -> tuple[float | None, float | None, float | None]:
        return iqr_bounds(self.rates)

    @property
    def relative(self) -> tuple[float | None, float | None, float | None]:
        return iqr_bounds(self.rel)

    def to_dict(self) -> dict[str, Any]:
        mid, lo, hi = self.throughput
        rel, rel_lo, rel_hi = self.relative
        cpu_mid, _, _ = iqr_bounds(self.cpu_rates)
        cpu_rel, cpu_rel_lo, cpu_rel_hi = iqr_bounds(self.cpu_rel)
        return {
            "label": self.label,
            "arch_id": self.arch_id,
            "throughput_img_s": _round(mid),
            "throughput_lo": _round(lo),
            "throughput_hi": _round(hi),
            "throughput_interval": "iqr",
            "throughput_rel": _round(rel, 6),
            "throughput_rel_lo": _round(rel_lo, 6),
            "throughput_rel_hi": _round(rel_hi, 6),
            "noisy": self.noisy,
            "noisy_reason": self.noisy_reason,
            "threads": self.threads,
            "throughput_cpu_img_s": _round(cpu_mid),
            "throughput_cpu_rel": _round(cpu_rel, 6),
            "throughput_cpu_rel_lo": _round(cpu_rel_lo, 6),
            "throughput_cpu_rel_hi": _round(cpu_rel_hi, 6),
            "batch_size": self.batch_size,
            "iters_per_window": self.iters_per_window,
            "rounds": len(self.rates),
            "throughput_runs": [_round(r) for r in self.rates],
            "throughput_rel_runs": [_round(r, 6) for r in self.rel],
            "peak_mem_mb": self.peak_mem_mb,
            "retried": self.retried,
        }


@dataclass
class SideBySide:
    """All candidates of one side-by-side session, the round orders and the environment."""

    reference: str
    candidates: dict[str, CandidateThroughput]
    orders: list[list[str]]
    profile: dict[str, Any]
    env: dict[str, Any]
    seed: int

    @property
    def warnings(self) -> list[str]:
        """`label: reason` for every candidate with a window that stayed contended."""
        return [f"{c.label}: {c.noisy_reason}" for c in self.candidates.values() if c.noisy]

    def rows(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.candidates.values()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "rounds": len(self.orders),
            "seed": self.seed,
            "orders": self.orders,
            "candidates": self.rows(),
            "measurement_warnings": self.warnings,
            "profile": self.profile,
            "env": self.env,
        }


@dataclass
class _Entry:
    result: CandidateThroughput
    step: Callable[[], None]
    guard: ContentionGuard


def measure_side_by_side(
    models: Mapping[str, Any],
    profile: MeasureProfile | Mapping[str, Any] | None = None,
    *,
    rounds: int = 5,
    reference: str | None = None,
    seed: int = 0,
    guard: ContentionGuard | None = None,
    progress: Callable[[int, str], None] | None = None,
    **overrides: Any,
) -> SideBySide:
    """Time every model in `models` ({label: module, ModelSpec, preset/timm name or pattern}) in
    `rounds` interleaved rounds under one profile (inference throughput only).

    `reference` (default: the first label) is the row the ratios are taken against. `overrides`
    change profile fields and give model settings, as for `measure()`. The profile's warm-up applies
    once per candidate before the first round; each round times one window per candidate (`iters`,
    or as many iterations as fill `window_s`), after one untimed call to refill the caches. `guard`
    (default: the standard ContentionGuard) judges every window; `progress(round, label)` is called
    before each window.
    """
    if isinstance(profile, Mapping):
        profile = MeasureProfile.from_dict(profile)
    if not isinstance(models, Mapping) or not models:
        raise ConfigError("expected a non-empty mapping of label -> model", "side_by_side.models")
    labels = [str(k) for k in models]
    reference = labels[0] if reference is None else reference
    if reference not in labels:
        raise ConfigError(f"reference {reference!r} is not one of {labels}", "side_by_side.reference")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise ConfigError(f"must be an integer between 1 and {MAX_ROUNDS}, got {rounds!r}", "side_by_side.rounds")
    profile, settings = split_overrides(profile, overrides)
    profile = profile.resolved()
    sources = {label: resolve_source(models[key], profile, settings) for label, key in zip(labels, models)}
    device = torch.device(profile.device)
    rng = random.Random(seed)
    orders: list[list[str]] = []
    with numeric_settings(profile):
        env = collect_env(device, profile.precision, profile.channels_last, profile.compile)
        threads = torch.get_num_threads() if device.type == "cpu" else None
        entries = {label: _prepare(label, source, profile, device, guard, threads) for label, source in sources.items()}
        with torch.inference_mode():
            for r in range(rounds):
                order = rng.sample(labels, len(labels))
                orders.append(order)
                for label in order:
                    if progress is not None:
                        progress(r, label)
                    entry = entries[label]
                    timing = time_windows(entry.step, device, repeats=1, warmup_iters=0, warmup_s=0.0, window_s=0.0,
                                          iters=entry.result.iters_per_window, max_iters=entry.result.iters_per_window,
                                          guard=entry.guard)  # fmt: skip
                    res = entry.result
                    res.rates.extend(timing.rates(res.batch_size) or [0.0])
                    cpu_s = timing.checks[0].cpu_s if timing.checks else None
                    res.cpu_rates.append(res.batch_size * res.iters_per_window / cpu_s if cpu_s else 0.0)
        free_memory(device)
    ref = entries[reference].result
    for entry in entries.values():
        res = entry.result
        res.rel = [a / b for a, b in zip(res.rates, ref.rates) if b > 0]
        res.cpu_rel = [a / b for a, b in zip(res.cpu_rates, ref.cpu_rates) if b > 0]
        res.noisy, res.noisy_reason, res.retried = entry.guard.noisy, entry.guard.reason, entry.guard.retried
    return SideBySide(
        reference=reference,
        candidates={label: entries[label].result for label in labels},
        orders=orders,
        profile=profile.to_dict(),
        env=env,
        seed=seed,
    )


def _prepare(
    label: str, source: Any, profile: MeasureProfile, device: torch.device, guard: ContentionGuard | None, threads: int | None
) -> _Entry:
    """Build, move and warm up one candidate; fix its batch (OOM back-off) and iterations per window."""
    torch.manual_seed(profile.seed)
    model = source.module if source.given else source.build()
    in_chans = profile.in_chans or infer_in_chans(model)
    model = model.to(device)
    if profile.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    runner = torch.compile(model, mode=profile.compile) if profile.compile else model
    autocast = autocast_for(profile, device)
    own_guard = fresh_guard(guard, device)

    def warm(batch: int) -> tuple[Callable[[], None], float, PeakMemory]:
        x = synthetic_input(batch, in_chans, profile, device)

        def step() -> None:
            with autocast():
                runner(x)

        with torch.inference_mode(), PeakMemory(device) as mem:
            _, _, one = warm_up(step, device, profile.warmup_iters, profile.warmup_s, own_guard.readers.wall)
        return step, one, mem

    batch, (step, one, mem) = with_oom_backoff(warm, profile.batch_size, device)
    iters = iters_for(one, profile.window_s, profile.iters, profile.max_iters)
    result = CandidateThroughput(
        label=label,
        arch_id=source.arch_id,
        batch_size=batch,
        iters_per_window=iters,
        threads=threads,
        peak_mem_mb=round(mem.peak_mb, 2) if mem.peak_mb is not None else None,
    )
    return _Entry(result=result, step=step, guard=own_guard)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


__all__ = ["CandidateThroughput", "SideBySide", "iqr_bounds", "measure_side_by_side"]
