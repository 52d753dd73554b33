"""The timed phases of one measurement: inference throughput, batch-1 latency and training throughput.

Each phase builds its synthetic input on the device, wraps the step in autocast when the profile
asks for AMP, times it with `timing.time_windows` (warm-up, synchronised windows, contention guard)
and writes its figures into the record. Inference and training halve the batch on out-of-memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hybridlab.errors import HybridlabError
from hybridlab.measure.guard import ContentionGuard
from hybridlab.measure.record import MeasureProfile, MeasureRecord
from hybridlab.measure.timing import (
    PeakMemory,
    WindowTiming,
    is_oom,
    median_iqr,
    quartiles,
    time_windows,
    with_oom_backoff,
)


class MeasureError(HybridlabError):
    """A measurement that cannot be taken (e.g. out of memory even at batch size 1)."""


def autocast_for(profile: MeasureProfile, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    dtype = profile.amp_dtype
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def synthetic_input(batch: int, in_chans: int, profile: MeasureProfile, device: torch.device) -> torch.Tensor:
    x = torch.randn(batch, in_chans, profile.img_size, profile.img_size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if profile.channels_last else x


def _first(out: Any) -> torch.Tensor:
    while isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, Mapping):
        out = next(iter(out.values()))
    return out


def _timing_dict(t: WindowTiming, batch: int) -> dict[str, Any]:
    return {
        "batch": batch,
        "iters_per_window": t.iters,
        "windows_s": [round(w, 6) for w in t.window_s],
        "warmup_iters": t.warmup_iters,
        "warmup_s": round(t.warmup_s, 4),
        "cpu_share": [None if c.cpu_share is None else round(c.cpu_share, 3) for c in t.checks],
        "load1": [c.load1 for c in t.checks],
        "contended": [c.reason for c in t.checks],
    }


def cpu_rates(timing: WindowTiming, batch: int) -> list[float]:
    """Images per CPU-second of this process in each window: with one thread, close to the undisturbed
    img/s even when other processes took part of the core (see side_by_side)."""
    return [batch * timing.iters / c.cpu_s for c in timing.checks if c.cpu_s]


def _backoff_recorder(record: MeasureRecord, phase: str) -> Callable[[int, int], None]:
    def note(requested: int, used: int) -> None:
        record.oom_backoff[phase] = [requested, used]

    return note


def _timing_kwargs(profile: MeasureProfile, guard: ContentionGuard | None) -> dict[str, Any]:
    return dict(
        guard=guard,
        repeats=profile.repeats,
        warmup_iters=profile.warmup_iters,
        warmup_s=profile.warmup_s,
        window_s=profile.window_s,
        iters=profile.iters,
        max_iters=profile.max_iters,
    )


def run_inference(
    record: MeasureRecord,
    runner: nn.Module,
    profile: MeasureProfile,
    device: torch.device,
    in_chans: int,
    guard: ContentionGuard | None = None,
) -> None:
    autocast = autocast_for(profile, device)

    def run(batch: int) -> tuple[WindowTiming, PeakMemory]:
        x = synthetic_input(batch, in_chans, profile, device)

        def step() -> None:
            with autocast():
                runner(x)

        with torch.inference_mode(), PeakMemory(device) as mem:
            timing = time_windows(step, device, **_timing_kwargs(profile, guard))
        return timing, mem

    batch, (timing, mem) = with_oom_backoff(run, profile.batch_size, device, _backoff_recorder(record, "inference"))
    rates = timing.rates(batch)
    record.throughput_img_s, record.throughput_iqr_img_s = median_iqr(rates)
    record.throughput_lo, record.throughput_hi = quartiles(rates)
    record.throughput_interval = "iqr"
    record.throughput_cpu_img_s = median_iqr(cpu_rates(timing, batch))[0]
    record.throughput_runs = [round(r, 3) for r in rates]
    record.inference_batch_size = batch
    record.peak_mem_mb = round(mem.peak_mb, 2) if mem.peak_mb is not None else None
    record.peak_mem_method = mem.method
    record.timing["inference"] = _timing_dict(timing, batch)


def run_latency(
    record: MeasureRecord,
    runner: nn.Module,
    profile: MeasureProfile,
    device: torch.device,
    in_chans: int,
    guard: ContentionGuard | None = None,
) -> None:
    autocast = autocast_for(profile, device)
    x = synthetic_input(1, in_chans, profile, device)

    def step() -> None:
        with autocast():
            runner(x)

    try:
        with torch.inference_mode():
            timing = time_windows(step, device, per_call=True, **_timing_kwargs(profile, guard))
    except Exception as exc:
        if is_oom(exc):
            raise MeasureError(f"{record.model}: out of memory at batch size 1 on {device.type} (latency)") from None
        raise
    samples_ms = [s * 1000.0 for s in timing.samples_s]
    record.latency_ms, record.latency_iqr_ms = median_iqr(samples_ms)
    record.latency_samples = len(samples_ms)
    record.timing["latency"] = _timing_dict(timing, 1)


def run_train(
    record: MeasureRecord,
    model: nn.Module,
    profile: MeasureProfile,
    device: torch.device,
    in_chans: int,
    guard: ContentionGuard | None = None,
) -> None:
    """Forward, loss, backward and an AdamW step per iteration (GradScaler with fp16 AMP)."""
    autocast = autocast_for(profile, device)
    model.train()
    runner = torch.compile(model, mode=profile.compile) if profile.compile else model

    def run(batch: int) -> tuple[WindowTiming, PeakMemory]:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05)
        scaler = torch.amp.GradScaler(device.type) if profile.precision == "amp-fp16" else None
        x = synthetic_input(batch, in_chans, profile, device)
        labels: dict[int, torch.Tensor] = {}

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast():
                out = _first(runner(x)).float()
            if out.dim() == 2 and out.shape[-1] > 1:
                if out.shape[-1] not in labels:
                    gen = torch.Generator(device="cpu").manual_seed(profile.seed)
                    labels[out.shape[-1]] = torch.randint(0, out.shape[-1], (batch,), generator=gen).to(device)
                loss = F.cross_entropy(out, labels[out.shape[-1]])
            else:
                loss = out.pow(2).mean()
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()

        try:
            with PeakMemory(device) as mem:
                timing = time_windows(step, device, **_timing_kwargs(profile, guard))
        finally:
            opt.zero_grad(set_to_none=True)  # free the gradients before the next (smaller) attempt
        return timing, mem

    batch, (timing, mem) = with_oom_backoff(run, profile.batch_size, device, _backoff_recorder(record, "train"))
    rates = timing.rates(batch)
    record.train_throughput_img_s, record.train_throughput_iqr_img_s = median_iqr(rates)
    record.train_throughput_runs = [round(r, 3) for r in rates]
    record.train_batch_size = batch
    record.train_peak_mem_mb = round(mem.peak_mb, 2) if mem.peak_mb is not None else None
    if record.peak_mem_method is None:
        record.peak_mem_method = mem.method
    record.timing["train"] = _timing_dict(timing, batch)


__all__ = ["MeasureError", "autocast_for", "cpu_rates", "run_inference", "run_latency", "run_train", "synthetic_input"]
