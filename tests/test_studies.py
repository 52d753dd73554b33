"""Studies end to end on CPU: tiny trials, resume, de-duplication, failures, bad files, several workers."""

from __future__ import annotations

import json
import signal

import optuna
import pandas as pd
import pytest
import yaml
from conftest import KILLER, python, run, states, tiny_raw
from optuna.trial import TrialState

import studies.training
from hybridlab.cli import main as cli_main
from studies.config import StudyConfigError, load_study_config


@pytest.mark.slow
def test_tiny_grid_study_records_everything(tmp_path) -> None:
    study, lines = run(tiny_raw(), tmp_path)
    assert states(study) == ["COMPLETE"] * 3
    folder = tmp_path / "tiny"
    table = pd.read_csv(folder / "trials.csv")
    for column in ("number", "state", "pattern", "arch_hash", "seed", "top1", "throughput_img_s", "params", "macs", "latency_ms"):
        assert column in table.columns
    assert list(table["pattern"]) == ["C | M A", "C | A M", "C | M*2"]
    assert list(table["family"]) == ["attn_last_half", "attn_first_half", "mixer_only"]
    assert table["top1"].between(0, 100).all() and (table["params"] > 0).all() and (table["throughput_img_s"] > 0).all()
    assert table["arch_hash"].nunique() == 3
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["objectives"] == [{"name": "top1", "direction": "maximize"},
                                      {"name": "throughput_img_s", "direction": "maximize"}]
    assert yaml.safe_load((folder / "study.yaml").read_text())["name"] == "tiny"
    # a finished trial keeps its best weights only (train.checkpoints: best, weights-only after the trial)
    assert (folder / "trials" / "0" / "best.ckpt").is_file() and not (folder / "trials" / "0" / "last.ckpt").exists()
    trial_lines = [line for line in lines if line.startswith("[trial") and "| top1" in line]  # one per finished trial
    assert len(trial_lines) == 3 and "img/s" in trial_lines[0]
    starts = [line for line in lines if " · pattern " in line]  # one when each trial starts: "trial k of N"
    assert len(starts) == 3 and "trial 1 of 3 · pattern 'C | M A' · seed 0" in starts[0]
    epochs = [line for line in lines if " epoch 1/1 " in line]  # the progress line of each trial's epoch
    assert len(epochs) == 3 and "loss " in epochs[0] and "img/s" in epochs[0]
    attrs = study.trials[0].user_attrs
    for key in ("pattern", "arch_hash", "seed", "top1", "top5", "val_loss", "params", "macs", "flops",
                "throughput_img_s", "latency_ms", "train_time_s", "measure_env", "learning_curve", "current_epoch"):
        assert key in attrs, key
    assert [p["epoch"] for p in attrs["learning_curve"]] == [1] and attrs["current_epoch"] == 1
    assert attrs["learning_curve"][0]["top1"] == pytest.approx(attrs["top1"])


@pytest.mark.slow
def test_rerun_keeps_finished_trials_and_extends_the_plan(tmp_path) -> None:
    run(tiny_raw(), tmp_path, n_trials=2)
    study, lines = run(tiny_raw(), tmp_path, n_trials=2)
    assert states(study) == ["COMPLETE"] * 2
    assert "2 trials finished, 0 to run" in lines[0]
    study, _ = run(tiny_raw(), tmp_path)  # the study file's grid has 3
    assert states(study) == ["COMPLETE"] * 3


