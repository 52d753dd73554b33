"""reports: Pareto ranks, hypervolume, tables, plots and the report folder, on hand-made trial tables."""

from __future__ import annotations

import base64
import json
import re
import statistics
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats as sps

from hybridlab.cli import main as cli_main
from hybridlab.errors import ConfigError, HybridlabError
from hybridlab.metrics import Objective
from reports.ablation import ablation_frame, ablation_table
from reports.build import build_report
from reports.comparison import compare
from reports.demo import make_frame, write_demo_study, write_study_folder
from reports.figures import to_png, to_svg
from reports.hypervolume import history, hypervolume, reference_point
from reports.labels import pattern_labels, shorten
from reports.load import load_study, mask_url, scrub, url_secrets
from reports.pareto import aggregate, dominates, nondominated_ranks, pareto_mask, to_minimization
from reports.plots import pareto_plot
from reports.tables import architecture_table, fmt_metric

optuna.logging.set_verbosity(optuna.logging.ERROR)
MAX2 = [Objective("top1", "maximize"), Objective("throughput_img_s", "maximize")]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frame(rows: list[dict]) -> pd.DataFrame:
    return make_frame(rows)


def _study_folder(root: Path, name: str, frame: pd.DataFrame, objectives=None, **manifest) -> Path:
    return write_study_folder(root, name, frame, objectives, f"name: {name}\nnote: <b>&amp; escaped</b>\n", **manifest)


# -- Pareto ------------------------------------------------------------------------------------------
def test_dominance_and_ranks_with_ties_and_duplicates():
    # minimisation points: (1,4) (2,2) (4,1) form the front; (2,2) twice (duplicate); (3,3) rank 2; (2,4) ties
    pts = np.array([[1, 4], [2, 2], [4, 1], [2, 2], [3, 3], [2, 4], [5, 5]], dtype=float)
    assert dominates([1, 1], [1, 2]) and not dominates([1, 2], [1, 2]) and not dominates([1, 3], [2, 2])
    assert nondominated_ranks(pts).tolist() == [1, 1, 1, 1, 2, 2, 3]
    assert pareto_mask(pts).tolist() == [True, True, True, True, False, False, False]
    assert nondominated_ranks(np.zeros((0, 2))).tolist() == []


def test_ranks_respect_a_minimize_objective():
    objectives = [Objective("top1", "maximize"), Objective("latency_ms", "minimize")]
    raw = np.array([[80.0, 10.0], [75.0, 5.0], [75.0, 6.0], [70.0, 20.0]])
    ranks = nondominated_ranks(to_minimization(raw, objectives))
    assert ranks.tolist() == [1, 1, 2, 3]


def test_aggregate_groups_seeds_ranks_baselines_and_keeps_infeasible_out_of_the_ranking():
    frame = _frame([
        {"pattern": "C | M*2", "family": "f1", "seed": 0, "top1": 70.0, "throughput_img_s": 100.0},
        {"pattern": "C | M*2", "family": "f1", "seed": 1, "top1": 72.0, "throughput_img_s": 110.0},
        {"pattern": "C | M*2", "family": "f1", "seed": 1, "top1": 72.0, "throughput_img_s": 110.0, "reused_from": 1},
        {"pattern": "C | A*2", "family": "f2", "top1": 75.0, "throughput_img_s": 50.0},
        {"pattern": "C | A*4", "family": "f2", "top1": 60.0, "throughput_img_s": 40.0},
        {"pattern": "C | A*8", "family": "f2", "top1": 99.0, "throughput_img_s": 999.0, "feasible": False},
        {"pattern": "timm:resnet18", "label": "resnet18", "top1": 90.0, "throughput_img_s": 900.0, "is_baseline": True},
        {"pattern": "C | M*9", "state": "RUNNING"},
        {"pattern": "C | M*9", "state": "FAIL", "fail_reason": "oom"},
    ])
    arch = aggregate(frame, MAX2).set_index("pattern")
    m2 = arch.loc["C | M*2"]
    assert m2["n"] == 2 and m2["top1_mean"] == pytest.approx(71.0)  # the reused trial is not counted twice
    assert m2["top1_std"] == pytest.approx(np.std([70.0, 72.0], ddof=1))
    assert np.isnan(arch.loc["C | A*2", "top1_std"])  # one seed: no std
    # the baseline (90, 900) beats every feasible candidate; the infeasible one is not ranked
    assert arch.loc["timm:resnet18", "rank"] == 1 and np.isnan(arch.loc["C | A*8", "rank"])
    assert arch.loc["C | M*2", "rank"] == 2 and arch.loc["C | A*2", "rank"] == 2 and arch.loc["C | A*4", "rank"] == 3
    assert "C | M*9" not in arch.index
    ordered = aggregate(frame, MAX2)["pattern"].tolist()
    assert ordered == ["timm:resnet18", "C | A*2", "C | M*2", "C | A*4", "C | A*8"]  # rank, then top-1 best first


