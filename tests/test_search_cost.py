"""The one-shot search cost: supernet training + scoring against the median stand-alone training."""

from __future__ import annotations

import pandas as pd
import pytest

from reports.search_cost import cost_sentence, search_cost
from studies.table import normalize_frame


def frame(scoring: bool = True, role_column: bool = True) -> pd.DataFrame:
    rows = [
        {"state": "PRUNED", "label": "supernet", "role": "supernet", "train_time_s": 100.0},
        {"state": "COMPLETE", "label": "a", "fidelity_label": "supernet", "fidelity_rank": -1, "top1": 20.0,
         "train_time_s": None},
        {"state": "COMPLETE", "label": "a", "fidelity_label": "full", "fidelity_rank": 1000, "train_time_s": 40.0},
        {"state": "COMPLETE", "label": "b", "fidelity_label": "full", "fidelity_rank": 1000, "train_time_s": 60.0},
        {"state": "COMPLETE", "label": "c", "fidelity_label": "full", "fidelity_rank": 1000, "train_time_s": 500.0},
        {"state": "COMPLETE", "label": "conv", "is_baseline": True, "train_time_s": 5.0},  # not a yardstick
    ]
    if scoring:
        rows.insert(1, {"state": "PRUNED", "label": "supernet scoring", "role": "supernet_scoring",
                        "scoring_time_s": 80.0, "layouts": 4096, "scoring_images": 384, "load_avg_end": 1.25})
    out = normalize_frame(pd.DataFrame(rows))
    out["is_baseline"] = out["is_baseline"].fillna(False).astype(bool)
    return out if role_column else out.drop(columns="role")


def test_ranking_cost_in_standalone_trainings():
    cost = search_cost(frame())
    assert cost is not None
    assert cost.ranking_s == pytest.approx(180.0)
    assert cost.standalone_s == pytest.approx(60.0) and cost.standalone_n == 3  # median of 40, 60, 500
    assert cost.ratio == pytest.approx(3.0)
    text = cost_sentence(cost)
    assert "180 s" in text and "4,096 layouts on 384 images 80 s" in text and "3.0x" in text and "1.2" in text


def test_without_a_scoring_record_the_cost_is_called_unknown():
    cost = search_cost(frame(scoring=False, role_column=False))  # a table from before the scoring record
    assert cost is not None and cost.train_s == 100.0 and cost.ratio is None
    assert "not recorded" in cost_sentence(cost)


def test_a_study_without_a_supernet_has_no_cost():
    plain = frame()
    assert search_cost(plain[plain["role"] != "supernet"]) is None
    assert search_cost(plain[:0]) is None
