"""Side-by-side measurement with a fake clock: interleaved, seeded order; ratios within rounds survive
slow periods; IQR intervals; noisy flags. Nothing here is timed."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from hybridlab.errors import ConfigError
from hybridlab.measure.guard import ContentionGuard, GuardReaders
from hybridlab.measure.record import MeasureProfile
from hybridlab.measure.side_by_side import iqr_bounds, measure_side_by_side

PROFILE = MeasureProfile(device="cpu", batch_size=4, img_size=4, warmup_iters=1, warmup_s=0.0, window_s=0.0, iters=2,
                         threads=1, figures=("throughput",))  # fmt: skip


class Clock:
    """Fake wall and CPU clocks; `factor` slows every call down (a busy period), `starved` candidates
    get no CPU time while they run."""

    def __init__(self) -> None:
        self.now = 0.0
        self.cpu_now = 0.0
        self.factor = 1.0
        self.starved: set[str] = set()
        self.calls: list[str] = []

    def readers(self) -> GuardReaders:
        return GuardReaders(wall=lambda: self.now, cpu=lambda: self.cpu_now, load1=lambda: 0.5, cores=lambda: 2,
                            sleep=lambda s: None)  # fmt: skip


class Costly(nn.Module):
    """Each forward costs `cost` fake seconds x the clock's factor."""

    def __init__(self, name: str, cost: float, clock: Clock) -> None:
        super().__init__()
        self.name, self.cost, self.clock = name, cost, clock
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seconds = self.cost * self.clock.factor
        self.clock.now += seconds
        self.clock.cpu_now += 0.0 if self.name in self.clock.starved else seconds
        self.clock.calls.append(self.name)
        return self.fc(x.mean((2, 3)))


def models(clock: Clock) -> dict[str, nn.Module]:
    return {"ref": Costly("ref", 0.1, clock), "fast": Costly("fast", 0.05, clock), "slow": Costly("slow", 0.4, clock)}


def test_ratios_hold_through_slow_periods_and_order_is_seeded():
    clock = Clock()
    slowdowns = [1.0, 5.0, 1.0, 12.0, 2.0]
    seen: list[tuple[int, str]] = []

    def progress(r: int, label: str) -> None:
        seen.append((r, label))
        clock.factor = slowdowns[r]  # a busy period covers a whole round

    result = measure_side_by_side(models(clock), PROFILE, rounds=5, reference="ref", seed=3,
                                  guard=ContentionGuard(readers=clock.readers()), progress=progress)  # fmt: skip
    rng = random.Random(3)
    expected = [rng.sample(["ref", "fast", "slow"], 3) for _ in range(5)]
    assert result.orders == expected and [label for _, label in seen] == [x for o in expected for x in o]
    fast, slow, ref = (result.candidates[k].to_dict() for k in ("fast", "slow", "ref"))
    # absolute figures move 12x with the slow periods; ratios taken within a round do not
    assert fast["throughput_runs"] == pytest.approx([4 / 0.05 / f for f in slowdowns], rel=1e-4)
    assert fast["throughput_rel_runs"] == pytest.approx([2.0] * 5) and slow["throughput_rel_runs"] == pytest.approx([0.25] * 5)
    assert (fast["throughput_rel"], fast["throughput_rel_lo"], fast["throughput_rel_hi"]) == pytest.approx((2.0, 2.0, 2.0))
    assert ref["throughput_rel"] == 1.0 and ref["throughput_interval"] == "iqr"
    # the fake process always gets its CPU, so images per CPU-second give the same ratios
    assert fast["throughput_cpu_rel"] == pytest.approx(2.0) and slow["throughput_cpu_rel"] == pytest.approx(0.25)
    mid, lo, hi = iqr_bounds(sorted(4 / 0.1 / f for f in slowdowns))
    assert (ref["throughput_img_s"], ref["throughput_lo"], ref["throughput_hi"]) == pytest.approx((mid, lo, hi), rel=1e-3)
    assert ref["throughput_lo"] < ref["throughput_img_s"] < ref["throughput_hi"]
    assert not any(c["noisy"] for c in result.rows()) and result.warnings == [] and fast["threads"] == 1
    assert fast["iters_per_window"] == 2 and fast["batch_size"] == 4 and fast["rounds"] == 5


def test_same_seed_same_orders_other_seed_other_orders():
    def orders(seed: int) -> list[list[str]]:
        clock = Clock()
        return measure_side_by_side(models(clock), PROFILE, rounds=4, seed=seed,
                                    guard=ContentionGuard(readers=clock.readers())).orders  # fmt: skip

    assert orders(0) == orders(0) and orders(0) != orders(1)
    assert all(sorted(o) == ["fast", "ref", "slow"] for o in orders(0))


def test_a_starved_candidate_is_noisy_and_named():
    clock = Clock()
    clock.starved = {"slow"}
    guard = ContentionGuard(readers=clock.readers(), retries=1, min_window_s=0.0)
    result = measure_side_by_side(models(clock), PROFILE, rounds=3, guard=guard)
    slow = result.candidates["slow"]
    assert slow.to_dict()["throughput_cpu_img_s"] == 0.0  # no CPU time: no CPU-time rate
    assert slow.noisy and slow.noisy_reason.startswith("cpu 0% of 1 thread") and slow.retried == 1
    assert not result.candidates["ref"].noisy and result.warnings == [f"slow: {slow.noisy_reason}"]
    assert result.to_dict()["measurement_warnings"] == result.warnings


def test_reference_defaults_to_first_and_bad_arguments_are_one_line():
    clock = Clock()
    result = measure_side_by_side(models(clock), PROFILE, rounds=1, guard=ContentionGuard(readers=clock.readers()))
    assert result.reference == "ref" and len(result.candidates["fast"].rates) == 1
    for kwargs, where in [(dict(reference="nope"), "side_by_side.reference"), (dict(rounds=0), "side_by_side.rounds"),
                          (dict(rounds=2.5), "side_by_side.rounds")]:  # fmt: skip
        with pytest.raises(ConfigError) as err:
            measure_side_by_side(models(clock), PROFILE, **kwargs)
        assert err.value.where == where
    with pytest.raises(ConfigError, match="non-empty mapping"):
        measure_side_by_side({}, PROFILE)


def test_real_patterns_side_by_side():
    """End to end on two tiny patterns with the real clock: figures exist, the reference's ratio is 1."""
    settings = dict(dim=8, in_dim=8, num_heads=2, window_size=2, num_classes=3)
    prof = PROFILE.replace(img_size=8, iters=1)
    result = measure_side_by_side({"a": "C | M A", "b": "C | C C"}, prof, rounds=2, guard=ContentionGuard.off(), **settings)
    rows = {r["label"]: r for r in result.rows()}
    assert rows["a"]["throughput_rel"] == 1.0 and rows["b"]["throughput_img_s"] > 0
    assert rows["a"]["arch_id"].startswith("spec:") and result.env["threads"] == 1