# -- hypervolume -------------------------------------------------------------------------------------
def test_hypervolume_matches_hand_computed_values():
    # maximise both, reference (0, 0); front (1,3) (3,2) (4,1) -> slices 4*1 + 3*(2-1) + 1*(3-2) = 8;
    # (2,1) is dominated and the duplicate (3,2) adds nothing
    raw = np.array([[1.0, 3.0], [3.0, 2.0], [4.0, 1.0], [2.0, 1.0], [3.0, 2.0]])
    objectives = [Objective("a"), Objective("b")]
    ref = to_minimization(np.array([0.0, 0.0]), objectives)[0]
    assert hypervolume(to_minimization(raw, objectives), ref) == pytest.approx(8.0)
    # a point beyond the reference adds nothing
    assert hypervolume(np.array([[1.0, 1.0], [3.0, 0.5]]), [2.0, 2.0]) == pytest.approx(1.0)
    # 3-D (minimisation): the origin's box [0,2]^3 (volume 8) contains the other point's box
    cube = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert hypervolume(cube, [2.0, 2.0, 2.0]) == pytest.approx(8.0)
    # 3-D: boxes [1,2]x[0,2]x[0,2] and [0,2]x[1,2]x[0,2] (4 each) overlap in [1,2]x[1,2]x[0,2] (2): 6
    assert hypervolume(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), [2.0, 2.0, 2.0]) == pytest.approx(6.0)


def test_reference_point_rule_and_history():
    frame = _frame([
        {"pattern": "p1", "top1": 70.0, "throughput_img_s": 100.0},
        {"pattern": "p2", "top1": 80.0, "throughput_img_s": 50.0},
        {"pattern": "p1", "seed": 1, "top1": 74.0, "throughput_img_s": 100.0},
        {"pattern": "p3", "state": "FAIL"},
        {"pattern": "p3", "top1": 90.0, "throughput_img_s": 300.0},
    ])
    ref, rule = reference_point(frame, MAX2)
    assert ref.tolist() == pytest.approx([70.0 - 2.0, 50.0 - 25.0])  # worst minus 10 % of the range
    assert "worst" in rule
    hist = history(frame, MAX2, ref)
    assert hist["number"].tolist() == [0, 1, 2, 4]  # finished trials only
    # after trial 0: (70,100) -> (70-68)*(100-25) = 150; after 1: + (80,50) -> 2*75 + 10*25 = 400
    # after 2: p1 mean (72,100): 4*75 + (80-72)*25 = 500; after 4: (90,300) dominates all: 22*275
    assert hist["hypervolume"].tolist() == pytest.approx([150.0, 400.0, 500.0, 22.0 * 275.0])
    ref2, rule2 = reference_point(frame, MAX2, {"reference_point": {"top1": 0, "throughput_img_s": 0}})
    assert ref2.tolist() == [0.0, 0.0] and "manifest" in rule2
    with pytest.raises(ConfigError, match="reference_point"):
        reference_point(frame, MAX2, {"reference_point": [1, 2, 3]})
    best = history(frame, [Objective("top1")], [np.nan])
    assert best["hypervolume"].tolist() == [70.0, 80.0, 80.0, 90.0]  # single objective: best so far


