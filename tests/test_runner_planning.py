"""The trial plan: seed-major, bounded, resumable after a kill; storages and names that cannot work
are refused with one line."""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest
import yaml
from conftest import fake_train, python, tiny_raw

import studies.training
from hybridlab.cli import main as cli_main
from hybridlab.errors import HybridlabError
from studies.config import load_study_config
from studies.runner import RunOptions, StudyRunner, remove_stale_temp_files, study_folder

KILL_WHILE_PLANNING = """
import os, signal, sys, optuna
from hybridlab.cli import main
real, calls = optuna.Study.enqueue_trial, []
def enqueue(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args, **kwargs)
optuna.Study.enqueue_trial = enqueue
sys.exit(main(sys.argv[1:]))
"""


def _plan(raw: dict, tmp_path, **options) -> list[tuple]:
    runner = StudyRunner(load_study_config("tiny.yaml", raw=raw), RunOptions(results_dir=tmp_path, echo=print, **options))
    study = runner.open()
    return [(t.user_attrs.get("slot", t.user_attrs.get("baseline")), t.user_attrs["seed"]) for t in study.trials]


def test_grid_plan_is_seed_major(tmp_path) -> None:
    raw = tiny_raw(seeds=[0, 1, 2], baselines={"conv": {"pattern": "C | C*2"}})
    assert _plan(raw, tmp_path) == [
        ("conv", 0), (0, 0), (1, 0), (2, 0),
        ("conv", 1), (0, 1), (1, 1), (2, 1),
        ("conv", 2), (0, 2), (1, 2), (2, 2),
    ]


def test_extending_the_plan_keeps_it_seed_major(tmp_path) -> None:
    raw = tiny_raw(seeds=[0, 1])
    assert _plan(raw, tmp_path, n_trials=1) == [(0, 0), (0, 1)]
    assert _plan(raw, tmp_path)[2:] == [(1, 0), (2, 0), (1, 1), (2, 1)]


def test_n_trials_has_an_upper_bound(tmp_path, capsys) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_raw(sampler={"name": "random"}, n_trials=5)))
    code = cli_main(["run", str(path), "--results-dir", str(tmp_path), "--n-trials", "10001", "--no-report"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err == ["hybridlab run: --n-trials: 10,001 architectures is above the maximum of 10,000 per study"]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"])
def test_in_memory_storage_is_refused(tmp_path, capsys, url) -> None:
    code = cli_main(["run", "quickstart", "--storage", url, "--results-dir", str(tmp_path), "--no-report"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "is an in-memory SQLite database" in err[0], err


@pytest.mark.parametrize("name", ["tiny\n", "../tiny", "a/b", ".hidden", "x" * 200])
def test_unsafe_study_names_make_no_folder(tmp_path, name) -> None:
    with pytest.raises(HybridlabError, match="is not a safe folder name"):
        study_folder(tmp_path, name)


def test_temporary_files_of_a_killed_process_are_removed(tmp_path) -> None:
    folder = tmp_path / "tiny"
    (folder / "trials" / "3").mkdir(parents=True)
    old = [folder / ".trials.csv.k2j3.tmp", folder / "trials" / "3" / ".best.ckpt.a1.tmp"]
    fresh = folder / ".manifest.json.zz.tmp"
    for path in (*old, fresh):
        path.write_text("half")
    for path in old:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    dead = python("import os; print(os.getpid())")
    pid = int(dead.communicate(timeout=60)[0].strip())
    probe = folder / f".write-test-{pid}"
    probe.write_text("ok")
    removed = remove_stale_temp_files(folder)
    assert sorted(removed) == sorted([*old, probe])
    assert fresh.exists()  # another process may be writing it right now


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_plan_killed_halfway_is_completed_by_the_next_run(tmp_path, monkeypatch) -> None:
    raw = tiny_raw(seeds=[0, 1])  # 3 cells x 2 seeds
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    killed = python(KILL_WHILE_PLANNING, "run", str(path), "--results-dir", str(tmp_path), "--no-report")
    out, _ = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, out
    url = f"sqlite:///{tmp_path / 'tiny' / 'study.db'}"
    assert len(optuna.load_study(study_name="tiny", storage=url).trials) == 3  # killed while queuing the 4th

    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)
    code = cli_main(["run", str(path), "--results-dir", str(tmp_path), "--no-report"])
    assert code == 0
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert sorted((t.params["candidate"], t.params["seed"]) for t in trials) == sorted(
        (c, s) for c in {t.params["candidate"] for t in trials} for s in (0, 1))
