"""Backend registry and `auto` resolution for the selective scan.

Precedence for `backend="auto"`: the innermost `scan_backend(...)` context, then the environment variable
HYBRIDLAB_SCAN_BACKEND, then the device default (CUDA tensors with mamba-ssm importable -> "mamba_ssm",
else "fast"). An explicit backend name always wins. Unknown or unavailable names raise ConfigError.
"fast" is the best CPU implementation present: "compiled" when its kernel builds here (and B, C are
input-dependent), else "blocked"; `describe_backend` names which, for measurement records. "compiled" asked
for by name runs the kernel or refuses the inputs it cannot take; it never runs anything else.
Modules: `reference`, `blocked` (on the core in `blocked_core`), `compiled` (kernel.c) and `fast` (dispatch).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Optional

import torch

from blocks.scan._common import WHERE
from hybridlab.errors import ConfigError

ENV_VAR = "HYBRIDLAB_SCAN_BACKEND"
BACKEND_NAMES = ("reference", "blocked", "compiled", "fast", "mamba_ssm")

_local = threading.local()


@functools.lru_cache(maxsize=1)
def _mamba_ssm_fn() -> Optional[Callable]:
    """The CUDA kernel's Python entry point, or None; imported once and only when asked for."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a broken CUDA extension raising at import time
        return None
    return selective_scan_fn


def _implemented() -> dict[str, Callable]:
    """The CPU backends present here (all but "compiled" always are), imported on first use."""
    from blocks.scan import compiled
    from blocks.scan.blocked import selective_scan_blocked
    from blocks.scan.fast import selective_scan_fast
    from blocks.scan.reference import selective_scan_reference

    names = {"reference": selective_scan_reference, "blocked": selective_scan_blocked, "fast": selective_scan_fast}
    if compiled.available():
        names["compiled"] = compiled.selective_scan_compiled  # refuses (D, N) B/C rather than run `blocked`
    return names


def describe_backend(name: str) -> str:
    """A resolved backend name, with the implementation "fast" stands for: "fast:compiled" or "fast:blocked"."""
    if name != "fast":
        return name
    from blocks.scan import compiled

    return "fast:compiled" if compiled.available() else "fast:blocked"


def available_backends(device: Optional[torch.device | str] = None) -> list[str]:
    """Backends usable here; with `device`, only those that can run tensors on that device."""
    names = list(_implemented())
    if _mamba_ssm_fn() is not None and torch.cuda.is_available():
        if device is None or torch.device(device).type == "cuda":
            names.append("mamba_ssm")
    return names


def _check_name(name: str, source: str) -> str:
    if name not in BACKEND_NAMES and name != "auto":
        raise ConfigError(
            f"unknown scan backend {name!r} (from {source}); choose one of auto, {', '.join(BACKEND_NAMES)}",
            WHERE,
        )
    return name


def _requested() -> tuple[str, str]:
    """The backend asked for by a context manager or the environment, and where it came from."""
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1], "scan_backend()"
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env, f"${ENV_VAR}"
    return "auto", "default"


def resolve_backend(name: str = "auto", device: Optional[torch.device | str] = None) -> str:
    """Turn a backend name (possibly "auto") into a concrete, available backend for tensors on `device`."""
    source = "backend argument"
    _check_name(name, source)
    if name == "auto":
        name, source = _requested()
        _check_name(name, source)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if name == "auto":
        if dev.type == "cuda" and "mamba_ssm" in available_backends(dev):
            return "mamba_ssm"
        return "fast"
    if name == "mamba_ssm":
        if _mamba_ssm_fn() is None:
            raise ConfigError(f"scan backend 'mamba_ssm' (from {source}) needs mamba-ssm, not installed here", WHERE)
        if dev.type != "cuda":
            raise ConfigError(f"scan backend 'mamba_ssm' (from {source}) needs CUDA tensors, got {dev.type}", WHERE)
    elif name not in _implemented():
        from blocks.scan import compiled

        why = f": {compiled.status()}" if name == "compiled" else ""
        raise ConfigError(f"scan backend {name!r} (from {source}) is not available here{why}", WHERE)
    return name


def backend_impl(name: str) -> Callable:
    """The callable for a resolved backend name."""
    if name == "mamba_ssm":
        fn = _mamba_ssm_fn()
        assert fn is not None
        return fn
    return _implemented()[name]


@contextlib.contextmanager
def scan_backend(name: str) -> Iterator[str]:
    """Make `backend="auto"` mean `name` inside the block (this thread only); beats $HYBRIDLAB_SCAN_BACKEND."""
    _check_name(name, "scan_backend()")
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()