# -- tables ------------------------------------------------------------------------------------------
def test_architecture_table_units_and_order():
    frame = _frame([
        {"pattern": "C | M*2", "family": "f", "top1": 71.234, "throughput_img_s": 1234.5, "params": 31_800_000,
         "macs": 4_520_000_000, "flops": 9_100_000_000, "latency_ms": 3.14159},
        {"pattern": "C | M*2", "seed": 1, "family": "f", "top1": 72.0, "throughput_img_s": 1300.0,
         "params": 31_800_000, "macs": 4_520_000_000, "flops": 9_100_000_000, "latency_ms": 3.2},
        {"pattern": "C | A*2", "family": "g", "top1": 60.0, "throughput_img_s": 100.0, "params": 52_300,
         "macs": 52_300_000, "flops": 104_600_000, "latency_ms": 9.0},
    ])
    table = architecture_table(aggregate(frame, MAX2), MAX2)
    assert table.columns == ["Rank", "Pattern", "Family", "Params (M)", "MACs (G)", "FLOPs (G)",
                             "Throughput (img/s)", "Latency (ms)", "Top-1 (%)", "n", "Resolved"]
    first, second = table.rows
    assert first[:6] == ["1", "C | M*2", "f", "31.8", "4.52", "9.10"]
    lo, hi = sps.t.interval(0.95, 1, loc=np.mean([71.234, 72.0]), scale=sps.sem([71.234, 72.0]))
    assert first[8] == f"71.62 [{lo:.2f}, {hi:.2f}]" and first[9] == "2"
    lo, hi = sps.t.interval(0.95, 1, loc=np.mean([1234.5, 1300.0]), scale=sps.sem([1234.5, 1300.0]))
    assert first[6] == f"1267 [{lo:.0f}, {hi:.0f}]"  # two separate measurements: an interval over them
    assert second[0] == "2" and second[3] == "0.0523" and second[8] == "60.00"  # one seed: no interval
    # C | A*2 lies outside the front point's throughput interval, but with one seed its top-1 has no interval:
    # its place below the front is a ranking of means, not resolved
    assert first[10] == "yes" and second[10] == "unknown (1 seed)"
    md = table.to_markdown()
    assert "| 1 | C \\| M*2 | f |" in md  # pipes in patterns are escaped for Markdown
    assert fmt_metric("top1", float("nan")) == "–"


def test_ablation_table_differences_to_the_default_row():
    frame = _frame([
        {"pattern": "A | B", "label": "attn_last_half", "top1": 80.0, "throughput_img_s": 1000.0},
        {"pattern": "A | B", "label": "attn_last_half", "seed": 1, "top1": 82.0, "throughput_img_s": 1000.0},
        {"pattern": "B | A", "label": "attn_first_half", "top1": 79.5, "throughput_img_s": 1100.0},
        {"pattern": "M | M", "label": "no_attn", "top1": 78.0, "throughput_img_s": 1500.0},
    ])
    abl = ablation_frame(frame, MAX2, "attn_last_half", {"no_attn": "Mamba only"})
    assert abl["label"].tolist() == ["attn_last_half", "attn_first_half", "no_attn"]
    # top-1 is compared seed by seed: seed 0 is the only seed both rows have (79.5 - 80, 78 - 80)
    assert abl["delta_top1"].tolist() == pytest.approx([0.0, -0.5, -2.0]) and abl["paired_n"].tolist() == [2, 1, 1]
    assert abl["delta_throughput_img_s_pct"].tolist() == pytest.approx([0.0, 10.0, 50.0])  # from the means
    table = ablation_table(abl, MAX2, "attn_last_half")
    assert [r[0] for r in table.rows] == ["attn_last_half (default)", "attn_first_half", "Mamba only"]
    assert table.columns[-4:] == ["Δ Top-1 (pp)", "Resolved", "Seeds to resolve", "Δ Throughput (%)"]
    assert table.rows[1][-4:] == ["−0.50", "no (one pair)", "–", "+10.0"]  # one pair: no spread, nothing resolved
    ordered = ablation_frame(frame, MAX2, None, ["no_attn", "attn_first_half"])
    assert ordered["label"].tolist() == ["no_attn", "attn_first_half", "attn_last_half"]
    named = ablation_table(ablation_frame(frame, MAX2, "attn_last_half", {"attn_last_half": "Last N/2 layers (default)"}),
                           MAX2, "attn_last_half")
    assert named.rows[0][0] == "Last N/2 layers (default)"  # a name that says it already is not marked twice


