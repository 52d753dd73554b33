"""Learning curves in the report: per-architecture means over seeds with the seed band, from the
`learning_curve` column (JSON text in trials.csv); no curves, no figure; identical data, identical bytes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from reports.build import build_report
from reports.curves import curve_points, curve_summary, learning_curves, parse_curve
from reports.demo import make_frame, write_study_folder

OBJECTIVES = [{"name": "top1", "direction": "maximize"}, {"name": "throughput_img_s", "direction": "maximize"}]


def _curve(seed: int, offset: float, epochs: int = 4) -> str:
    rng = np.random.default_rng(seed)
    points = [{"epoch": e, "train_loss": 2.0 / (e + 1) + offset, "val_loss": 2.2 / (e + 1) + offset,
               "top1": 40.0 + 8 * e - 10 * offset + float(rng.normal(0, 0.5))} for e in range(epochs)]
    return json.dumps(points)


def _frame(with_curves: bool = True):
    rows = []
    for pattern, offset, seeds in (("C | M*2", 0.0, (0, 1, 2)), ("C | A*2", 0.3, (0, 1)), ("C | M A", 0.6, (0,))):
        for seed in seeds:
            row = {"pattern": pattern, "family": "hybrid", "seed": seed, "top1": 60.0 + seed,
                   "throughput_img_s": 1000.0 * (1 + offset)}
            if with_curves:
                row["learning_curve"] = _curve(seed, offset)
            rows.append(row)
    rows.append({"pattern": "C | M*2", "state": "RUNNING", "seed": 3})
    return make_frame(rows)


def test_parse_curve_accepts_json_text_or_lists_and_skips_bad_entries():
    assert parse_curve('[{"epoch": 0, "top1": 10}, {"top1": 5}, "x", {"epoch": 1, "val_loss": NaN}]') == [
        {"epoch": 0.0, "top1": 10.0, "val_loss": None, "train_loss": None},
        {"epoch": 1.0, "top1": None, "val_loss": None, "train_loss": None}]
    assert parse_curve([{"epoch": 2, "train_loss": 0.5}])[0]["train_loss"] == 0.5
    assert parse_curve("not json") == parse_curve(None) == parse_curve("") == parse_curve(3.0) == []


def test_summary_means_over_seeds_with_t_interval_or_range():
    summary = curve_summary(curve_points(_frame()))
    top1 = summary[(summary["metric"] == "top1") & (summary["epoch"] == 2)].set_index("key")
    three = [json.loads(_curve(s, 0.0))[2]["top1"] for s in (0, 1, 2)]
    row = top1.loc["h-C | M*2"]
    half = sps.t.ppf(0.975, 2) * np.std(three, ddof=1) / math.sqrt(3)
    assert (row["n"], row["band"]) == (3, "t95")
    assert row["mean"] == pytest.approx(np.mean(three)) and row["hi"] - row["mean"] == pytest.approx(half)
    two = [json.loads(_curve(s, 0.3))[2]["top1"] for s in (0, 1)]
    row = top1.loc["h-C | A*2"]
    assert (row["band"], row["lo"], row["hi"]) == ("minmax", min(two), max(two))
    row = top1.loc["h-C | M A"]
    assert row["n"] == 1 and math.isnan(row["lo"]) and row["band"] == ""
    assert set(summary["epoch"]) == {0, 1, 2, 3}  # the running trial's seed is not counted
    assert (summary[summary["key"] == "h-C | M*2"]["n"] == 3).all()


def test_no_curves_means_no_figure_and_no_error():
    assert learning_curves(_frame(with_curves=False), "t") == (None, "")
    frame = _frame(with_curves=False)
    frame["learning_curve"] = "[]"
    assert learning_curves(frame, "t") == (None, "")


def test_report_gains_the_figure_byte_identical(tmp_path):
    write_study_folder(tmp_path, "curvy", _frame(), OBJECTIVES)
    out = build_report("curvy", results_dir=tmp_path)
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "curves.svg").read_text().lstrip().startswith("<?xml")
    page = (out / "report.html").read_text()
    assert "Learning curves" in page and "95% t-interval" in page and "range (min to max)" in page
    again = build_report("curvy", results_dir=tmp_path, out=tmp_path / "again")
    for name in ("curves.png", "curves.svg", "report.html"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    # the same study without curves: the stale figure goes, no error
    write_study_folder(tmp_path, "curvy", _frame(with_curves=False), OBJECTIVES)
    out = build_report("curvy", results_dir=tmp_path)
    assert not (out / "curves.png").exists() and not (out / "curves.svg").exists()
    assert "Learning curves" not in (out / "report.html").read_text()


def test_curves_depend_on_the_data():
    fig_a, _ = learning_curves(_frame(), "t")
    frame = _frame()
    frame.loc[0, "learning_curve"] = _curve(7, 0.0)
    fig_b, _ = learning_curves(frame, "t")
    from reports.figures import to_png

    assert to_png(fig_a) != to_png(fig_b)


def test_curves_from_a_live_study_attribute(tmp_path):
    import optuna

    study = optuna.create_study(study_name="live", directions=["maximize", "maximize"])
    for seed in (0, 1):
        curve = json.loads(_curve(seed, 0.1))
        study.add_trial(optuna.trial.create_trial(
            values=[curve[-1]["top1"], 900.0],
            user_attrs={"pattern": "C | M", "arch_hash": "h1", "seed": seed, "top1": curve[-1]["top1"],
                        "throughput_img_s": 900.0, "learning_curve": curve}))
    out = build_report(study, out=tmp_path / "report")
    assert (out / "curves.png").exists()
    assert "range (min to max) where 2 seeds finished" in (out / "report.html").read_text()
