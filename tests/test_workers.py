"""Many workers on one study: a real PostgreSQL server, killed workers, DDP, device locks and bad storages."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import CLI, KILLER, PASSWORD, free_port, lock_env, python, run, tiny_raw, write_study
from optuna.trial import TrialState

from hybridlab.cli import main as cli_main
from hybridlab.errors import HybridlabError
from studies.devlock import DeviceLock, DeviceLockTimeout


@pytest.mark.postgres
@pytest.mark.subprocess
@pytest.mark.slow
def test_three_workers_on_postgres_run_exactly_n_trials(tmp_path, postgres_url) -> None:
    path = write_study(tmp_path, "pg_three", seeds=[0, 1])  # 3 architectures x 2 seeds
    args = ["worker", str(path), "--storage", postgres_url, "--results-dir", str(tmp_path)]
    workers = [python(CLI, *args, env=lock_env(tmp_path)) for _ in range(3)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], outputs
    assert all(PASSWORD not in out for out in outputs)
    study = optuna.load_study(study_name="pg_three", storage=postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    trials = study.trials
    assert len(trials) == 6 and {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({(t.params["candidate"], t.params["seed"]) for t in trials}) == 6
    for t in trials:  # every finished trial's values are the recorded figures
        assert t.values == [t.user_attrs["top1"], t.user_attrs["throughput_img_s"]]
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # the work was shared


@pytest.mark.postgres
@pytest.mark.subprocess
@pytest.mark.slow
def test_killed_worker_trial_is_resumed_by_the_others(tmp_path, postgres_url) -> None:
    path = write_study(tmp_path, "pg_kill", train__epochs=2, seeds=[0, 1])
    args = ["worker", str(path), "--storage", postgres_url, "--results-dir", str(tmp_path)]
    victim = python(KILLER.replace("KILL_AT_EPOCH", "1"), *args, env=lock_env(tmp_path))
    victim.communicate(timeout=300)
    assert victim.returncode == -signal.SIGKILL  # died in the middle of its first trial, after one epoch
    others = [python(CLI, *args, env=lock_env(tmp_path)) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in others]
    assert [w.returncode for w in others] == [0, 0], outputs
    study = optuna.load_study(study_name="pg_kill", storage=postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(finished) == 6 and len(failed) == 1
    assert "died" in failed[0].user_attrs["fail_reason"]
    retry = next(t for t in finished if t.user_attrs.get("retry_of") == failed[0].number)
    assert retry.params == failed[0].params
    assert retry.user_attrs["resumed_from"].endswith(f"trials/{failed[0].number}/last.ckpt")
    logged = pd.concat(pd.read_csv(p) for p in (tmp_path / "pg_kill" / "trials" / str(retry.number)).rglob("metrics.csv"))
    assert sorted(logged["epoch"].dropna().unique().tolist()) == [1]  # epoch 0 came from the killed attempt
    assert len({(t.params["candidate"], t.params["seed"]) for t in finished}) == 6


@pytest.mark.slow
def test_one_trial_on_two_devices_with_ddp(tmp_path) -> None:
    raw = tiny_raw(devices=2, train__epochs=2)
    raw["search_space"]["layout"]["family"] = ["attn_last_half"]
    study, _ = run(raw, tmp_path)
    assert len(study.trials) == 1  # parameters sampled once, in this process; the ranks only train
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["epochs"] == 2


def test_measurement_waits_for_training_on_the_same_device(tmp_path) -> None:
    events: list[str] = []
    waiting = threading.Event()
    training = DeviceLock("cuda:0", exclusive=False, study="train-study", echo=None).__enter__()

    def measure() -> None:
        told = []
        lock = DeviceLock("cuda", exclusive=True, study="measure-study", echo=lambda line: (told.append(line), waiting.set()))
        with lock:  # same GPU as cuda:0
            events.append("measure")
        events.append(told[0])

    thread = threading.Thread(target=measure)
    thread.start()
    assert waiting.wait(timeout=60)  # the measurement is blocked (it said so) while training holds the device
    events.append("training done")
    training.__exit__(None, None, None)
    thread.join(timeout=60)
    assert events[:2] == ["training done", "measure"]
    assert f"held by pid {os.getpid()}, study train-study, shared" in events[2]
    with DeviceLock("cuda:0", exclusive=False), DeviceLock("cuda:0", exclusive=False):
        pass  # two trainings may share a device
    with DeviceLock("cuda:1", exclusive=True), DeviceLock("cuda:0", exclusive=False):
        pass  # other GPUs are independent
    assert not list((tmp_path / "locks").glob("*.holder"))  # the holders' notes go with the locks


def test_device_lock_times_out_with_one_line(monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDLAB_LOCK_TIMEOUT_S", "0.2")
    with DeviceLock("cpu", exclusive=False, study="busy", echo=None):
        with pytest.raises(DeviceLockTimeout) as info:
            with DeviceLock("cpu", exclusive=True, echo=None):
                pass
    text = str(info.value)
    assert "\n" not in text and "device cpu" in text and "study busy" in text and "HYBRIDLAB_LOCK_TIMEOUT_S" in text
    monkeypatch.setenv("HYBRIDLAB_LOCK_TIMEOUT_S", "soon")
    with pytest.raises(HybridlabError, match="HYBRIDLAB_LOCK_TIMEOUT_S: expected a positive number"):
        DeviceLock("cpu", exclusive=True).__enter__()


def test_a_long_wait_for_the_device_is_recorded() -> None:
    from studies.objective import note_wait

    class Trial:
        user_attrs: dict = {}

        def set_user_attr(self, key, value):
            self.user_attrs[key] = value

    lock = DeviceLock("cpu", exclusive=True)
    trial = Trial()
    lock.waited_s = 1.0
    note_wait(trial, lock, "measure")
    assert trial.user_attrs == {}
    lock.waited_s = 7.25
    note_wait(trial, lock, "measure")
    assert trial.user_attrs == {"measure_lock_wait_s": 7.2}


# --- one clear line for every broken storage ---------------------------------------------------------

def _cli(capsys, *args: str) -> tuple[int, list[str]]:
    code = cli_main(list(args))
    err = capsys.readouterr().err.splitlines()
    return code, err


def test_unreachable_database_is_one_line_without_password(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDLAB_LOCK_DIR", str(tmp_path / "locks"))
    path = write_study(tmp_path, "nowhere")
    url = f"postgresql://hl:{PASSWORD}@127.0.0.1:{free_port()}/hl"
    code, err = _cli(capsys, "run", str(path), "--storage", url, "--results-dir", str(tmp_path))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("hybridlab run: cannot reach database postgresql://hl:***@127.0.0.1:")
    assert PASSWORD not in err[0]


@pytest.mark.slow
def test_locked_and_corrupted_sqlite_are_one_line_and_keep_results(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDLAB_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("HYBRIDLAB_SQLITE_TIMEOUT", "0.5")
    path = write_study(tmp_path, "tiny")
    assert cli_main(["run", str(path), "--results-dir", str(tmp_path), "--n-trials", "1", "--no-report"]) == 0
    capsys.readouterr()
    db = tmp_path / "tiny" / "study.db"
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, err = _cli(capsys, "run", str(path), "--results-dir", str(tmp_path), "--no-report")
    finally:
        holder.rollback()
        holder.close()
    assert code == 2 and len(err) == 1, err
    assert "is locked by another process" in err[0]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]  # nothing lost

    broken = tmp_path / "broken"
    (broken / "tiny").mkdir(parents=True)
    (broken / "tiny" / "study.db").write_bytes(b"this is not a database" * 100)
    code, err = _cli(capsys, "run", str(path), "--results-dir", str(broken), "--no-report")
    assert code == 2 and len(err) == 1 and "is not a SQLite database" in err[0], err


def _read_only(folder: Path):
    """Make `folder` read-only for real: a read-only remount as root (permissions do not stop root)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")
    return lambda: subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)


@pytest.mark.slow
def test_read_only_results_folder_is_one_line_and_keeps_results(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDLAB_LOCK_DIR", str(tmp_path / "locks"))
    results = tmp_path / "results"
    results.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(results)]).returncode == 0
        if not mounted:
            pytest.skip("cannot mount a tmpfs to make read-only")
    try:
        path = write_study(tmp_path, "tiny")
        assert cli_main(["run", str(path), "--results-dir", str(results), "--n-trials", "1", "--no-report"]) == 0
        capsys.readouterr()
        before = (results / "tiny" / "trials.csv").read_bytes()
        restore = _read_only(results)
        try:
            code, err = _cli(capsys, "run", str(path), "--results-dir", str(results), "--no-report")
        finally:
            restore()
        assert code == 2 and len(err) == 1, err
        assert "not writable" in err[0] or "read-only" in err[0]
        assert (results / "tiny" / "trials.csv").read_bytes() == before
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(results)], check=True)


def test_worker_needs_a_shared_storage(capsys) -> None:
    code, err = _cli(capsys, "worker", "quickstart")
    assert code == 2 and err == ["hybridlab worker: --storage: workers need a shared storage URL (PostgreSQL or journal:///path)"]
