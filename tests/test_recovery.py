"""Failed trials come back, settings that fail every trial are refused up front, and the exit status
and last line of `run` tell what happened."""

from __future__ import annotations

import optuna
import pytest
import yaml
from conftest import fake_train, tiny_raw

import studies.data.synthetic
import studies.training
from hybridlab.cli import main as cli_main


def _study(tmp_path, **changes):
    raw = tiny_raw(**changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    code = cli_main(["run", *args, "--no-report"])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err.splitlines()


def _trials(tmp_path):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny' / 'study.db'}").trials


@pytest.mark.parametrize("device, message", [
    ("cudax", "--device: unknown device 'cudax' (expected cpu, auto, cuda, cuda:N or mps)"),
    ("cuda:7", "--device: device 'cuda:7'"),
    ("cuda", "--device: device 'cuda'"),
])
def test_bad_device_is_refused_before_anything_is_planned(tmp_path, capsys, device, message) -> None:
    import torch

    if (device == "cuda:7" and torch.cuda.device_count() > 7) or (device == "cuda" and torch.cuda.is_available()):
        pytest.skip("this machine has that GPU")
    code, _, err = _run(capsys, str(_study(tmp_path)), "--results-dir", str(tmp_path), "--device", device)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"hybridlab run: {message}"), err
    assert not (tmp_path / "tiny" / "study.db").exists()


def test_broken_data_is_refused_before_anything_is_planned(tmp_path, capsys, monkeypatch) -> None:
    def broken(self, stage=None):
        raise OSError("image file is truncated: train/cat/7.jpg")

    monkeypatch.setattr(studies.data.synthetic.SyntheticDataModule, "setup", broken)
    code, _, err = _run(capsys, str(_study(tmp_path)), "--results-dir", str(tmp_path))
    assert code == 2 and len(err) == 1, err
    assert "cannot load dataset 'synthetic': OSError: image file is truncated: train/cat/7.jpg" in err[0]
    assert not (tmp_path / "tiny" / "study.db").exists()
    code, _, err = _run(capsys, str(_study(tmp_path)), "--check")
    assert code == 2 and "train/cat/7.jpg" in err[0]


@pytest.mark.slow
def test_failed_trials_are_retried_on_rerun_up_to_max_retries(tmp_path, capsys, monkeypatch) -> None:
    calls: list[str] = []

    def flaky(model, *args, **kwargs):
        calls.append(model.spec.pattern)
        if model.spec.pattern == "C | A M":
            raise RuntimeError(f"disk full (attempt {calls.count('C | A M')})")
        return fake_train(model, *args, **kwargs)

    monkeypatch.setattr(studies.training, "train_and_evaluate", flaky)
    args = [str(_study(tmp_path)), "--results-dir", str(tmp_path)]
    code, out, _ = _run(capsys, *args)
    assert code == 1 and out[-1] == "study tiny: this run 2 complete, 0 pruned, 1 failed", out
    for attempt in (2, 3):  # max_retries 2: two more attempts on the next two runs
        code, out, _ = _run(capsys, *args)
        assert code == 1 and out[-1] == "study tiny: this run 0 complete, 0 pruned, 1 failed", out
    code, out, _ = _run(capsys, *args)
    assert code == 0 and out[-1] == "study tiny: this run 0 complete, 0 pruned, 0 failed", out
    assert calls.count("C | A M") == 3
    last = _trials(tmp_path)[-1]
    assert [a["reason"] for a in last.user_attrs["failed_attempts"]] == [
        "RuntimeError: disk full (attempt 1)", "RuntimeError: disk full (attempt 2)"
    ]
    assert last.user_attrs["fail_reason"] == "RuntimeError: disk full (attempt 3)"
    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)  # fixed: retry regardless of count
    code, out, _ = _run(capsys, *args, "--retry-failed")
    assert code == 0 and out[-1] == "study tiny: this run 1 complete, 0 pruned, 0 failed", out
    assert [t.state.name for t in _trials(tmp_path)].count("COMPLETE") == 3
