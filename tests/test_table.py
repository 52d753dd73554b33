"""studies.table: Optuna study -> trials table (docs/results.md), written atomically, read back typed."""

from __future__ import annotations

import math
import os
import sys

import optuna
import pandas as pd
import pytest

from studies.table import COLUMNS, read_trials, state_counts, trials_frame, write_trials

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _attrs(trial: optuna.Trial, **extra) -> None:
    base = {"pattern": "C | M*2 A*2", "arch_hash": "abc123", "family": "attn_last_half", "seed": trial.number % 2,
            "is_baseline": False}
    base.update(extra)
    for key, value in base.items():
        trial.set_user_attr(key, value)


def _multi_study() -> optuna.Study:
    """Complete, failed, pruned, running and waiting trials, with constraints and nested attributes."""
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(["top1", "throughput_img_s"])

    def objective(trial: optuna.Trial):
        x = trial.suggest_float("width", 0.0, 1.0)
        trial.suggest_categorical("stage3", ["M*4 A*4", "A*4 M*4"])
        _attrs(trial, params=1_000_000 + trial.number, model={"dim": 80, "num_heads": [2, 4]})
        trial.set_constraint("min_throughput", 0.5 - x)
        if trial.number == 2:
            trial.set_user_attr("fail_reason", "out of memory")
            raise RuntimeError("out of memory")
        if trial.number == 3:
            raise optuna.TrialPruned()
        trial.set_user_attr("top1", 70.0 + 10 * x)
        return 70.0 + 10 * x, 1000.0 * (1 - x)  # throughput comes only from the objective value

    study.optimize(objective, n_trials=5, catch=(RuntimeError,))
    running = study.ask()
    running.set_user_attr("pattern", "C | A*8")
    study.enqueue_trial({"width": 0.25, "stage3": "M*4 A*4"})
    return study


def test_multi_objective_rows_columns_and_states():
    study = _multi_study()
    frame = trials_frame(study)
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert frame["number"].tolist() == list(range(7))
    assert frame["state"].tolist() == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED", "COMPLETE", "RUNNING", "WAITING"]
    done = frame[frame["state"] == "COMPLETE"]
    trials = {t.number: t for t in study.trials}
    for _, row in done.iterrows():
        t = trials[int(row["number"])]
        assert row["top1"] == pytest.approx(t.values[0])
        assert row["throughput_img_s"] == pytest.approx(t.values[1])  # filled from the value by metric name
        assert row["param_width"] == pytest.approx(t.params["width"])
        assert row["param_stage3"] == t.params["stage3"]
        assert row["constraint_min_throughput"] == pytest.approx(0.5 - t.params["width"])
        assert bool(row["feasible"]) == (0.5 - t.params["width"] <= 0)
        assert row["params"] == 1_000_000 + t.number
        assert row["datetime_start"] == t.datetime_start.isoformat()
        assert row["datetime_complete"] == t.datetime_complete.isoformat()
    assert "value_0" not in frame.columns and "value_1" not in frame.columns  # metric names cover them
    assert frame.loc[2, "fail_reason"] == "out of memory"
    assert math.isnan(frame.loc[3, "top1"])  # pruned: no value
    running = frame.loc[5]
    assert running["pattern"] == "C | A*8" and running["arch_hash"] == "" and pd.isna(running["seed"])
    assert running["datetime_start"] != "" and running["datetime_complete"] == ""
    assert frame.loc[6, "datetime_start"] == ""  # waiting: not started
    # nested dict attributes are flattened by name, lists kept as JSON text
    assert frame.loc[0, "model.dim"] == 80 and frame.loc[0, "model.num_heads"] == "[2, 4]"
    assert frame["label"].tolist()[:2] == ["attn_last_half"] * 2  # label defaults to family
    assert frame["is_baseline"].dtype == bool and frame["number"].dtype == "Int64"
    assert state_counts(frame) == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 1, "WAITING": 1}


def test_single_objective_without_metric_names_keeps_value_column():
    study = optuna.create_study(direction="minimize")
    study.optimize(lambda t: (t.suggest_float("lr", 1e-4, 1e-1, log=True) - 0.01) ** 2, n_trials=3)
    frame = trials_frame(study)
    assert frame["value_0"].tolist() == pytest.approx([t.value for t in study.trials])
    assert frame["top1"].isna().all()
    assert "feasible" not in frame.columns  # no constraints, no constraint columns
    assert [c for c in frame.columns if c.startswith("param_")] == ["param_lr"]


def test_metric_name_fills_missing_attribute_but_never_overrides_one():
    study = optuna.create_study(direction="maximize")
    study.set_metric_names(["top1"])

    def objective(trial):
        if trial.number == 0:
            trial.set_user_attr("top1", 55.0)  # the attribute wins over the returned value
        return 42.0

    study.optimize(objective, n_trials=2)
    frame = trials_frame(study)
    assert frame["top1"].tolist() == [55.0, 42.0]


