"""Timing loops that a reviewer can trust: warm-up by iterations and time, synchronised windows, repeats.

CUDA work is asynchronous, so every timed window starts and ends with `torch.cuda.synchronize()`;
a host clock read without it measures launch time, one of the ways published vision-Mamba
throughputs came out up to 2x too high. Throughput is images over the wall time of a whole window
(median over windows); latency is each single call, synchronised on both sides.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import math
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from hybridlab.measure.guard import ContentionGuard, WindowCheck

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or a CPU allocator failure (a RuntimeError that says so)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        return isinstance(exc, MemoryError) or any(
            key in text for key in ("out of memory", "can't allocate memory", "not enough memory", "cannot allocate memory")
        )
    return False


def free_memory(device: torch.device, full: bool = False) -> None:
    """Drop unreachable tensors (young generations only unless `full`: a full pass over a process
    with torch and timm loaded costs about 0.3 s) and return cached CUDA blocks."""
    gc.collect() if full else gc.collect(1)
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class WindowTiming:
    """Seconds of each timed window, the iterations per window and how the warm-up went."""

    window_s: list[float]
    iters: int
    warmup_iters: int
    warmup_s: float
    samples_s: list[float] = field(default_factory=list)  # per-call times (latency mode only)
    checks: list[WindowCheck] = field(default_factory=list)  # the contention guard's view of each kept window

    def rates(self, items_per_iter: int) -> list[float]:
        return [items_per_iter * self.iters / t for t in self.window_s if t > 0]


def warm_up(
    step: Callable[[], object],
    device: torch.device,
    min_iters: int,
    min_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, float, float]:
    """Run `step` until at least `min_iters` calls AND `min_s` seconds have passed.

    Returns (iterations, seconds, seconds of one more synchronised call), the last being the
    estimate used to size the timed windows.
    """
    synchronize(device)
    start = clock()
    n = 0
    while n < min_iters or clock() - start < min_s:
        step()
        n += 1
    synchronize(device)
    elapsed = clock() - start
    t0 = clock()
    step()
    synchronize(device)
    return n + 1, elapsed, clock() - t0


def iters_for(per_iter_s: float, window_s: float, fixed: int | None, max_iters: int) -> int:
    if fixed is not None:
        return fixed
    if per_iter_s <= 0:
        return max_iters
    return max(1, min(max_iters, math.ceil(window_s / per_iter_s)))


def time_windows(
    step: Callable[[], object],
    device: torch.device,
    *,
    repeats: int,
    warmup_iters: int,
    warmup_s: float,
    window_s: float,
    iters: int | None,
    max_iters: int,
    per_call: bool = False,
    guard: ContentionGuard | None = None,
) -> WindowTiming:
    """Warm up, then time `repeats` windows of `iters` calls each, synchronised around every window.

    With `per_call`, each call is also synchronised and timed on its own (for latency). With a
    `guard`, its clock times the windows, and a window it finds contended is timed again after a
    pause (its bounded retries); windows kept although contended are noted in the guard.
    """
    guard = guard if guard is not None else ContentionGuard.off()
    clock = guard.readers.wall
    n_warm, warm_s, one = warm_up(step, device, warmup_iters, warmup_s, clock)
    n = iters_for(one, window_s, iters, max_iters)
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    windows: list[float] = []
    samples: list[float] = []
    checks: list[WindowCheck] = []
    for _ in range(repeats):
        attempt = 0
        while True:
            calls: list[float] = []
            synchronize(device)
            token = guard.start()
            for _ in range(n):
                if per_call:
                    t0 = clock()
                    step()
                    synchronize(device)
                    calls.append(clock() - t0)
                else:
                    step()
            synchronize(device)
            check = guard.finish(token, threads)
            if not guard.should_retry(check, attempt):
                break
            attempt += 1
            guard.pause()
        guard.keep(check)
        windows.append(check.wall_s)
        samples.extend(calls)
        checks.append(check)
    return WindowTiming(window_s=windows, iters=n, warmup_iters=n_warm, warmup_s=warm_s, samples_s=samples, checks=checks)


def median_iqr(values: list[float]) -> tuple[float | None, float | None]:
    """Median and interquartile range (q75 - q25, 'inclusive' quartiles so 2+ values work)."""
    if not values:
        return None, None
    if len(values) == 1:
        return float(values[0]), 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return float(statistics.median(values)), float(q3 - q1)


def quartiles(values: list[float]) -> tuple[float | None, float | None]:
    """(q25, q75), 'inclusive' like median_iqr; one value gives (value, value)."""
    if not values:
        return None, None
    if len(values) == 1:
        return float(values[0]), float(values[0])
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return float(q1), float(q3)


def with_oom_backoff(
    run: Callable[[int], T], batch_size: int, device: torch.device, on_backoff: Callable[[int, int], None] | None = None
) -> tuple[int, T]:
    """Call `run(batch)`; on out-of-memory halve the batch and retry, down to 1.

    Returns (batch that worked, result). `on_backoff(requested, used)` is called once when the batch
    had to shrink. An OOM at batch 1 propagates.
    """
    batch = batch_size
    while True:
        oom = False
        try:
            result = run(batch)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is an OOM
            if not is_oom(exc) or batch <= 1:
                raise
            oom = True  # leave the except block first so the traceback's tensors can be freed
        if oom:
            free_memory(device)
            batch = max(1, batch // 2)
            continue
        if batch != batch_size and on_backoff is not None:
            on_backoff(batch_size, batch)
        return batch, result


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_freed_heap() -> bool:
    """Hand memory that Python/torch already freed back to the OS (glibc malloc_trim), so resident-memory
    growth measured next is not hidden by heap pages cached from earlier work. False where unsupported."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim(0)
    return True


