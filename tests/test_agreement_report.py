"""The agreement section of a study report: fidelities split, numbers, figures, and old tables unchanged."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports.build import build_report
from reports.demo import make_frame, write_study_folder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ONE = [{"name": "top1", "direction": "maximize"}]


def _layouts(n: int) -> list[str]:
    return [" ".join("A" if (i >> b) & 1 else "M" for b in range(6)) for i in range(n)]


def supernet_study(n_low: int = 64, n_high: int = 8, seeds: int = 2) -> tuple[pd.DataFrame, dict[str, float], dict[str, float]]:
    """`n_low` layouts scored by a supernet, the first `n_high` also trained in full with `seeds` seeds."""
    rng = np.random.default_rng(0)
    rows, low, high = [], {}, {}
    for i, pattern in enumerate(_layouts(n_low)):
        attn = pattern.count("A")
        true = 70 + 1.5 * attn + rng.normal(0, 1.0)
        thr = 1000.0 / (1 + 0.3 * attn) * rng.uniform(0.95, 1.05)
        low[pattern] = true - 20 + rng.normal(0, 0.8)
        rows.append({"pattern": pattern, "top1": low[pattern], "throughput_img_s": thr,
                     "fidelity_label": "supernet", "fidelity_rank": -1})
        if i < n_high:
            values = [true + rng.normal(0, 0.3) for _ in range(seeds)]
            high[pattern] = float(np.mean(values))
            rows += [{"pattern": pattern, "seed": s, "top1": v, "throughput_img_s": thr * 1.01,
                      "fidelity_label": "full", "fidelity_rank": 1000} for s, v in enumerate(values)]
    rows.append({"pattern": "timm:resnet18", "label": "resnet18", "top1": 90.0, "throughput_img_s": 500.0,
                 "is_baseline": True})
    return make_frame(rows), low, high


@pytest.mark.slow
def test_a_supernet_study_reports_full_rows_only_and_gains_an_agreement_section(tmp_path):
    frame, low, high = supernet_study()
    write_study_folder(tmp_path, "sn", frame)
    folder = build_report("sn", results_dir=tmp_path)
    table = (folder / "table.md").read_text()
    assert table.count("| M ") + table.count("| A ") <= 9  # 8 retrained layouts + the baseline, not 64
    csv = pd.read_csv(folder / "table.csv")
    assert len(csv) == 9
    summary = (folder / "summary.md").read_text()
    assert "supernet: 64 finished trials, 64 architectures; full: 16 finished trials, 8 architectures" in summary
    assert "use only the full results" in summary
    agreement = pd.read_csv(folder / "agreement.csv")
    top1 = agreement[agreement["objective"] == "top1"].iloc[0]
    keys = sorted(high)
    assert top1["shared"] == 8 and top1["low"] == "supernet" and top1["high"] == "full"
    assert top1["kendall_tau"] == pytest.approx(sps.kendalltau([low[k] for k in keys], [high[k] for k in keys]).statistic)
    assert top1["spearman_rho"] == pytest.approx(sps.spearmanr([low[k] for k in keys], [high[k] for k in keys]).statistic)
    assert top1["kendall_lo"] <= top1["kendall_tau"] <= top1["kendall_hi"]
    assert (folder / "agreement.png").read_bytes()[:8] == PNG_MAGIC and (folder / "agreement.svg").exists()
    assert (folder / "predicted_front.png").read_bytes()[:8] == PNG_MAGIC  # 64 supernet rows against 8
    md = (folder / "agreement.md").read_text()
    assert "Front predicted by supernet" in md and "matched by arch_hash" in md
    page = (folder / "report.html").read_text()
    assert "Fidelity agreement" in page and "Predicted front" in page
    # the same data gives the same numbers
    again = build_report("sn", results_dir=tmp_path, out=tmp_path / "again")
    assert (again / "agreement.csv").read_bytes() == (folder / "agreement.csv").read_bytes()


@pytest.mark.slow
def test_too_few_shared_architectures_say_so_without_numbers(tmp_path):
    frame, _, _ = supernet_study(n_low=10, n_high=2)
    write_study_folder(tmp_path, "few", frame, ONE)
    folder = build_report("few", results_dir=tmp_path)
    md = (folder / "agreement.md").read_text()
    assert "| supernet | full | top1 | 2 | –" in md
    assert "2 architectures scored at both, fewer than 3, so there is no rank correlation" in (folder / "summary.md").read_text()
    assert not (folder / "predicted_front.png").exists()  # single objective: no front to predict


@pytest.mark.slow
def test_halving_rungs_each_get_compared_with_the_last(tmp_path):
    rows = []
    for i, pattern in enumerate(_layouts(9)):
        rows.append({"pattern": pattern, "top1": 50.0 + i, "throughput_img_s": 100.0 + i,
                     "fidelity_label": "rung 0 (1 epochs)", "fidelity_rank": 0})
        if i >= 3:
            rows.append({"pattern": pattern, "top1": 60.0 + i, "throughput_img_s": 100.0 + i,
                         "fidelity_label": "rung 1 (3 epochs)", "fidelity_rank": 1})
        if i >= 6:
            rows.append({"pattern": pattern, "top1": 70.0 + (8 - i), "throughput_img_s": 100.0 + i,
                         "fidelity_label": "full", "fidelity_rank": 1000})
    write_study_folder(tmp_path, "halving", make_frame(rows))
    folder = build_report("halving", results_dir=tmp_path)
    agreement = pd.read_csv(folder / "agreement.csv")
    assert agreement[["low", "objective"]].values.tolist() == [
        ["rung 0 (1 epochs)", "top1"], ["rung 0 (1 epochs)", "throughput_img_s"],
        ["rung 1 (3 epochs)", "top1"], ["rung 1 (3 epochs)", "throughput_img_s"]]
    assert agreement["shared"].tolist() == [3, 3, 3, 3]
    top1 = agreement[agreement["objective"] == "top1"]
    assert top1["kendall_tau"].tolist() == pytest.approx([-1.0, -1.0])  # the last rung reverses the order
    assert top1["regret"].tolist() == pytest.approx([2.0, 2.0])
    assert len(pd.read_csv(folder / "table.csv")) == 3


def test_a_study_with_one_fidelity_writes_no_agreement_files(tmp_path):
    frame, _, _ = supernet_study()
    old = frame[frame["fidelity_rank"].fillna(1000) == 1000].drop(columns=["fidelity_label", "fidelity_rank"])
    write_study_folder(tmp_path, "old", old)
    folder = build_report("old", results_dir=tmp_path)
    assert not any((folder / f).exists() for f in ("agreement.md", "agreement.png", "predicted_front.png"))
    assert "fidelities" not in (folder / "summary.md").read_text()
    assert "Fidelity agreement" not in (folder / "report.html").read_text()


def test_a_supernet_only_study_says_so_and_reports_its_rows():
    from reports.agreement_report import split_fidelities

    frame, _, _ = supernet_study(n_low=6, n_high=0)
    split = split_fidelities(frame)
    assert not split.several and len(split.main) == len(frame)
    assert "Every finished searched trial is at the supernet fidelity" in split.sentence
    full = frame[frame["is_baseline"]]
    assert split_fidelities(full).sentence == ""


@pytest.mark.slow
def test_a_crowded_supernet_only_study_reports_its_front_and_draws_every_score(tmp_path, monkeypatch):
    import reports.agreement_report as section

    monkeypatch.setattr(section, "CROWDED", 30)
    frame, _, _ = supernet_study(n_low=64, n_high=0)
    write_study_folder(tmp_path, "scored", frame)
    folder = build_report("scored", results_dir=tmp_path)
    summary = (folder / "summary.md").read_text()
    assert "Every finished searched trial is at the supernet fidelity" in summary
    shown = re.search(r"With 64 architectures, the table, Pareto front and best values show the (\d+) on its front",
                      summary)
    assert shown and 1 <= int(shown.group(1)) < 64
    table = pd.read_csv(folder / "table.csv")
    assert len(table) == int(shown.group(1)) + 1 and table["is_baseline"].sum() == 1  # the front and the baseline
    assert (folder / "predicted_front.png").read_bytes()[:8] == PNG_MAGIC
    assert not (folder / "agreement.csv").exists()
