"""A halving rung whose top-1 values sit within sampling noise of each other is called blind in the report."""

from __future__ import annotations

import pandas as pd
import pytest

from reports.rung_signal import blind_rungs, noise_half_width
from studies.table import normalize_frame


def frame(rung0: list[float], full: list[float]) -> pd.DataFrame:
    rows = []
    for i, value in enumerate(rung0):
        rows.append({"state": "COMPLETE", "arch_hash": f"h{i}", "pattern": f"p{i}", "label": f"l{i}", "seed": 0,
                     "top1": value, "fidelity_label": "rung 0 (1 epochs)", "fidelity_rank": 0, "is_baseline": False})
    for i, value in enumerate(full):
        rows.append({"state": "COMPLETE", "arch_hash": f"h{i}", "pattern": f"p{i}", "label": f"l{i}", "seed": 0,
                     "top1": value, "fidelity_label": "full", "fidelity_rank": 1000, "is_baseline": False})
    return normalize_frame(pd.DataFrame(rows))


def test_noise_half_width_is_the_binomial_difference_interval():
    # p = 0.5 on 1,000 images: sd of one score 1.58 pp, of a difference 2.24 pp, 95% half-width 4.38 pp
    assert noise_half_width(50.0, 1000) == pytest.approx(4.383, abs=1e-3)
    assert noise_half_width(10.0, 4000) < noise_half_width(10.0, 1000)


def test_a_rung_at_chance_is_blind_and_a_separated_one_is_not():
    manifest = {"data": {"val_subset": 1000}}
    blind = blind_rungs(frame([10.0, 10.4, 11.0, 10.2], [40.0, 60.0, 80.0]), manifest)
    assert len(blind) == 1 and "rung 0 (1 epochs)" in blind[0] and "10.0-11.0%" in blind[0]
    assert blind_rungs(frame([10.0, 25.0, 40.0], [40.0, 60.0, 80.0]), manifest) == []


def test_nothing_is_said_without_the_validation_size_or_enough_rows():
    assert blind_rungs(frame([10.0, 10.1, 10.2], [40.0, 60.0]), {}) == []
    assert blind_rungs(frame([10.0, 10.1], [40.0, 60.0]), {"data": {"val_subset": 1000}}) == []