@pytest.mark.slow
def test_duplicate_candidate_is_not_trained_twice(tmp_path, monkeypatch) -> None:
    calls = []
    real = studies.training.train_and_evaluate

    def counting(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(studies.training, "train_and_evaluate", counting)
    raw = tiny_raw(sampler={"name": "random", "seed": 0}, n_trials=3)
    raw["search_space"]["layout"]["family"] = ["attn_last_half"]  # a space of one architecture
    study, lines = run(raw, tmp_path)
    assert states(study) == ["COMPLETE"] * 3
    assert len(calls) == 1
    assert [t.user_attrs.get("reused_from") for t in study.trials] == [None, 0, 0]
    assert len({t.values[0] for t in study.trials}) == 1
    assert "reused trial 0" in [line for line in lines if line.startswith("[trial")][-1]


@pytest.mark.slow
def test_seeds_give_one_trial_per_architecture_and_seed(tmp_path) -> None:
    raw = tiny_raw(seeds=[0, 1])
    raw["search_space"]["layout"]["family"] = ["attn_last_half", "mixer_only"]
    study, _ = run(raw, tmp_path)
    pairs = [(t.user_attrs["family"], t.user_attrs["seed"]) for t in study.trials]
    assert pairs == [("attn_last_half", 0), ("mixer_only", 0), ("attn_last_half", 1), ("mixer_only", 1)]  # seed-major
    assert "reused_from" not in study.trials[2].user_attrs


@pytest.mark.slow
def test_search_sampler_trains_every_seed_of_a_sampled_architecture(tmp_path) -> None:
    raw = tiny_raw(sampler={"name": "tpe", "seed": 0, "n_startup_trials": 2}, n_trials=2, seeds=[0, 1])
    study, _ = run(raw, tmp_path)
    trials = study.trials
    assert len(trials) == 4 and states(study) == ["COMPLETE"] * 4
    by_arch: dict[str, list[int]] = {}
    for t in trials:
        by_arch.setdefault(t.user_attrs["arch_hash"] + str(t.user_attrs.get("seed_of", t.number)), []).append(t.user_attrs["seed"])
    assert sorted(sorted(v) for v in by_arch.values()) == [[0, 1], [0, 1]]


@pytest.mark.slow
def test_grid_runs_each_table5_pattern_exactly_once(tmp_path, monkeypatch) -> None:
    trained = []

    def fake_train(model, datamodule, recipe, root_dir, seed, **kwargs):
        trained.append(model.spec.pattern)
        return {"top1": 50.0, "top5": 90.0, "val_loss": 1.0, "epochs": 1, "train_time_s": 0.0}

    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)
    raw = tiny_raw()
    raw["model"].update(pattern="C | M*4 A*4", window_size=[4, 4])
    raw["search_space"]["layout"]["family"] = [
        "random", "attn_first_half", "interleave_am", "interleave_ma", "attn_last_quarter", "attn_last_half"
    ]
    study, _ = run(raw, tmp_path)
    families = [t.user_attrs["family"] for t in study.trials]
    assert families == ["random", "attn_first_half", "interleave_am", "interleave_ma", "attn_last_quarter", "attn_last_half"]
    assert len(set(trained)) == len(trained) == 6


