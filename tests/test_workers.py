"""Many workers on one study: a real PostgreSQL server, killed workers, DDP, device locks and bad storages."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from test_studies import KILLER, _python, run, tiny_raw

from hybridlab.cli import main as cli_main
from studies.devlock import DeviceLock

CLI = "import sys; from hybridlab.cli import main; sys.exit(main(sys.argv[1:]))"
PASSWORD = "s3cret-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on a free local port (Debian's `postgresql` package)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found or not found[-1]:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install -y postgresql)")
    bindir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="hybridlab-pg-"))
    os.chmod(base, 0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
       "--auth-host=scram-sha-256", "-E", "UTF8")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
       f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=60", "start")
    try:
        for sql in (f"CREATE USER hl WITH PASSWORD '{PASSWORD}'", "CREATE DATABASE hl OWNER hl"):
            pg(str(bindir / "psql"), "-h", str(base), "-p", str(port), "-U", "postgres", "-c", sql)
        yield f"postgresql://hl:{PASSWORD}@127.0.0.1:{port}/hl"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _study_file(tmp_path: Path, name: str, **changes) -> Path:
    raw = tiny_raw(**changes)
    raw["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    return {"HYBRIDLAB_LOCK_DIR": str(tmp_path / "locks")}


def test_three_workers_on_postgres_run_exactly_n_trials(tmp_path, postgres_url) -> None:
    study_file = _study_file(tmp_path, "pg_three", seeds=[0, 1])  # 3 architectures x 2 seeds
    args = ["worker", str(study_file), "--storage", postgres_url, "--results-dir", str(tmp_path)]
    workers = [_python(CLI, *args, env=_env(tmp_path)) for _ in range(3)]
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


def test_killed_worker_trial_is_resumed_by_the_others(tmp_path, postgres_url) -> None:
    study_file = _study_file(tmp_path, "pg_kill", train__epochs=2, seeds=[0, 1])
    args = ["worker", str(study_file), "--storage", postgres_url, "--results-dir", str(tmp_path)]
    victim = _python(KILLER.replace("KILL_AT_EPOCH", "1"), *args, env=_env(tmp_path))
    victim.communicate(timeout=300)
    assert victim.returncode == -signal.SIGKILL  # died in the middle of its first trial, after one epoch
    others = [_python(CLI, *args, env=_env(tmp_path)) for _ in range(2)]
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


def test_one_trial_on_two_devices_with_ddp(tmp_path) -> None:
    raw = tiny_raw(devices=2, train__epochs=2)
    raw["search_space"]["layout"]["family"] = ["attn_last_half"]
    study, _ = run(raw, tmp_path)
    assert len(study.trials) == 1  # parameters sampled once, in this process; the ranks only train
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["epochs"] == 2


def test_measurement_waits_for_training_on_the_same_device(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDLAB_LOCK_DIR", str(tmp_path))
    events: list[str] = []
    training = DeviceLock("cuda:0", exclusive=False).__enter__()

    def measure() -> None:
        with DeviceLock("cuda", exclusive=True):  # same GPU as cuda:0
            events.append("measure")

    thread = threading.Thread(target=measure)
    thread.start()
    time.sleep(0.3)
    events.append("training done")
    training.__exit__(None, None, None)
    thread.join(timeout=10)
    assert events == ["training done", "measure"]
    with DeviceLock("cuda:0", exclusive=False), DeviceLock("cuda:0", exclusive=False):
        pass  # two trainings may share a device
    with DeviceLock("cuda:1", exclusive=True), DeviceLock("cuda:0", exclusive=False):
        pass  # other GPUs are independent


# --- one clear line for every broken storage ---------------------------------------------------------

def _cli(capsys, *args: str) -> tuple[int, list[str]]:
    code = cli_main(list(args))
    err = capsys.readouterr().err.splitlines()
    return code, err


def test_unreachable_database_is_one_line_without_password(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDLAB_LOCK_DIR", str(tmp_path / "locks"))
    study_file = _study_file(tmp_path, "nowhere")
    url = f"postgresql://hl:{PASSWORD}@127.0.0.1:{_free_port()}/hl"
    code, err = _cli(capsys, "run", str(study_file), "--storage", url, "--results-dir", str(tmp_path))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("hybridlab run: cannot reach database postgresql://hl:***@127.0.0.1:")
    assert PASSWORD not in err[0]


def test_locked_and_corrupted_sqlite_are_one_line_and_keep_results(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDLAB_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("HYBRIDLAB_SQLITE_TIMEOUT", "0.5")
    study_file = _study_file(tmp_path, "tiny")
    assert cli_main(["run", str(study_file), "--results-dir", str(tmp_path), "--n-trials", "1", "--no-report"]) == 0
    capsys.readouterr()
    db = tmp_path / "tiny" / "study.db"
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, err = _cli(capsys, "run", str(study_file), "--results-dir", str(tmp_path), "--no-report")
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
    code, err = _cli(capsys, "run", str(study_file), "--results-dir", str(broken), "--no-report")
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
        study_file = _study_file(tmp_path, "tiny")
        assert cli_main(["run", str(study_file), "--results-dir", str(results), "--n-trials", "1", "--no-report"]) == 0
        capsys.readouterr()
        before = (results / "tiny" / "trials.csv").read_bytes()
        restore = _read_only(results)
        try:
            code, err = _cli(capsys, "run", str(study_file), "--results-dir", str(results), "--no-report")
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