def test_empty_study_has_the_documented_columns():
    frame = trials_frame(optuna.create_study())
    assert frame.empty and list(frame.columns) == list(COLUMNS)


def test_write_trials_is_atomic_and_round_trips(tmp_path):
    study = _multi_study()
    folder = tmp_path / "results" / "s"
    (folder).mkdir(parents=True)
    (folder / "trials.csv").write_text("stale\n")
    path = write_trials(study, folder)
    assert path == folder / "trials.csv"
    assert sorted(os.listdir(folder)) == ["trials.csv", "trials.parquet"]  # no temp file left behind
    assert oct(path.stat().st_mode & 0o044) == oct(0o044 & ~_umask())  # readable by others like any file
    back = read_trials(folder)
    frame = trials_frame(study)
    assert list(back.columns) == list(frame.columns)
    assert back["state"].tolist() == frame["state"].tolist()
    assert back["top1"].tolist() == pytest.approx(frame["top1"].tolist(), nan_ok=True)
    assert back["is_baseline"].dtype == bool and back["feasible"].tolist() == frame["feasible"].tolist()
    assert back["seed"].dtype == "Int64" and back["seed"].tolist()[:2] == [0, 1]
    parquet = pd.read_parquet(folder / "trials.parquet")
    assert parquet["number"].tolist() == list(range(7))


def test_write_trials_without_pyarrow_writes_csv_only(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    write_trials(_multi_study(), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["trials.csv"]


def test_parquet_survives_mixed_type_attributes(tmp_path):
    study = optuna.create_study(direction="maximize")

    def objective(trial):
        trial.set_user_attr("note", 3 if trial.number == 0 else "three")
        return 1.0

    study.optimize(objective, n_trials=2)
    write_trials(study, tmp_path)
    assert pd.read_parquet(tmp_path / "trials.parquet")["note"].tolist() == ["3", "three"]


def test_empty_study_table_reads_back(tmp_path):
    write_trials(optuna.create_study(), tmp_path)
    back = read_trials(tmp_path / "trials.csv")
    assert back.empty and list(back.columns) == list(COLUMNS)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_metric_columns_follow_the_registry_and_keep_the_documented_order():
    from hybridlab.metrics import METRICS
    from studies.table import FLOAT_COLUMNS, INT_COLUMNS

    documented = ["number", "state", "pattern", "arch_hash", "family", "label", "seed", "top1", "top5", "val_loss",
                  "params", "macs", "flops", "throughput_img_s", "latency_ms", "latency_iqr_ms",
                  "train_throughput_img_s", "peak_mem_mb", "train_time_s", "epochs", "reused_from", "is_baseline",
                  "fail_reason", "datetime_start", "datetime_complete"]
    assert [c for c in COLUMNS if c in documented] == documented
    for metric in METRICS.values():
        assert metric.name in (INT_COLUMNS if metric.dtype == "int" else FLOAT_COLUMNS)


def test_noise_columns_are_typed_and_round_trip(tmp_path):
    study = optuna.create_study(direction="maximize")

    def objective(trial):
        _attrs(trial, throughput_img_s=1200.0, throughput_lo=1100.0, throughput_hi=1300.0, throughput_interval="iqr",
               throughput_rel=0.9, throughput_rel_lo=0.85, throughput_rel_hi=0.95, noisy=trial.number == 1,
               noisy_reason="load 3.1 on 2 cores" if trial.number == 1 else "", threads=2, fidelity="epochs=1")
        return 1.0

    study.optimize(objective, n_trials=2)
    write_trials(study, tmp_path)
    back = read_trials(tmp_path)
    assert back["noisy"].dtype == bool and back["noisy"].tolist() == [False, True]
    assert back["noisy_reason"].tolist() == ["", "load 3.1 on 2 cores"]
    assert back["threads"].dtype == "Int64" and back["threads"].tolist() == [2, 2]
    assert back["throughput_lo"].tolist() == [1100.0, 1100.0] and back["throughput_rel_hi"].dtype == "float64"
    assert back["throughput_interval"].tolist() == ["iqr", "iqr"] and back["fidelity"].tolist() == ["epochs=1"] * 2


def test_tables_written_before_the_noise_columns_still_read(tmp_path):
    old = pd.DataFrame({"number": [0], "state": ["COMPLETE"], "top1": [50.0], "is_baseline": [False]})
    old.to_csv(tmp_path / "trials.csv", index=False)
    back = read_trials(tmp_path)
    assert list(back.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert back["noisy"].tolist() == [False] and math.isnan(back["throughput_lo"][0]) and back["threads"].isna().all()