@pytest.mark.slow
def test_constraints_prune_before_training(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(studies.training, "train_and_evaluate", lambda *a, **k: pytest.fail("trained an infeasible candidate"))
    study, lines = run(tiny_raw(constraints={"max_params": 10}), tmp_path, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["fail_reason"].startswith("infeasible: params")
    assert trial.constraints == {"max_params": pytest.approx(trial.user_attrs["params"] - 10)}
    assert "pruned: infeasible" in [line for line in lines if line.startswith("[trial")][-1]


@pytest.mark.slow
def test_nan_loss_fails_the_trial_and_the_study_goes_on(tmp_path, monkeypatch) -> None:
    from blocks.spec import ModelSpec

    real_build = ModelSpec.build

    def build(self, **extra):
        model = real_build(self, **extra)
        if self.pattern == "C | A M":
            model.head.bias.data.fill_(float("nan"))
        return model

    monkeypatch.setattr(ModelSpec, "build", build)
    study, lines = run(tiny_raw(), tmp_path)
    assert states(study) == ["COMPLETE", "FAIL", "COMPLETE"]
    reason = study.trials[1].user_attrs["fail_reason"]
    assert "loss" in reason.lower() and "nan" in reason.lower()
    assert any("FAILED" in line and "nan" in line.lower() for line in lines)
    assert pd.read_csv(tmp_path / "tiny" / "trials.csv")["state"].tolist() == ["COMPLETE", "FAIL", "COMPLETE"]


# --- bad study files -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "changes,message",
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"train__epochs": "many"}, "train.epochs: "),
        ({"model__num_heads": [1, 3]}, "model.num_heads: stage 2: 3 heads do not divide width 16"),
        ({"model__window_size": [4, 16]}, "model.window_size: stage 2 window 16 is larger than its 4x4 feature map"),
        ({"data": {"name": "fashion_mnist", "root": "/nonexistent/fmnist"}}, "/nonexistent/fmnist"),
        ({"data": {"name": "imagenet21k"}}, "data.name: unknown dataset 'imagenet21k'"),
        ({"model__pattern": "C | M Q"}, "pattern error at col 7: unknown block 'Q'"),
        ({"sampler": "annealing"}, "sampler.name: unknown sampler 'annealing'"),
        ({"objectives": ["top1", "speed"]}, "objectives[1]: unknown metric 'speed'"),
        ({"seeds": [0, 0]}, "seeds: a seed is listed twice"),
    ],
)
def test_bad_study_files_give_one_line_per_problem(changes, message) -> None:
    with pytest.raises(StudyConfigError) as info:
        load_study_config("bad.yaml", raw=tiny_raw(**changes))
    problems = info.value.problems
    assert any(message in p for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(StudyConfigError) as info:
        load_study_config("bad.yaml", raw=tiny_raw(colour=1, seeds="x", train__lr=-1))
    assert len(info.value.problems) == 3
    assert str(info.value).count("\n") == 2 and str(info.value).startswith("bad.yaml: ")


def test_cli_reports_yaml_errors_without_traceback(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: [unclosed\n")
    assert cli_main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hybridlab run: {bad}: line ") and "invalid YAML" in err
    assert "Traceback" not in err
    assert cli_main(["run", "no_such_study"]) == 2
    assert "built-in studies: " in capsys.readouterr().err
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(tiny_raw(model__num_heads=[1, 3])))
    assert cli_main(["run", str(tmp_path / "ok.yaml"), "--set", "train.epochs=0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("hybridlab run: ") for line in err)


def test_builtin_study_files_are_valid() -> None:
    for name in ("quickstart", "mambavision_table5_patterns", "mambavision_table4_mixer", "pattern_search",
                 "mixer_zoo"):
        config = load_study_config(name)
        assert config.name == name
    table5 = load_study_config("mambavision_table5_patterns")
    assert [c.family for c in table5.space.candidates()] == [
        "random", "attn_first_half", "interleave_am", "interleave_ma", "attn_last_quarter", "attn_last_half"
    ]
    assert len(load_study_config("mambavision_table4_mixer").space.candidates()) == 4


# --- crashes and several workers ---------------------------------------------------------------------

@pytest.mark.subprocess
@pytest.mark.slow
def test_killed_trial_resumes_from_its_checkpoint(tmp_path) -> None:
    raw = tiny_raw(train__epochs=3)
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(yaml.safe_dump(raw))
    proc = python(KILLER.replace("KILL_AT_EPOCH", "2"), "run", str(study_file), "--results-dir", str(tmp_path),
                   "--n-trials", "1", "--no-report", env={"HYBRIDLAB_LOCK_DIR": str(tmp_path / "locks")})
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, out
    assert (tmp_path / "tiny" / "trials" / "0" / "last.ckpt").is_file()

    study, lines = run(raw, tmp_path, n_trials=1)
    first, retry = study.trials
    assert first.state == TrialState.FAIL and "died" in first.user_attrs["fail_reason"]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["retry_of"] == 0
    assert retry.user_attrs["resumed_from"].endswith("trials/0/last.ckpt")
    assert any("resuming from" in line for line in lines)
    # training went on from the saved epoch: the retry logged only epoch 2 (epochs 0-1 came from trial 0)
    metrics = pd.concat(pd.read_csv(p) for p in (tmp_path / "tiny" / "trials" / "1").rglob("metrics.csv"))
    assert sorted(metrics["epoch"].dropna().unique().tolist()) == [2]
    assert retry.user_attrs["epochs"] == 3


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
@pytest.mark.subprocess
@pytest.mark.slow
def test_two_workers_share_one_study_and_run_exactly_n_trials(tmp_path, storage) -> None:
    raw = tiny_raw(seeds=[0, 1])  # 3 architectures x 2 seeds = 6 trials
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(yaml.safe_dump(raw))
    url = f"sqlite:///{tmp_path / 'shared.db'}" if storage == "sqlite" else f"journal://{tmp_path / 'shared.log'}"
    script = "import sys; from hybridlab.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {"HYBRIDLAB_LOCK_DIR": str(tmp_path / "locks")}
    workers = [python(script, "worker", str(study_file), "--storage", url, "--results-dir", str(tmp_path), env=env)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="tiny", storage=url if storage == "sqlite" else
                              optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "shared.log"))))
    trials = study.trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    cells = [(t.params["candidate"], t.params["seed"]) for t in trials]
    assert len(set(cells)) == 6
    assert all(t.values is not None and len(t.values) == 2 for t in trials)


@pytest.mark.slow
def test_baselines_are_trained_and_measured_in_the_same_study(tmp_path) -> None:
    raw = tiny_raw(baselines={"conv_only": {"pattern": "C | C*2"}, "tiny_resnet": {"timm": "resnet10t", "kwargs": {}}})
    raw["search_space"]["layout"]["family"] = ["attn_last_half"]
    study, _ = run(raw, tmp_path)
    rows = [(t.user_attrs["label"], t.user_attrs["is_baseline"], t.user_attrs["pattern"], t.state.name) for t in study.trials]
    assert rows == [
        ("conv_only", True, "C | C*2", "COMPLETE"),
        ("tiny_resnet", True, "timm:resnet10t", "COMPLETE"),
        ("attn_last_half", False, "C | M A", "COMPLETE"),
    ]
    assert study.trials[1].user_attrs["params"] > 1_000_000
    table = pd.read_csv(tmp_path / "tiny" / "trials.csv")
    assert table["is_baseline"].tolist() == [True, True, False]


def test_bad_baselines_are_reported() -> None:
    with pytest.raises(StudyConfigError) as info:
        load_study_config("bad.yaml", raw=tiny_raw(baselines={"a": {"timm": "no_such_net"}, "b": {"pattern": "C | Q"}}))
    text = str(info.value)
    assert "baselines.a.timm: timm has no model 'no_such_net'" in text
    assert "baselines.b.pattern: pattern error at col 5: unknown block 'Q'" in text
