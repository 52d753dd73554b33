"""`hybridlab compare` of a proxy study and a full one: the fidelity agreement section and its matching rule."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats as sps

from hybridlab.cli import main as cli_main
from hybridlab.errors import HybridlabError
from reports.comparison import compare
from reports.demo import make_frame, write_study_folder

PATTERNS = ["M M M", "M M A", "M A M", "A M M", "M A A", "A A A"]
PROXY_TOP1 = [60.0, 62.0, 61.0, 65.0, 63.0, 64.0]
FULL_TOP1 = [70.0, 73.0, 71.0, 74.0, 75.0, 72.0]


def _study(root, name, top1, hash_prefix, img_size, label=None):
    rows = [{"pattern": p, "arch_hash": f"{hash_prefix}-{p}", "top1": v, "throughput_img_s": 1000.0 - 100 * i,
             "label": label or p.replace(" ", "")} for i, (p, v) in enumerate(zip(PATTERNS, top1))]
    return write_study_folder(root, name, make_frame(rows), data={"name": "global_marks", "img_size": img_size})


@pytest.mark.slow
def test_a_proxy_study_is_matched_by_pattern_when_hashes_differ(tmp_path, capsys):
    _study(tmp_path, "proxy", PROXY_TOP1, "h64", 64)
    _study(tmp_path, "full", FULL_TOP1, "h224", 224)
    assert cli_main(["compare", "proxy", "full", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "full is the high fidelity; architectures matched by pattern" in out and "6 shared" in out
    folder = tmp_path / "compare-proxy-vs-full"
    agreement = pd.read_csv(folder / "agreement.csv")
    row = agreement[agreement["objective"] == "top1"].iloc[0]
    assert (row["low"], row["high"], row["matched_by"], row["shared"]) == ("proxy", "full", "pattern", 6)
    assert row["kendall_tau"] == pytest.approx(sps.kendalltau(PROXY_TOP1, FULL_TOP1).statistic)
    assert row["spearman_rho"] == pytest.approx(sps.spearmanr(PROXY_TOP1, FULL_TOP1).statistic)
    # the proxy's winner (A M M, 65) is #2 at full, 1 point below M A A (75)
    assert row["low_winner_rank_at_high"] == 2 and row["regret"] == pytest.approx(1.0)
    assert "Fidelity agreement" in (folder / "compare.html").read_text()
    assert (folder / "agreement.png").exists() and (folder / "agreement.md").exists()

    # --high turns the roles round; --match forces the key
    assert cli_main(["compare", "proxy", "full", "--results-dir", str(tmp_path), "--high", "proxy",
                     "--match", "label", "--out", str(tmp_path / "turned")]) == 0
    turned = pd.read_csv(tmp_path / "turned" / "agreement.csv").iloc[0]
    assert (turned["low"], turned["high"], turned["matched_by"]) == ("full", "proxy", "label")
    assert turned["kendall_tau"] == pytest.approx(row["kendall_tau"])  # tau is symmetric


@pytest.mark.slow
def test_identical_networks_are_matched_by_arch_hash(tmp_path):
    _study(tmp_path, "short", PROXY_TOP1, "same", 64)
    _study(tmp_path, "long", FULL_TOP1, "same", 64)
    folder = compare(["short", "long"], results_dir=tmp_path)
    assert set(pd.read_csv(folder / "agreement.csv")["matched_by"]) == {"arch_hash"}


def test_a_label_shared_by_several_architectures_cannot_match(tmp_path):
    _study(tmp_path, "a", PROXY_TOP1, "h64", 64, label="free")
    _study(tmp_path, "b", FULL_TOP1, "h224", 224, label="free")
    with pytest.raises(HybridlabError, match="--match label: some label names several architectures"):
        compare(["a", "b"], results_dir=tmp_path, match="label")
    with pytest.raises(HybridlabError, match="--high c: not one of the compared studies"):
        compare(["a", "b"], results_dir=tmp_path, high="c")


def test_unrelated_studies_get_no_agreement_section(tmp_path):
    _study(tmp_path, "a", PROXY_TOP1, "h64", 64)
    rows = [{"pattern": f"C {p}", "top1": 50.0, "throughput_img_s": 10.0 * i} for i, p in enumerate(PATTERNS)]
    write_study_folder(tmp_path, "other", make_frame(rows))
    folder = compare(["a", "other"], results_dir=tmp_path)
    assert not (folder / "agreement.csv").exists()
    assert "Fidelity agreement" not in (folder / "compare.html").read_text()


def test_two_shared_architectures_are_too_few_for_a_section(tmp_path):
    _study(tmp_path, "a", PROXY_TOP1, "h64", 64)
    rows = [{"pattern": p, "top1": 50.0 + i, "throughput_img_s": 10.0 * i} for i, p in enumerate(PATTERNS[:2])]
    write_study_folder(tmp_path, "b", make_frame(rows))
    folder = compare(["a", "b"], results_dir=tmp_path)
    assert not (folder / "agreement.csv").exists()
    assert "share 2 architectures (by pattern): too few (under 3)" in (folder / "compare.md").read_text()