def _maxrss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if os.uname().sysname == "Darwin" else value * 1024


class PeakMemory:
    """Peak memory of the code inside `with`, in MiB (`peak_mb`), and how it was taken (`method`).

    CUDA: `torch.cuda.max_memory_allocated` after a reset (weights + activations + workspace of the
    caching allocator's live tensors). CPU: the growth of resident memory above its value at entry
    (activations and workspace; the already-loaded weights are not included), from /proc/self/statm
    sampled every `interval_s` in a thread, raised to the exact kernel-tracked ru_maxrss when the
    process's lifetime peak grew inside the block. Freed heap is returned to the OS first
    (malloc_trim), otherwise memory cached from earlier models would hide the growth.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.002) -> None:
        self.device = device
        self.interval_s = interval_s
        self.peak_mb: float | None = None
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = 0
        self._peak = 0
        self._maxrss0 = 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = _rss_bytes()
            if rss is not None and rss > self._peak:
                self._peak = rss

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda.max_memory_allocated"
            return self
        gc.collect(1)
        trimmed = release_freed_heap()
        base = _rss_bytes()
        self._maxrss0 = _maxrss_bytes()
        if base is None:
            self.method = "ru_maxrss growth (no /proc/self/statm)"
            self._base = self._maxrss0
        else:
            self.method = (
                f"peak RSS growth over the run (sampled every {self.interval_s * 1000:g} ms, + ru_maxrss"
                + (", after malloc_trim)" if trimmed else ")")
            )
            self._base = self._peak = base
            self._thread = threading.Thread(target=self._sample, name="hybridlab-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            rss = _rss_bytes()
            if rss is not None:
                self._peak = max(self._peak, rss)
        maxrss = _maxrss_bytes()
        peak = self._peak
        if maxrss > self._maxrss0:  # the lifetime peak was set inside the block: it is exact
            peak = max(peak, maxrss)
        self.peak_mb = max(0, peak - self._base) / 2**20


__all__ = [
    "PeakMemory",
    "WindowTiming",
    "free_memory",
    "is_oom",
    "iters_for",
    "median_iqr",
    "quartiles",
    "synchronize",
    "time_windows",
    "warm_up",
    "with_oom_backoff",
]
