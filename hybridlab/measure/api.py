"""`measure()`: all figures of one model under one profile, optionally through the measurement cache.

Method (what a reviewer would ask for): synthetic input created on the device before timing (no
data loading), model.eval() + torch.inference_mode for inference, AMP through torch.autocast,
warm-up by iterations and by time, CUDA synchronisation around every timed window, `repeats`
windows summarised by median and IQR, batch halved on out-of-memory (and recorded), a contention
guard around every window, and the full environment stored with the figures. The phases
themselves live in `phases`; baselines and ratios in `compare`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from hybridlab.errors import ConfigError
from hybridlab.measure import guard as guard_module
from hybridlab.measure.cache import MeasureCache
from hybridlab.measure.env import collect_env, env_fingerprint, load_average
from hybridlab.measure.flops import ComputeCounts, count_compute, count_compute_fresh
from hybridlab.measure.guard import ContentionGuard
from hybridlab.measure.phases import run_inference, run_latency, run_train
from hybridlab.measure.record import MeasureProfile, MeasureRecord
from hybridlab.measure.resolve import ModelSource, infer_in_chans, resolve_model
from hybridlab.measure.timing import free_memory


def split_overrides(
    profile: MeasureProfile | None, overrides: Mapping[str, Any]
) -> tuple[MeasureProfile, dict[str, Any]]:
    """Profile fields go to the profile; everything else (and `model_kwargs={...}`) are model settings."""
    names = set(MeasureProfile.fields_names())
    changes = {k: v for k, v in overrides.items() if k in names}
    settings = {k: v for k, v in overrides.items() if k not in names and k != "model_kwargs"}
    extra = overrides.get("model_kwargs") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"model_kwargs must be a mapping, got {type(extra).__name__}", "model")
    settings.update(extra)
    base = profile if profile is not None else MeasureProfile()
    if not isinstance(base, MeasureProfile):
        raise ConfigError(f"profile must be a MeasureProfile, got {type(base).__name__}", "measure")
    return base.replace(**changes), settings


@contextlib.contextmanager
def numeric_settings(profile: MeasureProfile) -> Iterator[None]:
    """Apply the profile's threads / TF32 / cudnn.benchmark for the measurement, then restore them."""
    saved = (
        torch.get_num_threads(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    try:
        if profile.threads is not None:
            torch.set_num_threads(profile.threads)
        if profile.tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = profile.tf32
            torch.backends.cudnn.allow_tf32 = profile.tf32
        if profile.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = profile.cudnn_benchmark
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cuda.matmul.allow_tf32 = saved[1]
        torch.backends.cudnn.allow_tf32 = saved[2]
        torch.backends.cudnn.benchmark = saved[3]


def cache_key_parts(source: ModelSource, profile: MeasureProfile, env: Mapping[str, Any]) -> dict[str, Any]:
    """(architecture id, measurement profile, environment fingerprint): what makes two figures comparable."""
    return {"arch": source.arch_id, "profile": profile.to_dict(), "env": env_fingerprint(dict(env))}


def measure_key(model: Any, profile: MeasureProfile | Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The cache key parts `measure(model, profile, **overrides)` would use, without measuring."""
    if isinstance(profile, Mapping):
        profile = MeasureProfile.from_dict(profile)
    profile, settings = split_overrides(profile, overrides)
    profile = profile.resolved()
    source = resolve_source(model, profile, settings)
    with numeric_settings(profile):
        env = collect_env(profile.device, profile.precision, profile.channels_last, profile.compile)
    return cache_key_parts(source, profile, env)


def environment(device: str = "auto") -> dict[str, Any]:
    """The environment record for `device` (auto: cuda when available) with torch's current flags."""
    profile = MeasureProfile(device=device).resolved()
    return collect_env(profile.device)


def measure(
    model: Any,
    profile: MeasureProfile | None = None,
    *,
    cache: MeasureCache | str | None = None,
    label: str | None = None,
    guard: ContentionGuard | None = None,
    **overrides: Any,
) -> MeasureRecord:
    """Measure `model` (nn.Module, ModelSpec, preset/timm name, or pattern) under `profile`.

    `overrides` may change profile fields (`batch_size=8`, `device="cpu"`, ...) and give model
    settings (`dim=64`, `num_classes=10`, or `model_kwargs={...}`), which go to ModelSpec.create
    for patterns and to timm.create_model for names. With `cache` (a MeasureCache or a directory),
    an identical architecture + profile + environment is measured once and then read back.
    A given nn.Module is moved to the profile's device (and to channels_last when asked); its
    weights are not changed (training throughput runs on a copy). `guard` (default: a
    ContentionGuard with its documented thresholds) judges every timed window; a record with a
    window that stayed contended is `noisy` and is not stored in the cache.
    """
    profile, settings = split_overrides(profile, overrides)
    profile = profile.resolved()
    source = resolve_source(model, profile, settings)
    if source.spec is not None:  # refuse a model that cannot fit before allocating it (one line with the estimate)
        from blocks.preflight import check_fits

        check_fits(source.spec, profile.img_size, profile.batch_size, training="train" in profile.figures,
                   device=profile.device)
    if label:
        source.label = label
    with numeric_settings(profile):
        key_env = collect_env(profile.device, profile.precision, profile.channels_last, profile.compile)
        key_parts = cache_key_parts(source, profile, key_env)
        if cache is None:
            return _measure(source, profile, key_parts["env"], guard)
        store = cache if isinstance(cache, MeasureCache) else MeasureCache(cache)
        record = store.get_or_measure(key_parts, lambda: _measure(source, profile, key_parts["env"], guard))
        record.model = source.label  # the same architecture may have been stored under another name
        return record


def resolve_source(model: Any, profile: MeasureProfile, settings: Mapping[str, Any]) -> ModelSource:
    """resolve_model, with the profile's in_chans / num_classes passed on as model settings."""
    settings = dict(settings)
    if not isinstance(model, (nn.Module, ModelSource)):
        for key in ("in_chans", "num_classes"):
            if getattr(profile, key) is not None:
                settings.setdefault(key, getattr(profile, key))
    return resolve_model(model, settings, img_size=profile.img_size)


def fresh_guard(template: ContentionGuard | None, device: torch.device) -> ContentionGuard:
    """A guard with no history, from `template`'s settings (CPU share is judged on CPU windows only)."""
    base = template if template is not None else guard_module.default_guard()
    return dataclasses.replace(base, retried=0, stayed=[], _exhausted=False, check_cpu=base.check_cpu and device.type == "cpu")


def _measure(source: ModelSource, profile: MeasureProfile, fingerprint: str, guard: ContentionGuard | None) -> MeasureRecord:
    start = time.perf_counter()
    device = torch.device(profile.device)
    guard = fresh_guard(guard, device)
    record = MeasureRecord(
        model=source.label,
        arch_id=source.arch_id,
        batch_size=profile.batch_size,
        img_size=profile.img_size,
        profile=profile.to_dict(),
    )
    torch.manual_seed(profile.seed)
    if source.given:
        model = source.module
        assert model is not None
        was_training = model.training
    else:
        assert source.build is not None
        model = source.build()
        was_training = False
    in_chans = profile.in_chans or infer_in_chans(model)
    record.in_chans = in_chans
    try:
        if profile.wants("compute"):
            counts = _count(source, model, profile, in_chans)
            record.params, record.macs, record.flops = counts.params, counts.macs, counts.flops
            record.flops_breakdown = counts.breakdown
            record.compute_counted_on = counts.counted_on
        else:
            record.params = sum(p.numel() for p in model.parameters())
        model = model.to(device)
        if profile.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.eval()
        weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        record.weights_mb = round(weights / 2**20, 2)
        record.env = collect_env(device, profile.precision, profile.channels_last, profile.compile, model.modules())
        record.env["fingerprint"] = fingerprint
        runner = torch.compile(model, mode=profile.compile) if profile.compile else model
        if profile.wants("throughput"):
            run_inference(record, runner, profile, device, in_chans, guard)
        if profile.wants("latency"):
            run_latency(record, runner, profile, device, in_chans, guard)
        del runner
        if profile.wants("train"):
            train_model = copy.deepcopy(model) if source.given else model
            run_train(record, train_model, profile, device, in_chans, guard)
            del train_model
    finally:
        if source.given:
            model.train(was_training)
        free_memory(device, full=True)
    record.wall_s = round(time.perf_counter() - start, 3)
    record.threads = record.env.get("threads") if device.type == "cpu" else None
    record.noisy, record.noisy_reason = guard.noisy, guard.reason
    record.contention = guard.summary()
    if record.env:
        record.env["load_avg_end"] = load_average()
    return record


def _count(source: ModelSource, model: nn.Module, profile: MeasureProfile, in_chans: int) -> ComputeCounts:
    """On the meta device when we can build the model ourselves; else one batch-1 pass where it is."""
    if source.build is not None:
        return count_compute_fresh(source.build, profile.img_size, in_chans)
    return count_compute(model, profile.img_size, in_chans)


__all__ = [
    "cache_key_parts",
    "environment",
    "measure",
    "measure_key",
    "numeric_settings",
    "resolve_source",
    "split_overrides",
]
