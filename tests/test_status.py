"""`hybridlab status` and `hybridlab list`: what a user reads about studies, from small SQLite studies built
with Optuna directly; read-only, one-line errors, no password shown."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import optuna
import pytest

from hybridlab.cli import main as cli_main
from hybridlab.commands.status import fmt_duration, summarize
from studies.storage import close_storage, open_storage

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _trial(state, number_s: int, minutes: float | None, **attrs):
    start = T0 + dt.timedelta(seconds=number_s)
    end = start + dt.timedelta(minutes=minutes) if minutes is not None else None
    values = [70.0] if state == optuna.trial.TrialState.COMPLETE else None
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.0], user_attrs=attrs)
    trial.state, trial.values = state, values
    trial.datetime_start, trial.datetime_complete = start, end
    return trial


def _study(folder: Path, name: str = "demo") -> optuna.Study:
    """2 finished (10 and 20 min), 1 running on worker hostA:42 at epoch 3 of 5, 1 failed, 1 pruned, 3 waiting."""
    folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"sqlite:///{folder / 'study.db'}", heartbeat_interval=None, grace_period=None)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    S = optuna.trial.TrialState
    study.add_trial(_trial(S.COMPLETE, 0, 10, pattern="MMTT", seed=0))
    study.add_trial(_trial(S.COMPLETE, 1, 20, pattern="MTMT", seed=0))
    study.add_trial(_trial(S.FAIL, 2, 1, pattern="TTTT", seed=0, fail_reason="out of memory: CUDA"))
    study.add_trial(_trial(S.PRUNED, 3, 1, pattern="CCCC", seed=0, fail_reason="infeasible: params > 30M"))
    for seed in (1, 2, 3):
        study.enqueue_trial({}, user_attrs={"slot": 0, "seed": seed})
    study.set_user_attr("planned_architectures", 4)
    running = study.ask()  # takes the first waiting trial
    for key, value in {"pattern": "MMTT", "worker": "hostA:42", "epoch": 3, "epochs": 5}.items():
        running.set_user_attr(key, value)
    (folder / "manifest.json").write_text(json.dumps({"study": name}))
    return study


def test_summary_counts_running_worker_epoch_and_eta(tmp_path):
    study = _study(tmp_path / "demo")
    now = dt.datetime.now()
    status = summarize(study, now=now)
    assert status.counts == {"WAITING": 2, "RUNNING": 1, "COMPLETE": 2, "FAIL": 1, "PRUNED": 1}
    (run,) = status.running
    assert (run["worker"], run["epoch"], run["epochs"], run["pattern"]) == ("hostA:42", 3, 5, "MMTT")
    assert status.mean_trial_s == pytest.approx(15 * 60)
    assert status.workers == 1
    assert status.eta_s == pytest.approx(15 * 60 * 3)  # 2 waiting + 1 running, one worker
    assert status.elapsed_s == pytest.approx((now - T0).total_seconds())
    assert [f["state"] for f in status.failed] == ["FAIL", "PRUNED"]
    close_storage(study._storage)


def test_epoch_falls_back_to_intermediate_values(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=None, grace_period=None)
    study = optuna.create_study(study_name="x", storage=storage)
    trial = study.ask()
    for step in range(4):
        trial.report(1.0 / (step + 1), step)
    (run,) = summarize(study).running
    assert (run["epoch"], run["epochs"], run["worker"]) == (4, None, None)
    close_storage(storage)


def test_status_command_prints_the_study(tmp_path, capsys):
    study = _study(tmp_path / "results" / "demo")
    close_storage(study._storage)
    before = sorted(p.name for p in (tmp_path / "results" / "demo").iterdir())
    assert cli_main(["status", "demo", "--results-dir", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "study demo (sqlite:///" in out
    assert "trials: 7 (2 planned, 1 running, 2 finished, 1 failed, 1 pruned); 4 architectures planned" in out
    assert "running trial 4: MMTT seed 1 | worker hostA:42 | epoch 3/5" in out
    assert "failed trial 2: TTTT: out of memory: CUDA" in out
    assert "pruned trial 3: CCCC: infeasible: params > 30M" in out
    assert "ETA: 45m00s (mean finished trial 15m00s x 3 left / 1 active worker)" in out
    assert sorted(p.name for p in (tmp_path / "results" / "demo").iterdir()) == before  # read-only


def test_status_errors_are_one_line_and_create_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    assert cli_main(["status", "nope", "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "study 'nope' not found" in err
    missing = tmp_path / "missing.db"
    assert cli_main(["status", f"sqlite:///{missing}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not missing.exists()


def test_status_never_prints_a_password(tmp_path, capsys):
    url = "postgresql://alice:s3cretPW@127.0.0.1:1/studies"
    assert cli_main(["status", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3cretPW" not in err and "alice" in err


def test_status_asks_which_study_when_a_storage_holds_several(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'many.db'}"
    storage = open_storage(url, heartbeat_interval=None, grace_period=None)
    for name in ("b", "a"):
        optuna.create_study(study_name=name, storage=storage)
    close_storage(storage)
    assert cli_main(["status", url]) == 2
    assert "holds 2 studies (a, b); choose one with --study NAME" in capsys.readouterr().err
    assert cli_main(["status", url, "--study", "b"]) == 0
    assert "study b (" in capsys.readouterr().out


def test_list_folder_and_storage(tmp_path, capsys):
    results = tmp_path / "results"
    close_storage(_study(results / "demo")._storage)
    other = results / "copied"
    other.mkdir()
    (other / "trials.csv").write_text("number,state\n0,COMPLETE\n1,COMPLETE\n2,FAIL\n")
    (results / "not_a_study").mkdir()
    assert cli_main(["list", "--results-dir", str(results)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["study", "planned", "running", "finished", "failed", "pruned", "source"]
    assert lines[1].split() == ["copied", "0", "0", "2", "1", "0", "trials.csv"]
    assert lines[2].split() == ["demo", "2", "1", "2", "1", "1", "study.db"]
    assert len(lines) == 3
    assert cli_main(["list", "--storage", f"sqlite:///{results / 'demo' / 'study.db'}"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:6] == ["demo", "2", "1", "2", "1", "1"]


def test_list_empty_folder_and_missing_storage(tmp_path, capsys):
    assert cli_main(["list", "--results-dir", str(tmp_path)]) == 0
    assert "no study in" in capsys.readouterr().out
    assert cli_main(["list", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "none.db").exists()


def test_status_reads_the_trials_table_when_there_is_no_storage(tmp_path, capsys):
    folder = tmp_path / "results" / "copied"
    folder.mkdir(parents=True)
    (folder / "trials.csv").write_text(
        "number,state,pattern,seed,fail_reason,reused_from,datetime_start,datetime_complete\n"
        "0,COMPLETE,C | M,0,,,2026-01-01T12:00:00,2026-01-01T12:10:00\n"
        "1,COMPLETE,C | M,0,,0,2026-01-01T12:10:00,2026-01-01T12:10:01\n"
        "2,FAIL,C | A,0,loss is NaN,,2026-01-01T12:10:00,2026-01-01T12:11:00\n"
        "3,WAITING,C | A,1,,,,\n")
    assert cli_main(["status", "copied", "--results-dir", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "trials: 4 (1 planned, 0 running, 2 finished, 1 failed, 0 pruned)" in out
    assert "failed trial 2: C | A: loss is NaN" in out
    assert "elapsed: 11m00s" in out  # first start to last end: nothing is live in a table without workers
    assert "ETA: unknown (1 trials left, no worker running)" in out
    assert "note: trials.csv is rewritten after each finished trial" in out


def test_durations_read_well():
    assert [fmt_duration(s) for s in (42, 750, 3900, 90000, None)] == ["42s", "12m30s", "1h05m", "1d01h", "?"]


@pytest.mark.subprocess
def test_status_and_list_modules_import_no_heavy_library():
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys, hybridlab.commands.status, hybridlab.commands.list_studies; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'optuna', 'pandas'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
