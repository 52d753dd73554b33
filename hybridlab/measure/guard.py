"""A contention guard around every timed window: was this process really running while we timed it?

On a shared CPU a timed window can lose half its wall time to other processes, and torch's OpenMP
threads then spin-wait for a descheduled peer, so a figure can fall 5-30x with nothing to show for
it. Two readings expose that without any timing threshold of our own:

- the process's CPU time over the window as a share of wall time x threads (threads capped at the
  core count): a process that ran undisturbed used close to all of it;
- the 1-minute load average against the core count: more runnable tasks than cores means someone
  waits, even when this window happened to be lucky (the load average lags by about a minute).

A window that did not get its CPU is retried after a pause, a bounded number of times (one flagged
by the load alone is not: the average cannot change in a pause); a window that stays contended marks the whole record `noisy` with a reason such as "cpu 41% of 2 threads; load 5.3
on 2 cores". Noisy records are never cached. Every reader (clock, CPU time, load, core count,
sleep) can be replaced, so tests simulate contention without timing anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _load1() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class GuardReaders:
    """Where the guard reads time, CPU time, load and cores from (replace them in tests)."""

    wall: Callable[[], float] = time.perf_counter
    cpu: Callable[[], float] = time.process_time  # all threads of this process
    load1: Callable[[], float | None] = _load1
    cores: Callable[[], int] = _cores
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class WindowCheck:
    """What the guard saw over one timed window."""

    wall_s: float
    cpu_share: float | None  # None when not judged (too short, or a CUDA window)
    threads: int
    load1: float | None
    cores: int
    reason: str | None  # None: not contended
    cpu_s: float | None = None  # CPU seconds of this process (all threads) over the window

    @property
    def contended(self) -> bool:
        return self.reason is not None


@dataclass
class ContentionGuard:
    """Judges timed windows and keeps count of retries and of windows that stayed contended.

    `min_cpu_share`: a window whose CPU time is below this share of wall x threads is contended.
    `load_margin`: a window that ends with the 1-minute load above cores + margin is contended.
    `retries` per window, each after `pause_s`; once one window stays contended after its retries,
    later windows are not retried (the contention is lasting, retrying only costs time).
    `check_cpu` False (CUDA windows) judges the load only. `enabled` False judges nothing.
    """

    min_cpu_share: float = 0.8
    load_margin: float = 0.5
    retries: int = 2
    pause_s: float = 0.5
    min_window_s: float = 0.02  # shorter windows are below the scheduler's granularity: CPU share not judged
    check_cpu: bool = True
    enabled: bool = True
    readers: GuardReaders = field(default_factory=GuardReaders)
    retried: int = 0
    stayed: list[str] = field(default_factory=list)  # reasons of the windows kept although contended
    _exhausted: bool = False

    @classmethod
    def off(cls, readers: GuardReaders | None = None) -> ContentionGuard:
        """A guard that times windows but never calls one contended."""
        return cls(enabled=False, readers=readers or GuardReaders())

    def start(self) -> tuple[float, float]:
        """Readings at the start of a window; pass them to `finish`."""
        return self.readers.wall(), self.readers.cpu()

    def finish(self, token: tuple[float, float], threads: int) -> WindowCheck:
        """Judge the window that began at `token`, run with `threads` intra-op threads."""
        wall1, cpu1 = self.readers.wall(), self.readers.cpu()
        wall = wall1 - token[0]
        cpu_s = cpu1 - token[1]
        if not self.enabled:
            return WindowCheck(wall, None, threads, None, 0, None, cpu_s)
        cores = int(self.readers.cores())
        used = max(1, min(int(threads), cores))
        share = None
        if self.check_cpu and wall >= self.min_window_s:
            share = cpu_s / (wall * used)
        load = self.readers.load1()
        problems = []
        if share is not None and share < self.min_cpu_share:
            problems.append(f"cpu {share:.0%} of {used} thread{'s' if used != 1 else ''}")
        if load is not None and load > cores + self.load_margin:
            problems.append(f"load {load:.1f} on {cores} core{'s' if cores != 1 else ''}")
        return WindowCheck(wall, share, used, load, cores, "; ".join(problems) or None, cpu_s)

    def should_retry(self, check: WindowCheck, attempt: int) -> bool:
        """True when this window may be timed again (after `pause`): its CPU share was low and retries are
        left. A window flagged by the load alone is not retried: a 1-minute average cannot change in a pause."""
        cpu_starved = check.cpu_share is not None and check.cpu_share < self.min_cpu_share
        if not check.contended or not cpu_starved or self._exhausted:
            return False
        if attempt >= self.retries:
            self._exhausted = True
            return False
        return True

    def pause(self) -> None:
        self.retried += 1
        self.readers.sleep(self.pause_s)

    def keep(self, check: WindowCheck) -> None:
        """Note a window that is kept; a contended one makes the record noisy."""
        if check.contended and check.reason is not None:
            self.stayed.append(check.reason)

    @property
    def noisy(self) -> bool:
        return bool(self.stayed)

    @property
    def reason(self) -> str | None:
        """The first kept contended window's reason, with how many windows stayed contended."""
        if not self.stayed:
            return None
        return f"{self.stayed[0]} ({len(self.stayed)} window{'s' if len(self.stayed) != 1 else ''} contended)"

    def summary(self) -> dict[str, Any]:
        """What goes into the record: whether it was judged, retries, and windows that stayed contended."""
        return {
            "enabled": self.enabled,
            "min_cpu_share": self.min_cpu_share,
            "load_margin": self.load_margin,
            "retried": self.retried,
            "contended_windows": len(self.stayed),
        }


def default_guard() -> ContentionGuard:
    """The guard `measure()` uses when none is given (tests replace this to simulate contention)."""
    return ContentionGuard()


def warnings_for(records: Any) -> list[str]:
    """One line per noisy record: `model: reason` (empty when every figure was taken undisturbed)."""
    return [f"{getattr(r, 'model', '?')}: {r.noisy_reason}" for r in records if getattr(r, "noisy", False)]


__all__ = ["ContentionGuard", "GuardReaders", "WindowCheck", "default_guard", "warnings_for"]
