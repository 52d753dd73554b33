"""Loggers by name: CSV by default, TensorBoard and MLflow through their file backends (when installed), W&B
offline unless configured, and one ConfigError line naming the extra when a backend is missing."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import lightning.pytorch.loggers as pl_loggers
import pytest
from test_checkpoints import tiny_data, tiny_model

from hybridlab.errors import ConfigError
from studies.loggers import build_loggers, check_loggers
from studies.recipe import TrainRecipe
from studies.training import train_and_evaluate

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

FAST = {"epochs": 1, "lr": 0.02, "warmup_epochs": 0.5, "weight_decay": 0.01, "label_smoothing": 0.0}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_recipe_loggers_default_and_validation():
    assert TrainRecipe().loggers == ("csv",) and TrainRecipe().to_dict()["loggers"] == ["csv"]
    assert TrainRecipe.from_dict({"loggers": "TensorBoard"}).loggers == ("tensorboard",)
    assert TrainRecipe.from_dict({"loggers": []}).loggers == ()
    for bad, message in ((["neptune"], "unknown logger 'neptune'"), (["csv", "csv"], "logger 'csv' is listed twice"),
                         ({"csv": 1}, "must be a list of logger names")):
        with pytest.raises(ConfigError, match=f"train.loggers: {message}"):
            TrainRecipe.from_dict({"loggers": bad})


def test_csv_by_default_and_no_logger_when_none_listed(tmp_path):
    (csv,) = build_loggers(["csv"], tmp_path)
    assert isinstance(csv, pl_loggers.CSVLogger) and csv.root_dir == str(tmp_path / "logs")
    result = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, loggers=[]), tmp_path / "quiet", seed=0)
    assert result["epochs"] == 1 and not (tmp_path / "quiet" / "logs").exists()


@pytest.mark.parametrize("name, modules", [("tensorboard", ("tensorboard", "tensorboardX")), ("mlflow", ("mlflow",)),
                                           ("wandb", ("wandb",))])
def test_missing_backend_is_one_line_naming_the_extra(tmp_path, monkeypatch, name, modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to find_spec
    with pytest.raises(ConfigError) as err:
        build_loggers(["csv", name], tmp_path, where="train.loggers")
    assert str(err.value) == (f"train.loggers: the {name} logger needs the {modules[0]} package: "
                              f"pip install 'hybridlab[{name}]'")
    check_loggers(["csv"])  # csv needs nothing
    assert not (tmp_path / "logs").exists()  # checked before anything was built


@pytest.mark.skipif(not installed("tensorboard"), reason="tensorboard is not installed (pip install 'hybridlab[tensorboard]')")
def test_tensorboard_writes_event_files_under_the_trial(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tmp_path / "trial"
    train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, loggers=["csv", "tensorboard"]), root, seed=0)
    (events,) = (root / "tb").glob("version_0/events.out.tfevents.*")
    assert (root / "logs" / "version_0" / "metrics.csv").is_file()  # the CSV logger still writes alongside
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"val/top1", "val/loss", "train/loss"} <= tags
    (point,) = accumulator.Scalars("val/top1")
    assert 0.0 <= point.value <= 100.0


@pytest.mark.skipif(not installed("mlflow"), reason="mlflow is not installed (pip install 'hybridlab[mlflow]')")
def test_mlflow_file_store_under_the_trial_unless_a_uri_is_set(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "unset below")  # restored after the test
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    root = tmp_path / "trial"
    result = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, loggers=["mlflow"]), root, seed=0,
                                experiment="study-a", run_name="trial 3")
    client = MlflowClient(f"file:{root / 'mlruns'}")
    experiment = client.get_experiment_by_name("study-a")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "trial 3"
    (top1,) = client.get_metric_history(run.info.run_id, "val/top1")
    assert top1.value == pytest.approx(result["top1"])
    elsewhere = f"file:{tmp_path / 'central'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    (logger,) = build_loggers(["mlflow"], tmp_path / "other")
    assert logger._tracking_uri == elsewhere and not (tmp_path / "other" / "mlruns").exists()


class FakeWandb:
    """Records what WandbLogger would hand to wandb.init."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs


def test_wandb_is_offline_unless_configured(tmp_path, monkeypatch):
    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(pl_loggers, "WandbLogger", FakeWandb)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    (logger,) = build_loggers(["wandb"], tmp_path, experiment="study-a", run_name="trial 3")
    assert logger.kwargs == {"project": "study-a", "name": "trial 3", "save_dir": str(tmp_path), "mode": "offline"}
    monkeypatch.setenv("WANDB_MODE", "online")  # the user's own setting wins
    (logger,) = build_loggers(["wandb"], tmp_path)
    assert "mode" not in logger.kwargs and logger.kwargs["name"] == tmp_path.name
