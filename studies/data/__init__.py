"""Data modules for studies: one LightningDataModule per dataset, built by name from a study's `data:` section.

    dm = make_datamodule("global_marks", batch_size=128, train_subset=5000)
    dm.num_classes, dm.in_chans, dm.img_size     # known before setup
    dm.describe()                                # for the manifest (sizes filled in after setup)

`global_marks` (generated, no download) is the offline default; see each module for its options.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import lightning as L

from hybridlab.errors import ConfigError, HybridlabError
from studies.data.base import InMemoryDataModule, SeededDataModule
from studies.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from studies.data.fashion_mnist import FashionMNISTDataModule
from studies.data.global_marks import GlobalMarksDataModule
from studies.data.imagefolder import ImageFolderDataModule
from studies.data.synthetic import SyntheticDataModule

DEFAULT_DATASET = "global_marks"

DATASETS: dict[str, type[L.LightningDataModule]] = {
    "global_marks": GlobalMarksDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "cifar100": CIFAR100DataModule,
    "imagefolder": ImageFolderDataModule,
    "synthetic": SyntheticDataModule,
}

_COMMON = ("batch_size", "num_workers", "seed", "train_subset", "val_subset", "img_size", "drop_last",
           "val_batch_size", "augment")


def dataset_options(name: str) -> list[str]:
    """The option names a dataset accepts (its constructor keywords plus the common in-memory ones)."""
    cls = _lookup(name)
    names: list[str] = []
    for klass in cls.__mro__:
        if klass in (InMemoryDataModule, SeededDataModule, L.LightningDataModule, object) or "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.append(p.name)
    if issubclass(cls, InMemoryDataModule):
        names.extend(_COMMON)
    return sorted(set(names))


def _lookup(name: str) -> type[L.LightningDataModule]:
    if not isinstance(name, str) or name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})", "data.name")
    return DATASETS[name]


def make_datamodule(name: str = DEFAULT_DATASET, **options: Any) -> L.LightningDataModule:
    """Build the data module `name` with `options`; unknown options and bad values raise ConfigError naming the key."""
    cls = _lookup(name)
    known = dataset_options(name)
    for key in options:
        if key not in known:
            raise ConfigError(f"unknown option {key!r} for dataset {name!r} (known: {', '.join(known)})", f"data.{key}")
    return cls(**options)


def check_data(cfg: Mapping[str, Any]) -> None:
    """Pre-flight for a study's `data:` section: build the module and run its `check()` (image-folder scan, CIFAR
    checksums), so a setting that would fail every trial is refused before anything is planned.

    Keys starting with "_" (values the study loader derives) are ignored. Raises ConfigError located at `data`.
    """
    options = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
    try:
        datamodule = make_datamodule(**options)
        if hasattr(datamodule, "check"):
            datamodule.check()
    except ConfigError:
        raise
    except HybridlabError as err:
        raise ConfigError(str(err), "data") from None


__all__ = ["DATASETS", "DEFAULT_DATASET", "check_data", "dataset_options", "make_datamodule"]