# -- masking and loading -----------------------------------------------------------------------------
def test_password_masking():
    url = "postgresql+psycopg2://alice:p%40ss-w0rd@db.example:5432/studies?sslmode=require"
    assert mask_url(url) == "postgresql+psycopg2://alice:***@db.example:5432/studies?sslmode=require"
    assert mask_url("mysql://bob:se@cret@host/db") == "mysql://bob:***@host/db"  # '@' inside the password
    assert mask_url("postgresql://host/db?user=u&password=hunter22") == "postgresql://host/db?user=u&password=***"
    assert mask_url("sqlite:///results/s/study.db") == "sqlite:///results/s/study.db"
    assert mask_url("postgresql://alice@host/db") == "postgresql://alice@host/db"
    secrets = set(url_secrets(url))  # the raw and decoded password, plus its pieces (a parser may quote a fragment)
    assert {"p%40ss-w0rd", "p@ss-w0rd"} <= secrets and all(s in "p%40ss-w0rd p@ss-w0rd" for s in secrets)
    text = "could not connect: postgresql://alice:p%40ss-w0rd@db/x (password p@ss-w0rd rejected)"
    assert "w0rd" not in scrub(text, url_secrets(url))


def test_unreachable_storage_is_one_line_without_the_password():
    url = "postgresql+psycopg2://alice:TopSecret99@127.0.0.1:1/studies?connect_timeout=2"
    with pytest.raises(HybridlabError) as info:
        load_study(url)
    message = str(info.value)
    assert "TopSecret99" not in message and "alice:***@127.0.0.1" in message and "\n" not in message


