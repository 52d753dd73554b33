"""Promotion between halving rungs on synthetic values: top 1/eta, Pareto rank + crowding, ties, NaN."""

from __future__ import annotations

import math

import pytest

from studies.promotion import Row, crowding, fronts, promote, quota

MAX = ["maximize"]
TWO = ["maximize", "maximize"]


def keys(promotions) -> list:
    return [p.key for p in promotions]


def test_quota_is_ceil_n_over_eta() -> None:
    assert [quota(n, 3) for n in (0, 1, 2, 3, 4, 7, 9, 10)] == [0, 1, 1, 1, 2, 3, 3, 4]
    assert quota(5, 2) == 3
    with pytest.raises(ValueError):
        quota(3, 1)


def test_single_objective_takes_the_top_third() -> None:
    rows = [Row(name, (value,), i) for i, (name, value) in enumerate(
        [("a", 50.0), ("b", 71.0), ("c", 65.0), ("d", 69.0), ("e", 10.0), ("f", 70.0), ("g", 30.0)])]
    out = promote(rows, MAX, eta=3)
    assert keys(out) == ["b", "f", "d"]
    assert out[0].reason == "top 3 of 7 by maximize (place 1)"


def test_minimize_takes_the_smallest() -> None:
    rows = [Row("a", (3.0,), 0), Row("b", (1.0,), 1), Row("c", (2.0,), 2), Row("d", (5.0,), 3)]
    assert keys(promote(rows, ["minimize"], eta=2)) == ["b", "c"]


def test_ties_go_to_the_lower_order_whatever_the_input_order() -> None:
    rows = [Row("late", (60.0,), 9), Row("early", (60.0,), 2), Row("low", (10.0,), 0)]
    assert keys(promote(rows, MAX, eta=3)) == ["early"]
    assert keys(promote(list(reversed(rows)), MAX, eta=3)) == ["early"]


def test_all_equal_values_promote_by_order() -> None:
    rows = [Row(f"r{i}", (1.0, 1.0), order) for i, order in enumerate([5, 3, 8, 1, 0, 2])]
    assert keys(promote(rows, TWO, eta=3)) == ["r4", "r3"]  # one front, every row a boundary: order decides
    assert keys(promote([Row(r.key, (1.0,), r.order) for r in rows], MAX, eta=3)) == ["r4", "r3"]


def test_nan_and_missing_values_are_never_promoted() -> None:
    rows = [Row("nan", (math.nan,), 0), Row("none", (None,), 1), Row("inf", (math.inf,), 2), Row("ok", (1.0,), 3),
            Row("short", (), 4)]
    assert keys(promote(rows, MAX, eta=2)) == ["ok"]  # quota 3, but only one row has a finite value
    assert promote([Row("nan", (math.nan, 1.0), 0)], TWO, eta=3) == []


def test_one_row_is_promoted_and_no_row_promotes_nothing() -> None:
    assert keys(promote([Row("only", (5.0,), 0)], MAX, eta=3)) == ["only"]
    assert keys(promote([Row("only", (5.0, 1.0), 0)], TWO, eta=3)) == ["only"]
    assert promote([], MAX, eta=3) == []


def test_non_dominated_sorting() -> None:
    rows = [Row("a", (3.0, 1.0)), Row("b", (1.0, 3.0)), Row("c", (2.0, 2.0)), Row("d", (1.0, 1.0)),
            Row("e", (2.0, 0.5)), Row("f", (0.0, 0.0))]
    scores = {r.key: r.values for r in rows}
    assert [sorted(r.key for r in front) for front in fronts(rows, scores)] == [["a", "b", "c"], ["d", "e"], ["f"]]


def test_multi_objective_admits_whole_fronts_first() -> None:
    rows = [Row("a", (3.0, 1.0), 0), Row("b", (1.0, 3.0), 1), Row("c", (2.0, 2.0), 2), Row("d", (1.0, 1.0), 3),
            Row("e", (2.0, 0.5), 4), Row("f", (0.0, 0.0), 5), Row("g", (0.1, 0.1), 6), Row("h", (0.0, 0.2), 7),
            Row("i", (0.05, 0.05), 8)]
    out = promote(rows, TWO, eta=3)  # quota 3 = the whole first front
    assert sorted(keys(out)) == ["a", "b", "c"]
    assert all(p.reason == "front 0 of 9 rows (top 3)" for p in out)


def test_crowding_distance_breaks_ties_within_the_cut_front() -> None:
    # one front of five on a line; the boundary rows are infinitely far, then the row with the widest gap
    rows = [Row("p0", (0.0, 10.0), 0), Row("p1", (1.0, 9.0), 1), Row("p2", (5.0, 5.0), 2), Row("p3", (9.0, 1.0), 3),
            Row("p4", (10.0, 0.0), 4), Row("x", (0.0, 0.0), 5)]
    scores = {r.key: r.values for r in rows}
    distance = crowding(rows[:5], scores)
    assert distance["p0"] == distance["p4"] == math.inf
    assert distance["p2"] == pytest.approx(1.6) and distance["p1"] == pytest.approx(1.0)
    out = promote(rows, TWO, eta=2)  # quota 3 of 6: the front of five is cut to three
    assert keys(out) == ["p0", "p4", "p2"]
    assert "crowding distance inf" in out[0].reason and "crowding distance 1.6" in out[2].reason


def test_minimize_and_maximize_mixed() -> None:
    # top-1 up, latency down: b dominates a; c trades
    rows = [Row("a", (60.0, 5.0), 0), Row("b", (70.0, 4.0), 1), Row("c", (50.0, 1.0), 2), Row("d", (40.0, 9.0), 3)]
    assert sorted(keys(promote(rows, ["maximize", "minimize"], eta=2))) == ["b", "c"]


def test_an_explicit_count_overrides_the_quota() -> None:
    rows = [Row(i, (float(i),), i) for i in range(6)]
    assert keys(promote(rows, MAX, eta=3, k=4)) == [5, 4, 3, 2]
    assert promote(rows, MAX, eta=3, k=0) == []
