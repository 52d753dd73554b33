"""Lightning loggers for a trial, by name: `csv` (always available), `tensorboard`, `mlflow`, `wandb`.

    loggers = build_loggers(["csv", "tensorboard"], "results/s/trials/3", experiment="s", run_name="trial 3")

Each backend writes under the trial folder unless told otherwise, so nothing leaves the machine by default:
- csv: `<root>/logs/version_<n>/metrics.csv` (what the harness always wrote);
- tensorboard: `<root>/tb/version_<n>/` (`tensorboard --logdir results/<study>/trials`);
- mlflow: the tracking URI in `MLFLOW_TRACKING_URI`, else a file store `file:<store_root or root>/mlruns`
  (`MLFLOW_ALLOW_FILE_STORE` is then set to true for this process: MLflow 3 refuses file stores without it);
- wandb: offline runs in `<root>/wandb` unless `WANDB_MODE` is set (then W&B's own settings apply).
The optional backends are extras: a missing one is one ConfigError line naming `pip install 'hybridlab[NAME]'`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger

from hybridlab.errors import ConfigError
from studies.recipe import LOGGERS

# the modules each backend needs (any one of them for tensorboard: Lightning also writes through tensorboardX)
_NEEDS = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_backend(name: str, where: str = "train.loggers") -> ConfigError | None:
    """The error for logger `name` when its package is not installed (None when it is, or needs none)."""
    needs = _NEEDS.get(name, ())
    if not needs or any(_installed(module) for module in needs):
        return None
    return ConfigError(f"the {name} logger needs the {needs[0]} package: pip install 'hybridlab[{name}]'", where)


def check_loggers(names: Iterable[str], where: str = "train.loggers") -> None:
    """Raise the one-line ConfigError for the first named logger whose package is missing (for `--check`)."""
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"unknown logger {name!r} (known: {', '.join(LOGGERS)})", where)
        error = missing_backend(name, where)
        if error is not None:
            raise error


def build_loggers(names: Iterable[str], root: str | os.PathLike[str], experiment: str = "hybridlab",
                  run_name: str | None = None, store_root: str | os.PathLike[str] | None = None,
                  where: str = "train.loggers") -> list[Logger]:
    """Lightning loggers for `names`, writing under the trial folder `root`.

    `experiment` names the MLflow experiment and the W&B project (the study), `run_name` the run (the trial);
    `store_root` moves the MLflow file store (e.g. to the study folder, so one store holds every trial).
    """
    names = list(names)
    check_loggers(names, where)
    root = Path(root)
    run_name = run_name or root.name
    out: list[Logger] = []
    for name in names:
        if name == "csv":
            out.append(CSVLogger(save_dir=root, name="logs"))
        elif name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            out.append(TensorBoardLogger(save_dir=root, name="tb", default_hp_metric=False))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:
                uri = f"file:{Path(store_root or root).resolve() / 'mlruns'}"
                # MLflow 3 refuses a file store unless told it is wanted; a local store is the point here
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            out.append(MLFlowLogger(experiment_name=experiment, run_name=run_name, tracking_uri=uri))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            settings = {} if os.environ.get("WANDB_MODE") else {"mode": "offline"}
            out.append(WandbLogger(project=experiment, name=run_name, save_dir=str(root), **settings))
    return out
