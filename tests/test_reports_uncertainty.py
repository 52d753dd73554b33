"""reports: intervals in tables and plots, ties with the front, noisy records, and the summary's claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hybridlab.metrics import Objective
from reports.build import build_report
from reports.demo import make_frame, write_study_folder
from reports.pareto import aggregate
from reports.plots import pareto_plot
from reports.summary import findings
from reports.tables import architecture_table

MAX2 = [Objective("top1", "maximize"), Objective("throughput_img_s", "maximize")]


def _rows(pattern: str, top1: list[float], thr: float, lo: float | None = None, hi: float | None = None, **extra):
    out = []
    for seed, acc in enumerate(top1):
        row = {"pattern": pattern, "family": "f", "seed": seed, "top1": acc, "throughput_img_s": thr, **extra}
        if lo is not None:
            row.update(throughput_lo=lo, throughput_hi=hi, throughput_interval="iqr")
        out.append(row)
    return out


def _study() -> pd.DataFrame:
    # A is on the front; B is dominated on the means but its intervals overlap A's on both axes (tied);
    # C is dominated and separated (its throughput interval lies below A's)
    return make_frame(_rows("C | A", [75.0, 76.0, 77.0], 200.0, 190.0, 210.0)
                      + _rows("C | B", [74.0, 76.0, 75.0], 195.0, 185.0, 205.0)
                      + _rows("C | C", [70.0, 71.0, 72.0], 100.0, 95.0, 105.0, noisy=True, noisy_reason="load 5.1 on 2 cores"))


def test_intervals_ties_and_resolved():
    arch = aggregate(_study(), MAX2).set_index("pattern")
    lo, hi = sps.t.interval(0.95, 2, loc=76.0, scale=sps.sem([75.0, 76.0, 77.0]))
    assert (arch.loc["C | A", "top1_lo"], arch.loc["C | A", "top1_hi"]) == pytest.approx((lo, hi))
    assert (arch.loc["C | A", "throughput_img_s_lo"], arch.loc["C | A", "throughput_img_s_hi"]) == (190.0, 210.0)
    assert arch.loc["C | A", "rank"] == 1 and arch.loc["C | B", "rank"] == 2 and arch.loc["C | C", "rank"] == 3
    assert bool(arch.loc["C | B", "tied"]) and not bool(arch.loc["C | C", "tied"])
    assert not bool(arch.loc["C | A", "resolved"]) and arch.loc["C | A", "tied_with"] == 1
    assert bool(arch.loc["C | C", "resolved"]) and bool(arch.loc["C | C", "noisy"])
    assert arch.loc["C | C", "noisy_reason"] == "load 5.1 on 2 cores"


def test_one_shared_measurement_is_not_an_interval():
    # two seeds share one cached throughput figure: no spread was measured, so no interval (not "± 0")
    arch = aggregate(make_frame(_rows("C | A", [75.0, 77.0], 264.0)), MAX2)
    assert np.isnan(arch.loc[0, "throughput_img_s_lo"]) and arch.loc[0, "throughput_img_s_mean"] == 264.0
    table = architecture_table(arch, MAX2)
    assert table.rows[0][table.columns.index("Throughput (img/s)")] == "264"


def test_table_shows_intervals_resolved_noisy_and_bootstrap():
    frame = make_frame(_rows("C | A", [75.0, 76.0, 77.0, 75.5, 76.5], 200.0, 190.0, 210.0)
                       + _rows("C | C", [70.0, 71.0, 72.0], 100.0, 95.0, 105.0, noisy=True, noisy_reason="busy"))
    arch = aggregate(frame, MAX2)
    table = architecture_table(arch, MAX2, frame)
    assert table.columns[-4:] == ["Top-1 bootstrap 95%", "n", "Resolved", "Noisy"]
    a, c = (dict(zip(table.columns, row)) for row in table.rows)
    assert a["Throughput (img/s)"] == "200 [190, 210]" and a["Noisy"] == "" and c["Noisy"] == "yes: busy"
    assert a["Top-1 bootstrap 95%"].startswith("[") and c["Top-1 bootstrap 95%"] == "–"  # only where n >= 5
    assert any("measured spread (iqr), from the trials' throughput_lo/throughput_hi" in n for n in table.notes)


def test_pareto_plot_draws_tied_points_and_interval_bars():
    fig = pareto_plot(aggregate(_study(), MAX2), MAX2, "t")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "tied with the front" in legend
    assert any("95% intervals" in t.get_text() for t in ax.texts)
    # the horizontal bar of C | A spans its measured throughput interval 190..210
    segments = [seg for coll in ax.collections if hasattr(coll, "get_segments") for seg in coll.get_segments()]
    assert any(np.allclose(sorted(seg[:, 0]), [190.0, 210.0]) and np.allclose(seg[:, 1], 76.0) for seg in segments)


def test_summary_says_what_is_and_is_not_resolved():
    frame = _study()
    said = findings(frame, aggregate(frame, MAX2), MAX2)
    text = " ".join(said)
    assert "1 of the 2 dominated architectures overlap a front point's interval on every objective" in text
    assert "Best Top-1 (%): C | A" in text and "is not resolved" in text
    assert "measured under contention" in text


def test_report_files_carry_the_intervals(tmp_path):
    write_study_folder(tmp_path, "s", _study())
    out = build_report("s", results_dir=tmp_path)
    csv = pd.read_csv(out / "table.csv").set_index("pattern")
    assert {"top1_lo", "top1_hi", "throughput_img_s_lo", "tied", "resolved", "noisy"} <= set(csv.columns)
    assert bool(csv.loc["C | B", "tied"])
    assert "what the data can tell" in (out / "summary.md").read_text()
    page = (out / "report.html").read_text()
    assert "What the data can tell" in page and "(tied with 1)" in page  # the best card says it is not resolved


def test_ablation_states_resolution_mdd_and_seeds_needed():
    from reports.ablation import ablation_frame, ablation_power, ablation_table
    from reports.stats import minimum_detectable_difference, seeds_needed

    rows = []
    for label, accs in (("default", [80.0, 82.0, 81.0]), ("v1", [79.0, 81.2, 80.1]), ("v2", [80.5, 81.0, 82.0])):
        rows += [{"pattern": f"C | {label}", "label": label, "seed": s, "top1": a, "throughput_img_s": 100.0}
                 for s, a in enumerate(accs)]
    frame = make_frame(rows)
    abl = ablation_frame(frame, MAX2, "default").set_index("label")
    v1 = sps.ttest_rel([79.0, 81.2, 80.1], [80.0, 82.0, 81.0]).confidence_interval(0.95)
    assert (abl.loc["v1", "delta_top1_lo"], abl.loc["v1", "delta_top1_hi"]) == pytest.approx((v1.low, v1.high))
    assert bool(abl.loc["v1", "resolved"]) and not bool(abl.loc["v2", "resolved"])
    d1, d2 = np.array([-1.0, -0.8, -0.9]), np.array([0.5, -1.0, 1.0])
    pooled = np.sqrt((d1.var(ddof=1) * 2 + d2.var(ddof=1) * 2) / 4)
    power = ablation_power(abl.reset_index())
    assert power.sd == pytest.approx(pooled) and power.seeds == 3 and (power.resolved, power.compared) == (1, 2)
    assert power.mdd == pytest.approx(minimum_detectable_difference(pooled, 3))
    assert abl.loc["v2", "seeds_needed"] == seeds_needed(d2.mean(), pooled)
    table = ablation_table(abl.reset_index(), MAX2, "default")
    notes = " ".join(table.notes)
    assert f"minimum detectable difference is {power.mdd:.2f} pp" in notes and "Resolved 1 of 2 variants" in notes
    said = " ".join(findings(frame, aggregate(frame, MAX2), MAX2, abl.reset_index(), "default"))
    assert "1 of 2 variants differ from the default (default)" in said and "v2 (+0.17 pp:" in said


def test_ablation_throughput_comes_from_the_side_by_side_ratio():
    from reports.ablation import ablation_frame, ablation_table

    rows = [{"pattern": "C | d", "label": "default", "seed": 0, "top1": 80.0, "throughput_img_s": 300.0,
             "throughput_rel": 1.0, "throughput_rel_lo": 1.0, "throughput_rel_hi": 1.0},
            {"pattern": "C | v", "label": "v", "seed": 0, "top1": 79.0, "throughput_img_s": 150.0,  # a busy moment
             "throughput_rel": 1.20, "throughput_rel_lo": 1.15, "throughput_rel_hi": 1.26}]
    abl = ablation_frame(make_frame(rows), MAX2, "default")
    assert abl["delta_throughput_img_s_pct"].tolist() == pytest.approx([0.0, 20.0])
    table = ablation_table(abl, MAX2, "default")
    assert table.rows[1][-1] == "+20.0 [+15.0, +26.0]"
    assert any("throughput_rel" in n for n in table.notes)
