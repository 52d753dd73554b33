"""The command line as a user meets it: a quick torch-free --help, --import from the current folder,
honest records on reruns, and a non-zero exit status when the run is stopped by a signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import optuna
import pytest
import yaml
from conftest import ROOT, fake_train, python, tiny_raw

import studies.training
from hybridlab.cli import main as cli_main

HEAVY = ("torch", "timm", "lightning", "optuna", "pandas")
LOADED = f"import sys; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"


def _loaded_after(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", f"{code}\n{LOADED}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.subprocess
def test_building_the_parser_imports_no_heavy_library() -> None:
    assert _loaded_after("from hybridlab.cli import build_parser; build_parser().format_help()") == []


@pytest.mark.subprocess
@pytest.mark.parametrize("command", ["run", "worker", "rebuild_storage", "status", "list_studies"])
def test_study_commands_import_no_heavy_library(command) -> None:
    assert _loaded_after(f"import hybridlab.cli, hybridlab.commands.{command}") == []


@pytest.mark.subprocess
def test_import_finds_a_module_in_the_current_folder(tmp_path) -> None:
    (tmp_path / "my_blocks.py").write_text("import pathlib; pathlib.Path('imported.txt').write_text('yes')\n")
    script = textwrap.dedent(f"""
        import os, sys
        sys.path = [p for p in sys.path if p not in ('', os.getcwd())]  # as the installed `hybridlab` script
        sys.path.insert(0, {str(ROOT)!r})
        from hybridlab.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    done = python(script, "--import", "my_blocks", "run", "--help", cwd=tmp_path, env={"PYTHONPATH": ""})
    out, _ = done.communicate(timeout=120)
    assert done.returncode == 0, out
    # `run --help` exits before the import; a real command imports it (`status`: one that loads no torch)
    done = python(script, "--import", "my_blocks", "status", "nowhere", "--results-dir", str(tmp_path),
                  cwd=tmp_path, env={"PYTHONPATH": ""})
    out, _ = done.communicate(timeout=120)
    assert (tmp_path / "imported.txt").read_text() == "yes", out
    assert done.returncode == 2 and "study 'nowhere' not found: no folder" in out


@pytest.mark.parametrize("name", ["", " ", "../x"])
def test_bad_import_names_are_one_line(capsys, name) -> None:
    assert cli_main(["--import", name, "rebuild-storage", "nowhere"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("hybridlab rebuild-storage: --import: not a module name"), err


@pytest.mark.slow
def test_set_on_a_finished_study_never_rewrites_its_record(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_raw()))
    args = ["run", str(path), "--results-dir", str(tmp_path), "--no-report"]
    assert cli_main(args) == 0
    folder = tmp_path / "tiny"
    record = {name: (folder / name).read_bytes() for name in ("study.yaml", "manifest.json", "trials.csv")}
    capsys.readouterr()
    assert cli_main([*args, "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "holds trials made with other settings (train.epochs: 1 -> 2)" in err[0], err
    assert {name: (folder / name).read_bytes() for name in record} == record
    assert json.loads(record["manifest.json"])["train"]["epochs"] == 1
    assert cli_main([*args, "--n-trials", "2"]) == 0  # the trial budget may change


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_with_non_zero_status_and_the_trial_resumes(tmp_path, capsys, signum, status) -> None:
    raw = tiny_raw(train__epochs=2)
    raw["search_space"]["layout"]["family"] = ["attn_last_half"]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    script = textwrap.dedent(f"""
        import os, sys
        import lightning as L
        import studies.training
        from hybridlab.cli import main

        real = studies.training.train_and_evaluate

        class Stop(L.Callback):
            def on_train_epoch_start(self, trainer, module):
                if trainer.current_epoch == 1:
                    os.kill(os.getpid(), {int(signum)})

        def train(*args, **kwargs):
            kwargs["callbacks"] = [*kwargs.get("callbacks", ()), Stop()]
            return real(*args, **kwargs)

        studies.training.train_and_evaluate = train
        sys.exit(main(sys.argv[1:]))
    """)
    run = python(script, "run", str(path), "--results-dir", str(tmp_path), "--no-report")
    out, _ = run.communicate(timeout=300)
    assert run.returncode == status, out
    assert f"stopped by {signal.Signals(signum).name}" in out.splitlines()[-1]
    assert (tmp_path / "tiny" / "trials.csv").is_file()
    # the resumed run needs no process of its own: in this one it skips a second start of torch and Lightning
    assert cli_main(["run", str(path), "--results-dir", str(tmp_path), "--no-report"]) == 0, capsys.readouterr()
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny' / 'study.db'}").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[0].user_attrs["fail_reason"] == f"interrupted ({signal.Signals(signum).name})"
    assert trials[1].user_attrs["resumed_from"].endswith("trials/0/last.ckpt")


def test_n_trials_that_is_not_a_whole_number_is_one_line(capsys) -> None:
    from hybridlab.cli import main as cli_main

    assert cli_main(["run", "--n-trials", "1e20", "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hybridlab run: --n-trials: expected a whole number of architectures, got '1e20'"]


def test_the_architecture_cap_holds_for_a_grid_too() -> None:
    """A grid caps the target at its size, but asking for more than the documented maximum is still refused."""
    from types import SimpleNamespace

    from hybridlab.errors import ConfigError
    from studies.planning import MAX_ARCHITECTURES, target_architectures

    keys = {"a": object(), "b": object()}
    assert target_architectures(SimpleNamespace(n_trials=None), 5, keys) == 2
    with pytest.raises(ConfigError, match=r"^--n-trials: 100,000 architectures is above the maximum of 10,000"):
        target_architectures(SimpleNamespace(n_trials=None), 100_000, keys)
    assert MAX_ARCHITECTURES == 10_000
