"""reports: a study that is still running reads the same in every form (name, folder, trials.csv, storage URL)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hybridlab.cli import main as cli_main
from reports.load import load_study
from studies.storage import open_storage
from studies.table import write_trials

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _running_study(folder: Path, storage: str, name: str = "live") -> optuna.Study:
    """Two finished trials, one claimed after the last trials.csv was written (so the CSV says WAITING)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=open_storage(storage, heartbeat_interval=None, grace_period=None),
                                study_name=name, directions=["maximize", "maximize"])
    study.set_metric_names(["top1", "throughput_img_s"])
    for i, values in enumerate([(70.0, 300.0), (75.0, 200.0)]):
        trial = study.ask()
        trial.set_user_attr("pattern", f"C | M*{i + 1}")
        study.tell(trial, list(values))
    study.enqueue_trial({}, user_attrs={"pattern": "C | M*3"})
    write_trials(study, folder)  # the runner writes the table after each finished trial
    (folder / "manifest.json").write_text(json.dumps({
        "study": name, "storage": storage,
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "throughput_img_s", "direction": "maximize"}],
    }))
    running = study.ask()  # the next trial starts: RUNNING in the storage, still WAITING in trials.csv
    assert running.number == 2
    return study


def _states(data) -> list[str]:
    return data.frame.sort_values("number")["state"].tolist()


def test_running_trial_is_running_in_every_form(tmp_path):
    results = tmp_path / "results"
    folder = results / "live"
    url = f"sqlite:///{(folder / 'study.db').resolve()}"
    folder.mkdir(parents=True)
    _running_study(folder, url)
    expected = ["COMPLETE", "COMPLETE", "RUNNING"]
    assert _states(load_study(url)) == expected
    assert _states(load_study("live", results_dir=results)) == expected
    assert _states(load_study(str(folder))) == expected
    assert _states(load_study(str(folder / "trials.csv"))) == expected
    data = load_study("live", results_dir=results)
    assert data.folder == folder and data.manifest["study"] == "live"


def test_journal_storage_in_the_study_folder_is_read_live(tmp_path):
    folder = tmp_path / "results" / "live"
    _running_study(folder, f"journal:///{folder / 'study.log'}")
    data = load_study("live", results_dir=tmp_path / "results")
    assert _states(data) == ["COMPLETE", "COMPLETE", "RUNNING"] and data.folder == folder


def test_a_copied_study_folder_reports_its_own_table(tmp_path):
    # a folder copied elsewhere (e.g. committed under docs/) keeps a manifest naming the original storage:
    # the report shows what the copy holds, and says where live states are
    original = tmp_path / "results" / "live"
    url = f"sqlite:///{(original / 'study.db').resolve()}"
    original.mkdir(parents=True)
    _running_study(original, url)
    copy = tmp_path / "docs" / "live"
    copy.mkdir(parents=True)
    for name in ("trials.csv", "manifest.json"):
        (copy / name).write_bytes((original / name).read_bytes())
    data = load_study(str(copy))
    assert _states(data) == ["COMPLETE", "COMPLETE", "WAITING"] and data.folder == copy
    assert any(url in note for note in data.notes)


def test_unreachable_storage_falls_back_to_the_table_and_says_so(tmp_path, capsys):
    folder = tmp_path / "results" / "live"
    _running_study(folder, f"sqlite:///{(tmp_path / 'scratch.db').resolve()}")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["storage"] = "postgresql://alice:***@db.example:5432/studies"  # masked: cannot be reopened
    (folder / "manifest.json").write_text(json.dumps(manifest))
    data = load_study("live", results_dir=tmp_path / "results")
    assert _states(data) == ["COMPLETE", "COMPLETE", "WAITING"]  # what the table knows
    assert any("trials.csv" in note and "live states" in note for note in data.notes)
    assert cli_main(["report", "live", "--results-dir", str(tmp_path / "results")]) == 0
    page = (folder / "report" / "report.html").read_text()
    assert "live states" in page and "***" in page


def test_finished_study_in_a_folder_reads_the_same_from_storage_and_table(tmp_path):
    folder = tmp_path / "results" / "done"
    url = f"sqlite:///{(folder / 'study.db').resolve()}"
    folder.mkdir(parents=True)
    study = _running_study(folder, url, name="done")
    running = [t for t in study.get_trials() if t.state.name == "RUNNING"][0]
    study.tell(running.number, [72.0, 100.0])
    write_trials(study, folder)
    live = load_study("done", results_dir=tmp_path / "results")
    (folder / "study.db").unlink()
    table = load_study("done", results_dir=tmp_path / "results")
    assert _states(live) == _states(table) == ["COMPLETE"] * 3
    assert live.frame["top1"].tolist() == table.frame["top1"].tolist()
    assert not table.notes
