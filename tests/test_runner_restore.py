"""A study folder with results is never started afresh; its storage comes back from trials.csv."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
import yaml
from conftest import fake_train, tiny_raw

import studies.training
from hybridlab.cli import main as cli_main


def _cli(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err.splitlines()


@pytest.fixture
def finished(tmp_path, monkeypatch, capsys):
    """A finished tiny study (2 architectures x 2 seeds) under tmp_path/results."""
    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)
    raw = tiny_raw(seeds=[0, 1])
    raw["search_space"]["layout"]["family"] = ["attn_last_half", "mixer_only"]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    args = ["run", str(path), "--results-dir", str(results), "--no-report"]
    assert _cli(capsys, *args)[0] == 0
    return results / "tiny", args


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["empty", "garbage", "missing"])
def test_broken_storage_next_to_results_is_refused_and_rebuilt(finished, capsys, damage) -> None:
    folder, args = finished
    db = folder / "study.db"
    before = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").trials
    table = (folder / "trials.csv").read_bytes()
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "garbage":
        db.write_bytes(b"\x00" * 4096)
    else:
        db.unlink()

    code, _, err = _cli(capsys, *args)
    assert code == 2 and len(err) == 1, err
    assert "holds results (trials.csv, 4 trials)" in err[0] and "nothing was changed" in err[0]
    assert f"hybridlab rebuild-storage tiny --results-dir {folder.parent}" in err[0]
    assert (folder / "trials.csv").read_bytes() == table  # the last copy of the results is untouched

    code, out, err = _cli(capsys, "rebuild-storage", "tiny", "--results-dir", str(folder.parent))
    assert code == 0, err
    assert "4 complete, 0 pruned, 0 failed, 0 unfinished" in out[-1]
    if damage != "missing":
        assert len(list(folder.glob("study.db.broken-*"))) == 1  # moved aside, not deleted
    after = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").trials
    assert [t.number for t in after] == [t.number for t in before]
    assert [t.state for t in after] == [t.state for t in before]
    assert [t.values for t in after] == [t.values for t in before]
    assert [t.params for t in after] == [t.params for t in before]
    for old, new in zip(before, after):
        for key, value in old.user_attrs.items():
            if key != "measure_env":  # environment notes: a CSV keeps their text, not their types
                assert new.user_attrs[key] == value, key
        assert new.user_attrs["measure_env"]["python"] == old.user_attrs["measure_env"]["python"]

    code, out, _ = _cli(capsys, *args)  # the rebuilt study resumes: nothing to run, nothing retrained
    assert code == 0 and out[-1] == "study tiny: this run 0 complete, 0 pruned, 0 failed"
    frame = pd.read_csv(folder / "trials.csv")
    assert frame["state"].tolist() == ["COMPLETE"] * 4


@pytest.mark.slow
def test_rebuild_refuses_a_storage_that_holds_the_study(finished, capsys) -> None:
    folder, _ = finished
    code, _, err = _cli(capsys, "rebuild-storage", str(folder))
    assert code == 2 and len(err) == 1 and "already holds study 'tiny'" in err[0], err


@pytest.mark.slow
@pytest.mark.parametrize("lost_as", ["running", "interrupted"])
def test_rebuilt_auto_seed_study_resumes_where_it_stopped(tmp_path, monkeypatch, capsys, lost_as) -> None:
    """A table holds only the seeds used (read back as floats) and the grid keys in no set order; the rebuilt
    storage must give every parameter the study file's choices, or Optuna refuses the next trial's ("dynamic
    value space") and the rerun is refused for changed seed settings. A trial lost in flight is planned again
    with the same seed, not skipped."""
    def noisy_train(model, datamodule, recipe, root_dir, seed, **kwargs) -> dict:  # seed noise, no real gap
        return {**fake_train(model, datamodule, recipe, root_dir, seed), "top1": [50.0, 54.0, 47.0, 52.0][seed]}

    monkeypatch.setattr(studies.training, "train_and_evaluate", noisy_train)
    raw = tiny_raw(seeds={"auto": {"initial": 2, "max": 4, "budget": 12}})
    raw["search_space"]["layout"]["family"] = ["mixer_only", "attn_last_half"]  # not in sorted order
    raw["baselines"] = {"conv_only": {"pattern": "C | C C"}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    args = ["run", str(path), "--results-dir", str(results), "--no-report"]
    assert _cli(capsys, *args)[0] == 0
    folder = results / "tiny"
    before = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'study.db'}").trials
    added = [t for t in before if "auto_row" in t.user_attrs]
    assert added, "seeds: auto added no seed; the test needs one to lose"
    lost = added[-1]
    table = pd.read_csv(folder / "trials.csv", dtype=str)
    row = table["number"] == str(lost.number)
    if lost_as == "running":  # in flight when the storage was lost
        table.loc[row, "state"] = "RUNNING"
    else:  # stopped by a signal; its resume (a queued copy) was lost with the storage
        table.loc[row, ["state", "fail_reason"]] = ["FAIL", "interrupted (SIGINT)"]
    table.to_csv(folder / "trials.csv", index=False)
    (folder / "study.db").unlink()
    assert _cli(capsys, "rebuild-storage", "tiny", "--results-dir", str(results))[0] == 0
    after = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'study.db'}").trials
    kept = [(a, b) for a, b in zip(before, after, strict=True) if b.state.name == "COMPLETE"]
    assert len(kept) == len(before) - 1
    assert all(b.distributions == a.distributions and b.params == a.params for a, b in kept)
    assert all(type(b.params["seed"]) is int for _, b in kept)
    code, _, err = _cli(capsys, *args)
    assert code == 0, err
    done = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'study.db'}").trials
    again = [t for t in done[len(before):] if t.state.name == "COMPLETE"]
    assert [(t.user_attrs["auto_row"], t.user_attrs["seed"]) for t in again] == \
        [(lost.user_attrs["auto_row"], lost.user_attrs["seed"])]
