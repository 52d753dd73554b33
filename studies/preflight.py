"""Checks of the settings that would fail every trial, run before anything is planned.

A typo in `--device`, a machine without CUDA, or a broken data folder would otherwise fail each planned
trial in turn (and a rerun would find nothing left to do). Each check raises one line that says what
is wrong and where.
"""

from __future__ import annotations

import re
from typing import Any

from hybridlab.errors import ConfigError, HybridlabError

_DEVICE = re.compile(r"(cpu|auto|gpu|mps|cuda(:\d{1,3})?)")


def check_device(device: str, where: str) -> None:
    """`cpu`, `auto`, `cuda`, `cuda:N` or `mps`, and the accelerator must be there."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device.strip().lower()):
        raise ConfigError(f"unknown device {device!r} (expected cpu, auto, cuda, cuda:N or mps)", where)
    device = device.strip().lower()
    if device in ("cpu", "auto"):
        return
    import torch

    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps' is not available on this machine; use cpu", where)
        return
    if not torch.cuda.is_available():
        build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise ConfigError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}, {build}); "
                          "use cpu", where)
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"device {device!r}: this machine shows {count} GPU(s) (cuda:0..cuda:{count - 1})", where)


def check_data(datamodule: Any, name: str) -> None:
    """Load the data once (as a trial would) and run the data module's own check when it has one."""
    try:
        if hasattr(datamodule, "prepare_data"):
            datamodule.prepare_data()
        if hasattr(datamodule, "setup"):
            datamodule.setup("fit")
        check = _data_check(datamodule)
        if check is not None:
            check()
    except HybridlabError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, IndexError) as exc:
        text = " ".join(str(exc).split())[:300]
        raise ConfigError(f"cannot load dataset {name!r}: {type(exc).__name__}: {text}", "data") from None


def _data_check(datamodule: Any) -> Any:
    """The data module's scan for bad files (`check()`/`validate()`), or the data package's, if any."""
    for attr in ("check", "validate"):
        method = getattr(datamodule, attr, None)
        if callable(method):
            return method
    import studies.data as data

    for attr in ("check_datamodule", "validate_datamodule"):
        func = getattr(data, attr, None)
        if callable(func):
            return lambda: func(datamodule)
    return None
