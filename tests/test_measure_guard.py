"""The contention guard: fake readers simulate a busy machine (no timed assertions), the retry and
noisy rules, the cache refusing noisy records, bench's warning, and one real busy-loop check."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from hybridlab.cli import main as cli_main
from hybridlab.measure import guard as guard_module
from hybridlab.measure.cache import MeasureCache
from hybridlab.measure.guard import ContentionGuard, GuardReaders
from hybridlab.measure.record import MeasureProfile, MeasureRecord
from hybridlab.measure.timing import time_windows

TINY = dict(device="cpu", batch_size=2, img_size=8, repeats=3, warmup_iters=0, warmup_s=0.0, window_s=0.0, iters=2, threads=1)
SETTINGS = dict(dim=8, in_dim=8, num_heads=2, window_size=2, num_classes=3)


class FakeMachine:
    """A clock that advances 1 s per window and a CPU clock that advances `share[i]` x threads of it;
    `loads[i]` is the load average seen at the end of window i (the last value repeats)."""

    def __init__(self, shares, loads=(0.5,), threads=2, cores=2):
        self.shares, self.loads, self.threads, self.cores = list(shares), list(loads), threads, cores
        self.now = self.cpu_now = 0.0
        self.window = 0  # index of the window being timed
        self.sleeps: list[float] = []
        self._reads = 0

    def _pick(self, values):
        return values[min(self.window, len(values) - 1)]

    def wall(self) -> float:
        return self.now

    def cpu(self) -> float:
        return self.cpu_now

    def step(self) -> None:
        """One call of the timed function: one second passes, and the process gets its share of it."""
        self.now += 1.0
        self.cpu_now += self._pick(self.shares) * min(self.threads, self.cores)

    def load1(self) -> float:
        value = self._pick(self.loads)
        self.window += 1  # the guard reads the load once, at the end of each window
        return value

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def readers(self) -> GuardReaders:
        return GuardReaders(wall=self.wall, cpu=self.cpu, load1=self.load1, cores=lambda: self.cores, sleep=self.sleep)


def guard_for(machine: FakeMachine, **kw) -> ContentionGuard:
    return ContentionGuard(readers=machine.readers(), **kw)


def windows(machine: FakeMachine, guard: ContentionGuard, repeats: int = 3):
    torch.set_num_threads(machine.threads)
    try:
        return time_windows(machine.step, torch.device("cpu"), repeats=repeats, warmup_iters=0, warmup_s=0.0,
                            window_s=0.0, iters=1, max_iters=1, guard=guard)  # fmt: skip
    finally:
        torch.set_num_threads(1)


def test_quiet_windows_are_clean():
    machine = FakeMachine(shares=[0.97])
    guard = guard_for(machine)
    timing = windows(machine, guard)
    assert not guard.noisy and guard.reason is None and guard.retried == 0 and machine.sleeps == []
    assert [c.cpu_share for c in timing.checks] == pytest.approx([0.97] * 3)
    assert timing.window_s == [1.0, 1.0, 1.0]


def test_low_cpu_share_is_named_with_threads():
    machine = FakeMachine(shares=[0.41], loads=[5.3])
    guard = guard_for(machine, retries=0)
    windows(machine, guard, repeats=1)
    assert guard.noisy and guard.reason.startswith("cpu 41% of 2 threads; load 5.3 on 2 cores")


def test_high_load_alone_is_contention_but_not_retried():
    machine = FakeMachine(shares=[1.0], loads=[3.0])
    guard = guard_for(machine, retries=2)
    windows(machine, guard, repeats=2)
    assert guard.noisy and guard.stayed == ["load 3.0 on 2 cores"] * 2
    assert guard.retried == 0 and machine.sleeps == []  # a 1-minute average does not change in a pause


def test_contended_window_is_retried_and_the_retry_kept():
    # window 0 contended, its retry quiet; then quiet
    machine = FakeMachine(shares=[0.3, 0.95])
    guard = guard_for(machine, retries=2, pause_s=0.25)
    timing = windows(machine, guard)
    assert guard.retried == 1 and machine.sleeps == [0.25]
    assert not guard.noisy and len(timing.window_s) == 3
    assert all(c.cpu_share == pytest.approx(0.95) for c in timing.checks)


def test_lasting_contention_marks_noisy_after_bounded_retries():
    machine = FakeMachine(shares=[0.3])
    guard = guard_for(machine, retries=2, pause_s=0.1)
    timing = windows(machine, guard, repeats=4)
    assert guard.retried == 2 and machine.sleeps == [0.1, 0.1]  # later windows are not retried
    assert guard.noisy and len(guard.stayed) == 4 and len(timing.window_s) == 4
    assert guard.reason == "cpu 30% of 2 threads (4 windows contended)"


def test_threads_above_cores_are_capped():
    machine = FakeMachine(shares=[0.9], threads=4, cores=2)
    guard = guard_for(machine)
    timing = windows(machine, guard, repeats=1)
    assert timing.checks[0].threads == 2 and not guard.noisy


def test_disabled_guard_judges_nothing():
    machine = FakeMachine(shares=[0.1], loads=[9.0])
    guard = ContentionGuard.off(machine.readers())
    windows(machine, guard)
    assert not guard.noisy and machine.sleeps == []


def test_cache_never_stores_a_noisy_record(tmp_path):
    cache = MeasureCache(tmp_path)
    key = {"arch": "a"}
    noisy = MeasureRecord(model="m", throughput_img_s=10.0, noisy=True, noisy_reason="cpu 40% of 1 thread")
    assert cache.put(key, noisy) is None and len(cache) == 0
    calls = []
    got = cache.get_or_measure(key, lambda: calls.append(1) or noisy)
    again = cache.get_or_measure(key, lambda: calls.append(1) or noisy)
    assert got.noisy and again.noisy and len(calls) == 2 and len(cache) == 0
    cache.put(key, {"noisy": False, "x": 1})
    cache.path(key).write_text(cache.path(key).read_text().replace('"noisy": false', '"noisy": true'))
    assert cache.get(key) is None  # a noisy entry written by anything else is not served


def always_busy() -> ContentionGuard:
    """Every window contended: CPU time never advances, load 5.3 on 2 cores."""
    return ContentionGuard(retries=1, pause_s=0.0, min_window_s=0.0,
                           readers=GuardReaders(cpu=lambda: 0.0, load1=lambda: 5.3, cores=lambda: 2))  # fmt: skip


@pytest.mark.slow
def test_measure_marks_noisy_and_skips_the_cache(tmp_path):
    from hybridlab.measure import measure

    prof = MeasureProfile(**dict(TINY, figures=("throughput",)))
    first = measure("C | M A", prof, cache=str(tmp_path), guard=always_busy(), **SETTINGS)
    second = measure("C | M A", prof, cache=str(tmp_path), guard=always_busy(), **SETTINGS)
    assert first.noisy and first.noisy_reason.startswith("cpu 0% of 1 thread; load 5.3 on 2 cores")
    assert first.contention["retried"] == 1 and first.contention["contended_windows"] == 3
    assert first.threads == 1 and second.cached is False and len(MeasureCache(tmp_path)) == 0
    quiet = ContentionGuard(readers=GuardReaders(load1=lambda: None), min_window_s=1e9)  # judges nothing it can see
    third = measure("C | M A", prof, cache=str(tmp_path), guard=quiet, **SETTINGS)
    fourth = measure("C | M A", prof, cache=str(tmp_path), guard=quiet, **SETTINGS)
    assert not third.noisy and fourth.cached is True


@pytest.mark.slow
def test_bench_warns_in_one_line_and_json_lists_warnings(tmp_path, capsys, monkeypatch):
    out = tmp_path / "b.json"
    flags = ["--device", "cpu", "--batch-size", "2", "--img-size", "8", "--repeats", "1", "--warmup-iters", "0",
             "--warmup-s", "0", "--window-s", "0", "--threads", "1", "--figures", "throughput"]  # fmt: skip
    model = ["--dim", "8", "--in-dim", "8", "--num-heads", "2", "--window-size", "2", "--num-classes", "3"]
    monkeypatch.setattr(guard_module, "default_guard", always_busy)
    assert cli_main(["bench", "C | M A", *flags, *model, "--json", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and "contention" in err[0] and "C | M A: cpu 0% of 1 thread" in err[0]
    assert json.loads(out.read_text())["measurement_warnings"] == ["C | M A: cpu 0% of 1 thread; load 5.3 on 2 cores (1 window contended)"]
    quiet = ContentionGuard(readers=GuardReaders(load1=lambda: None), min_window_s=1e9)
    monkeypatch.setattr(guard_module, "default_guard", lambda: quiet)
    assert cli_main(["bench", "C | M A", *flags, *model, "--json", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads(out.read_text())["measurement_warnings"] == []


BUSY_CHILD = textwrap.dedent("""
    import json, os, subprocess, sys
    from hybridlab.measure.guard import ContentionGuard, GuardReaders
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, shared with the busy loops below
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        guard = ContentionGuard(retries=1, pause_s=0.1, readers=GuardReaders(load1=lambda: None))
        for attempt in range(2):
            token = guard.start()
            total = 0
            for i in range(3_000_000):  # a fixed amount of work, not a fixed time
                total += i
            check = guard.finish(token, threads=1)
            if not guard.should_retry(check, attempt):
                break
            guard.pause()
        guard.keep(check)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(json.dumps({"share": check.cpu_share, "reason": guard.reason}))
""")


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_real_busy_loops_on_our_core_are_flagged():
    out = subprocess.run([sys.executable, "-c", BUSY_CHILD], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["share"] < 0.8 and result["reason"].startswith("cpu "), result
