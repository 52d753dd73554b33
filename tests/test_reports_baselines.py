"""reports: baselines are reference points that take part in the Pareto ranking, marked as baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybridlab.metrics import Objective
from reports.build import build_report
from reports.comparison import compare
from reports.demo import make_frame, write_demo_study, write_study_folder
from reports.pareto import aggregate
from reports.plots import compare_plot, pareto_plot
from reports.tables import architecture_table

MAX2 = [Objective("top1", "maximize"), Objective("throughput_img_s", "maximize")]


def _with_baseline() -> pd.DataFrame:
    return make_frame([
        {"pattern": "C | M*2", "family": "f", "top1": 70.0, "throughput_img_s": 300.0},
        {"pattern": "C | A*2", "family": "f", "top1": 75.0, "throughput_img_s": 100.0},
        {"pattern": "C | A*4", "family": "f", "top1": 71.0, "throughput_img_s": 150.0},
        {"pattern": "timm:resnet18", "label": "resnet18", "family": "baseline", "top1": 72.0,
         "throughput_img_s": 250.0, "is_baseline": True},
    ])


def test_baseline_takes_part_in_the_ranking():
    arch = aggregate(_with_baseline(), MAX2).set_index("pattern")
    assert arch.loc["timm:resnet18", "rank"] == 1  # nothing beats it on both objectives
    assert arch.loc["C | A*4", "rank"] == 2  # dominated by the baseline (72 > 71, 250 > 150)
    assert arch.loc["C | M*2", "rank"] == 1 and arch.loc["C | A*2", "rank"] == 1


def test_table_marks_the_baseline_and_says_it_is_ranked():
    table = architecture_table(aggregate(_with_baseline(), MAX2), MAX2)
    ranks = {row[1]: row[0] for row in table.rows}
    assert ranks["timm:resnet18"] == "1 (baseline)" and ranks["C | A*4"] == "2"
    assert any("Baselines take part in the ranking" in note for note in table.notes)


def test_pareto_plot_labels_a_baseline_on_the_front():
    fig = pareto_plot(aggregate(_with_baseline(), MAX2), MAX2, "t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert "baseline: resnet18" in labels
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "baseline: resnet18" in legend
    assert any("Baselines (black) take part in the front" in t for t in labels)


def test_baseline_on_the_front_is_counted_in_the_report(tmp_path):
    write_study_folder(tmp_path, "s", _with_baseline())
    out = build_report("s", results_dir=tmp_path)
    table = pd.read_csv(out / "table.csv").set_index("pattern")
    assert table.loc["timm:resnet18", "rank"] == 1 and bool(table.loc["timm:resnet18", "is_baseline"])
    page = (out / "report.html").read_text()
    assert "<b>3</b><span>on the front</span>" in page


def test_compare_keeps_baselines(tmp_path):
    write_demo_study(tmp_path / "a", name="a", seed=0, n_running=0)
    write_demo_study(tmp_path / "b", name="b", seed=1, n_running=0)
    out = compare(["a", "b"], results_dir=tmp_path)
    table = pd.read_csv(out / "compare.csv")
    assert table["baselines"].tolist() == [2, 2]
    archs = [("a", aggregate(make_frame([
        {"pattern": "C | M", "top1": 70.0, "throughput_img_s": 100.0},
        {"pattern": "timm:r", "label": "r", "top1": 80.0, "throughput_img_s": 90.0, "is_baseline": True}]), MAX2))]
    fig = compare_plot(archs, MAX2, "t")
    ax = fig.axes[0]
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())])
    assert 90.0 in xs  # the baseline is drawn
    assert any("baseline" in t.get_text() for t in ax.get_legend().get_texts())
