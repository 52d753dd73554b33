"""`hybridlab measure`: every finished architecture of a study timed side by side after training, its
figures shown on every trial of that architecture, re-runnable without retraining. Tiny models, two
rounds, no timed assertions."""

from __future__ import annotations

import argparse

import optuna
import pytest
from conftest import fake_train, tiny_raw

import studies.training
from hybridlab.cli import main as cli_main
from studies import measure_phase
from studies.config import load_study_config
from studies.measure_phase import FIELDS, SIDE_BY_SIDE, MeasureOptions, measure_study
from studies.runner import RunOptions, StudyRunner, run_study
from studies.table import read_trials

RAW = tiny_raw(seeds=[0, 1], baselines={"conv": {"pattern": "C | C C"}}, ablation={"default_label": "mixer_only"})


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """The tiny study (3 cells + a conv baseline, 2 seeds) run with instant fake training."""
    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)
    config = load_study_config("tiny.yaml", raw=RAW)
    run_study(config, RunOptions(results_dir=tmp_path, echo=lambda line: None, progress=False))
    return config


def _study(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny' / 'study.db'}")


@pytest.mark.slow
def test_every_trial_of_an_architecture_gets_its_side_by_side_figures(tmp_path, trained) -> None:
    lines: list[str] = []
    record = measure_study(trained, MeasureOptions(results_dir=tmp_path, rounds=2, echo=lines.append))
    assert record["reference"] == "mixer_only" and record["rounds"] == 2
    frame = read_trials(tmp_path / "tiny")
    assert len(frame) == 8 and set(frame["state"]) == {"COMPLETE"}
    for column in (*FIELDS, "measured_side_by_side_at"):
        assert frame[column].notna().all(), column
    assert (frame["measured_side_by_side_at"] == record["measured_side_by_side_at"]).all()
    for _, rows in frame.groupby("arch_hash"):  # both seeds of an architecture: one measurement
        assert len(rows) == 2 and rows["throughput_rel"].nunique() == 1 and rows["throughput_img_s"].nunique() == 1
    ref = frame[frame["label"] == "mixer_only"]
    assert (ref["throughput_rel"] == 1.0).all() and (ref["throughput_rel_lo"] == 1.0).all()
    assert (frame["throughput_interval"] == "iqr").all()
    assert frame["throughput_trial_img_s"].notna().all()  # the trial's own figure is kept beside it
    assert any("x1.000 of mixer_only" in line for line in lines)
    assert any(line.startswith("note: the trials' objective values") for line in lines)
    assert (tmp_path / "tiny" / "side_by_side.json").is_file()


@pytest.mark.slow
def test_a_rerun_replaces_the_last_measurement(tmp_path, trained, monkeypatch) -> None:
    measure_study(trained, MeasureOptions(results_dir=tmp_path, rounds=2, echo=lambda line: None))
    first = _study(tmp_path).user_attrs[SIDE_BY_SIDE]
    monkeypatch.setattr(measure_phase.time, "gmtime", lambda *a: (2030, 1, 2, 3, 4, 5, 2, 2, 0))
    measure_study(trained, MeasureOptions(results_dir=tmp_path, rounds=3, echo=lambda line: None))
    second = _study(tmp_path).user_attrs[SIDE_BY_SIDE]
    assert second["rounds"] == 3 and second["measured_side_by_side_at"] == "2030-01-02T03:04:05Z"
    assert second["measured_side_by_side_at"] != first["measured_side_by_side_at"]
    frame = read_trials(tmp_path / "tiny")
    assert (frame["measured_side_by_side_at"] == "2030-01-02T03:04:05Z").all()


@pytest.mark.slow
def test_the_reference_is_the_first_baseline_without_an_ablation_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)
    raw = {k: v for k, v in RAW.items() if k != "ablation"}
    config = load_study_config("tiny.yaml", raw={**raw, "seeds": [0]})
    run_study(config, RunOptions(results_dir=tmp_path, echo=lambda line: None, progress=False))
    record = measure_study(config, MeasureOptions(results_dir=tmp_path, rounds=1, echo=lambda line: None))
    assert record["reference"] == "conv"


def test_a_study_with_no_finished_trials_gives_one_line(tmp_path) -> None:
    config = load_study_config("tiny.yaml", raw=RAW)
    StudyRunner(config, RunOptions(results_dir=tmp_path, echo=lambda line: None)).open()  # planned, not run
    lines: list[str] = []
    assert measure_study(config, MeasureOptions(results_dir=tmp_path, rounds=2, echo=lines.append)) is None
    assert lines == ["study tiny: no finished trials to measure"]


def test_a_study_never_run_is_one_line_and_creates_nothing(tmp_path, capsys) -> None:
    path = tmp_path / "tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump(RAW))
    code = cli_main(["measure", str(path), "--results-dir", str(tmp_path), "--rounds", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("hybridlab measure: ")
    assert not (tmp_path / "tiny" / "study.db").exists()


def test_rounds_out_of_range_are_refused(tmp_path, capsys) -> None:
    assert cli_main(["measure", "quickstart", "--rounds", "0", "--results-dir", str(tmp_path)]) == 2
    assert "--rounds: must be between 1 and 1000" in capsys.readouterr().err


@pytest.mark.slow
def test_phase_after_measures_at_the_end_of_run(tmp_path, monkeypatch, capsys) -> None:
    from hybridlab.commands import run as run_command

    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)
    config = load_study_config("tiny.yaml", raw={**RAW, "seeds": [0]})
    config.measure["phase"] = "after"  # what `measure: {phase: after}` gives once the section accepts it
    monkeypatch.setattr("studies.config.load_study_config", lambda *a, **k: config)
    args = argparse.Namespace(study="tiny.yaml", overrides=[], n_trials=None, results_dir=tmp_path, storage=None,
                              device=None, retry_failed=False, check=False, no_report=True, command="run")
    assert run_command.main(args) == 0
    record = _study(tmp_path).user_attrs[SIDE_BY_SIDE]
    assert record["reference"] == "mixer_only" and len(record["by_arch"]) == 4
    assert "measuring 4 architectures side by side" in capsys.readouterr().out


def test_only_the_highest_fidelity_is_measured_and_supernet_rows_keep_their_prediction(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from studies.measure_phase import finished_architectures
    from studies.side_by_side_view import Overlaid

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")

    def add(arch: str, label: str, rank: int, predicted: bool = False) -> None:
        attrs = {"arch_hash": arch, "fidelity_label": label, "fidelity_rank": rank, "throughput_img_s": 100.0}
        if predicted:
            attrs["throughput_predicted"] = True
        study.add_trial(create_trial(value=1.0, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                                     user_attrs=attrs))

    for arch in ("a", "b", "c"):
        add(arch, "supernet", -1, predicted=True)
    add("a", "full", 1000)
    add("b", "full", 1000)
    assert list(finished_architectures(study)) == ["a", "b"]
    view = Overlaid(study, {"a": {"throughput_img_s": 250.0}})
    got = {(t.user_attrs["arch_hash"], t.user_attrs["fidelity_label"]): t.user_attrs["throughput_img_s"]
           for t in view.get_trials()}
    assert got[("a", "full")] == 250.0 and got[("a", "supernet")] == 100.0
    only_supernet = optuna.create_study()
    only_supernet.add_trial(create_trial(value=1.0, user_attrs={"arch_hash": "a", "fidelity_label": "supernet",
                                                                  "fidelity_rank": -1}))
    assert finished_architectures(only_supernet) == {}