def test_missing_study_folder_and_storage_file(tmp_path):
    with pytest.raises(HybridlabError, match=r"study 'nope' not found"):
        load_study("nope", results_dir=tmp_path)
    with pytest.raises(HybridlabError, match="storage file not found"):
        load_study(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()  # never created by looking
    with pytest.raises(HybridlabError, match="journal file not found"):
        load_study(f"journal:///{tmp_path}/missing.log")
    (tmp_path / "garbage.db").write_text("not a database")
    with pytest.raises(HybridlabError, match=r"storage sqlite:///.*garbage.db is not a SQLite database"):
        load_study(str(tmp_path / "garbage.db"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HybridlabError, match="no trials.csv or study.db"):
        load_study(str(tmp_path / "empty"))


def test_cli_prints_one_line_for_a_missing_study(tmp_path, capsys):
    code = cli_main(["report", "missing_study", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"hybridlab report: study 'missing_study' not found: no folder {tmp_path / 'missing_study'}"]


# -- the report folder -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    write_demo_study(root / "demo", name="demo")
    return build_report("demo", results_dir=root)


def test_report_writes_every_file(demo_report):
    assert demo_report.name == "report" and demo_report.parent.name == "demo"
    names = sorted(p.name for p in demo_report.iterdir())
    assert names == ["hypervolume.png", "pareto.png", "pareto.svg", "report.html", "summary.md", "table.csv",
                     "table.md", "table.tex"]
    for name in ("pareto.png", "hypervolume.png"):
        assert (demo_report / name).read_bytes().startswith(PNG_MAGIC)
    svg = (demo_report / "pareto.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<dc:date>" not in svg
    table = pd.read_csv(demo_report / "table.csv")
    assert len(table) == 20 and table["rank"].iloc[0] == 1 and table["is_baseline"].sum() == 2
    md = (demo_report / "table.md").read_text()
    assert md.count("\n| ") == 21  # header + 20 architectures


def test_report_html_is_self_contained_with_images_tables_and_masked_secrets(demo_report):
    page = (demo_report / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert base64.b64decode(images[0]) == (demo_report / "pareto.png").read_bytes()
    assert base64.b64decode(images[1]) == (demo_report / "hypervolume.png").read_bytes()
    trials = pd.read_csv(demo_report.parent / "trials.csv")  # the expected cell, from the data itself
    deep = trials[(trials["pattern"] == "C | C*3 | M*6 A*6 | M*2 A*2") & (trials["state"] == "COMPLETE")]["top1"]
    lo, hi = sps.t.interval(0.95, len(deep) - 1, loc=statistics.mean(deep), scale=sps.sem(deep))
    cell = f"{statistics.mean(deep):.2f} [{lo:.2f}, {hi:.2f}]"
    assert "<table" in page and "C | C*3 | M*6 A*6 | M*2 A*2" in page and cell in page
    assert "Unfinished trials" in page and "CUDA out of memory at batch 64" in page and "RUNNING" in page
    assert "batch_size" in page and "torch" in page  # measurement profile and environment
    assert "s3cret-pw" not in page and "hybrid:***@db.example" in page  # the study file's URL is masked
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing loaded from outside the page


def test_identical_data_gives_byte_identical_files(demo_report, tmp_path):
    again = build_report(demo_report.parent, out=tmp_path / "again")
    for name in sorted(p.name for p in demo_report.iterdir()):
        assert (again / name).read_bytes() == (demo_report / name).read_bytes(), name


def test_pareto_plot_bytes_are_reproducible_and_depend_on_data():
    frame = _frame([{"pattern": f"C | M*{i} A*{4 - i}", "family": "f", "top1": 70.0 + i, "throughput_img_s": 500.0 - 90 * i}
                    for i in range(4)])
    arch = aggregate(frame, MAX2)
    first = pareto_plot(arch, MAX2, "t")
    png, svg = to_png(first), to_svg(first)
    second = pareto_plot(arch.iloc[::-1].reset_index(drop=True), MAX2, "t")  # input order does not matter
    assert to_png(second) == png and to_svg(second) == svg
    arch.loc[0, "top1_mean"] += 0.5
    assert to_png(pareto_plot(arch, MAX2, "t")) != png


def test_labels_shorten_and_drop_common_stages():
    labels, note = pattern_labels(["C | C*3 | M*4 A*4 | M*2 A*2", "C | C*3 | A*4 M*4 | M*2 A*2"])
    assert labels == ["… | M*4 A*4 | M*2 A*2", "… | A*4 M*4 | M*2 A*2"] and "'C | C*3'" in note
    short = shorten("C | C*3 | M[d_state=16,expand=2]*4 A[window=7]*4 | M*2 A*2", 34)
    assert short == "C | C*3 | M[…]*4 A[…]*4 | M*2 A*2"  # options hidden first
    cut = shorten("M A " * 20 + "| C", 20)
    assert len(cut) <= 20 and cut.startswith("M A M A") and "…" in cut and cut.endswith("| C")


def test_empty_study_writes_a_minimal_report(tmp_path):
    folder = _study_folder(tmp_path, "empty", _frame([]))
    messages: list[str] = []
    out = build_report("empty", results_dir=tmp_path, echo=messages.append)
    assert messages == [f"study 'empty' has no trials yet; wrote a minimal report to {out}"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "table.csv", "table.md", "table.tex"]
    page = (out / "report.html").read_text()
    assert "has no trials yet" in page
    assert "note: &lt;b&gt;&amp;amp; escaped&lt;/b&gt;" in page  # the study file is shown escaped
    assert out == folder / "report"


def test_unfinished_study_lists_trials_and_plots_nothing(tmp_path):
    _study_folder(tmp_path, "busy", _frame([{"pattern": "C | M", "state": "RUNNING"},
                                            {"pattern": "C | A", "state": "FAIL", "fail_reason": "loss is NaN"}]))
    messages: list[str] = []
    out = build_report(tmp_path / "busy", echo=messages.append)
    assert "no finished trial yet (1 fail, 1 running)" in messages[0]
    assert not (out / "pareto.png").exists() and not (out / "hypervolume.png").exists()
    page = (out / "report.html").read_text()
    assert "loss is NaN" in page and "RUNNING" in page


def test_single_objective_study_gets_a_ranking_plot(tmp_path):
    frame = _frame([{"pattern": f"C | M*{i}", "family": "f", "top1": 60.0 + i} for i in range(1, 4)])
    _study_folder(tmp_path, "single", frame, objectives=[{"name": "top1", "direction": "maximize"}])
    out = build_report("single", results_dir=tmp_path)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["hypervolume.png", "ranking.png", "ranking.svg", "report.html", "summary.md", "table.csv",
                     "table.md", "table.tex"]
    assert pd.read_csv(out / "table.csv")["rank"].tolist() == [1, 2, 3]
    # a later multi-objective run into the same folder removes the stale ranking files
    (tmp_path / "single" / "manifest.json").write_text(json.dumps({"study": "single"}))
    frame["throughput_img_s"] = [10.0, 20.0, 30.0]
    frame.to_csv(tmp_path / "single" / "trials.csv", index=False)
    out = build_report("single", results_dir=tmp_path)
    assert (out / "pareto.png").exists() and not (out / "ranking.png").exists()


def test_missing_objective_column_is_one_clear_error(tmp_path):
    _study_folder(tmp_path, "s", _frame([{"pattern": "p", "top1": 1.0}]),
                  objectives=[{"name": "top1"}, {"name": "latency_ms", "direction": "minimize"}])
    with pytest.raises(HybridlabError, match="objective 'latency_ms' .* has no value in any finished trial"):
        build_report("s", results_dir=tmp_path)


def test_ablation_study_writes_the_ablation_table(tmp_path):
    write_demo_study(tmp_path / "abl", name="abl", ablation=True, n_running=0, n_failed=0)
    out = build_report("abl", results_dir=tmp_path)
    md = (out / "ablation.md").read_text()
    assert "| attn_last_half (default) |" in md and "Δ Top-1 (pp)" in md
    assert pd.read_csv(out / "ablation.csv")["label"].iloc[0] == "attn_last_half"
    assert "Ablation" in (out / "report.html").read_text()


def _optuna_study(storage, name: str) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, directions=["maximize", "maximize"])
    study.set_metric_names(["top1", "throughput_img_s"])
    for i, (acc, thr) in enumerate([(70.0, 300.0), (75.0, 200.0), (72.0, 100.0)]):
        trial = study.ask()
        trial.set_user_attr("pattern", f"C | M*{i + 1}")
        trial.set_user_attr("arch_hash", f"h{i}")
        study.tell(trial, [acc, thr])
    study.ask()  # one still running
    return study


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_report_from_sqlite_and_journal_storage(tmp_path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    _optuna_study(f"sqlite:///{tmp_path}/s.db", "alpha")
    _optuna_study(f"sqlite:///{tmp_path}/s.db", "beta")
    with pytest.raises(HybridlabError, match=r"holds 2 studies \(alpha, beta\); choose one with --study"):
        load_study(f"sqlite:///{tmp_path}/s.db")
    data = load_study(f"sqlite:///{tmp_path}/s.db", study="beta")
    assert data.name == "beta" and [o.name for o in data.objectives] == ["top1", "throughput_img_s"]
    folder = tmp_path / "results" / "beta"  # a study folder with only its study.db, manifest naming the study
    folder.mkdir(parents=True)
    (tmp_path / "s.db").rename(folder / "study.db")
    (folder / "manifest.json").write_text(json.dumps({"study": "beta"}))
    assert load_study("beta", results_dir=tmp_path / "results").name == "beta"
    assert load_study(str(folder), study="alpha").name == "alpha"
    assert data.frame["state"].tolist() == ["COMPLETE"] * 3 + ["RUNNING"]
    in_memory = load_study(_optuna_study(None, "delta"), results_dir=tmp_path)  # an optuna.Study object
    assert in_memory.name == "delta" and len(in_memory.frame) == 4 and in_memory.folder == tmp_path / "delta"
    log = tmp_path / "j.log"
    _optuna_study(JournalStorage(JournalFileBackend(str(log))), "gamma")
    code = cli_main(["report", f"journal:///{log}", "--results-dir", str(tmp_path / "res")])
    table = pd.read_csv(tmp_path / "res" / "gamma" / "report" / "table.csv")
    assert code == 0 and table["rank"].tolist() == [1, 1, 2]


def test_compare_two_studies(tmp_path, capsys):
    _study_folder(tmp_path, "a", _frame([
        {"pattern": "C | M", "top1": 70.0, "throughput_img_s": 300.0},
        {"pattern": "C | A", "top1": 75.0, "throughput_img_s": 100.0},
        {"pattern": "C | A*2", "top1": 72.0, "throughput_img_s": 90.0},  # dominated by C | A
        {"pattern": "timm:r", "label": "r", "top1": 71.0, "throughput_img_s": 250.0, "is_baseline": True},
    ]))
    _study_folder(tmp_path, "b", _frame([{"pattern": "C | M", "top1": 69.0, "throughput_img_s": 310.0},
                                         {"pattern": "C | A", "top1": 74.0, "throughput_img_s": 120.0}]))
    _study_folder(tmp_path, "single", _frame([{"pattern": "p", "top1": 1.0}]), objectives=[{"name": "top1"}])
    assert cli_main(["compare", "a", "b", "--results-dir", str(tmp_path)]) == 0
    out = tmp_path / "compare-a-vs-b"
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.html", "compare.md", "compare.png",
                                                      "compare.svg"]
    table = pd.read_csv(out / "compare.csv")
    assert table["study"].tolist() == ["a", "b"] and table["architectures"].tolist() == [4, 2]
    assert table["on_front"].tolist() == [3, 2] and table["baselines_on_front"].tolist() == [1, 0]
    assert table["best_top1"].tolist() == [75.0, 74.0] and table["best_throughput_img_s"].tolist() == [300.0, 310.0]
    # reference from the pooled candidates: top1 69 - 0.6 = 68.4, img/s 90 - 22 = 68 (baselines not counted)
    # a: boxes from (70, 300) and (75, 100): 1.6 * 232 + 6.6 * 32 - 1.6 * 32 = 531.2
    # b: boxes from (69, 310) and (74, 120): 0.6 * 242 + 5.6 * 52 - 0.6 * 52 = 405.2
    assert table["hypervolume"].tolist() == pytest.approx([531.2, 405.2])
    assert "data:image/png;base64," in (out / "compare.html").read_text()
    with pytest.raises(HybridlabError, match="different objectives"):
        compare(["a", "single"], results_dir=tmp_path)
    with pytest.raises(HybridlabError, match="given twice"):
        compare(["a", "a"], results_dir=tmp_path)


def test_no_output_file_carries_a_storage_password(tmp_path):
    from reports.build import write_report
    from reports.load import StudyData

    url = "postgresql://alice:Hunter2-secret@db.example:5432/studies"
    frame = _frame([{"pattern": "C | M", "top1": 70.0, "throughput_img_s": 100.0},
                    {"pattern": "C | A", "state": "FAIL", "fail_reason": f"could not connect to {url}"}])
    data = StudyData(name="s", frame=frame, objectives=list(MAX2), source=mask_url(url), secrets=url_secrets(url),
                     manifest={"storage": url, "env": {"note": "password Hunter2-secret"}},
                     study_yaml=f"storage: {url}\n")
    messages: list[str] = []
    write_report(data, tmp_path / "out", echo=messages.append)
    for path in sorted((tmp_path / "out").iterdir()):
        text = path.read_bytes()
        assert b"Hunter2-secret" not in text, path.name
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("alice:***@db.example") >= 3  # source, manifest storage, study file, fail reason
    assert "Hunter2-secret" not in " ".join(messages)


def test_manifest_objectives_use_the_shared_vocabulary(tmp_path):
    # an older manifest may name a figure the registry does not know: kept, maximized by default;
    # a bare known name takes the registry's direction
    frame = _frame([{"pattern": "p", "my_score": 1.0, "latency_ms": 2.0}])
    _study_folder(tmp_path, "old", frame, objectives=[{"name": "my_score"}, "latency_ms"])
    data = load_study("old", results_dir=tmp_path)
    assert data.objectives == [Objective("my_score", "maximize"), Objective("latency_ms", "minimize")]
    _study_folder(tmp_path, "bad", frame, objectives=[{"name": "top1", "direction": "upwards"}])
    with pytest.raises(ConfigError, match=r"manifest.json: objectives\[0\]: direction must be maximize or minimize"):
        load_study("bad", results_dir=tmp_path)


def test_demo_study_file_is_a_valid_study_file(tmp_path) -> None:
    from reports.demo import write_demo_study
    from studies.config import load_study_config

    folder = write_demo_study(tmp_path / "demo", name="demo")
    config = load_study_config(str(folder / "study.yaml"), check_data=False)
    assert config.name == "demo" and config.sampler["name"] == "grid" and config.seeds == [0, 1, 2]
