"""The environment a figure was measured in, and a fingerprint of the parts that change figures.

Published vision-Mamba throughputs disagree by up to 2x mostly because of unrecorded settings
(TF32, AMP, memory layout, scan kernel); every record therefore carries all of them, and names every
slow path the model takes here (`slow_paths`: a scan or SSD fallback is never silent).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import torch

import hybridlab

# Keys that identify "the same machine and software"; a change in any of them invalidates cached figures.
FINGERPRINT_KEYS = (
    "device",
    "device_name",
    "cuda_capability",
    "gpu_memory_mb",
    "driver",
    "cpu_model",
    "cpu_count",
    "threads",
    "python",
    "torch",
    "cuda",
    "cudnn",
    "timm",
    "mamba_ssm",
    "causal_conv1d",
    "hybridlab",
    "tf32_matmul",
    "tf32_cudnn",
    "float32_matmul_precision",
    "cudnn_benchmark",
    "scan_backend",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=8)
def gpu_driver(index: int = 0) -> str | None:
    """The NVIDIA driver release (e.g. '570.86.15') from nvidia-smi; None when it is not there."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader", "-i", str(index)],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip().splitlines()
    return text[0].strip() if out.returncode == 0 and text else None


@functools.lru_cache(maxsize=1)
def _static() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "mamba_ssm": _version("mamba-ssm") or _version("mamba_ssm"),
        "causal_conv1d": _version("causal-conv1d") or _version("causal_conv1d"),
        "hybridlab": hybridlab.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_model": cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def scan_backend(device: torch.device | str, modules: Iterable[Any] = ()) -> str:
    """The selective-scan backend the model will use on `device`, as `blocks.scan` resolves it.

    `auto` is resolved by blocks.scan (context manager, $HYBRIDLAB_SCAN_BACKEND, then device default);
    mixers built with an explicit backend (`scan_backend` attribute other than auto) are reported too.
    """
    try:
        from blocks.scan import resolve_backend
        from blocks.scan.backends import describe_backend
    except ImportError as exc:  # pragma: no cover - blocks is part of this project
        return f"unavailable ({exc.__class__.__name__})"
    names: set[str] = set()
    explicit = {getattr(m, "scan_backend", None) for m in modules}
    explicit = {e for e in explicit if isinstance(e, str) and e != "auto"}
    try:
        names.add(resolve_backend("auto", device))
        names |= {resolve_backend(e, device) for e in explicit}
    except Exception as exc:  # a bad $HYBRIDLAB_SCAN_BACKEND is reported, not fatal to the record
        return f"error: {exc}"
    return "+".join(sorted(describe_backend(n) for n in names))


def ssd_path(device: torch.device | str, modules: Iterable[Any] = ()) -> str | None:
    """The SSD path(s) the model's Mamba-2 mixers run on `device` (each module with an `ssd_path(device)`
    method answers for itself), joined with "+"; None when the model has no such mixer."""
    paths = {m.ssd_path(device) for m in modules if callable(getattr(m, "ssd_path", None))}
    return "+".join(sorted(paths)) if paths else None


def scan_slowness(backend: str, device: torch.device | str) -> str | None:
    """Why a resolved selective-scan backend (as `scan_backend` names it) is slower than this device's best,
    or None when it is the best one here."""
    if "reference" in backend.split("+"):
        return "the sequential reference scan"
    if torch.device(device).type == "cuda" and backend != "mamba_ssm":
        return "CUDA without mamba-ssm's kernel: the CPU-oriented scan"
    if "fast:blocked" in backend.split("+"):
        return "no C compiler: the blocked scan instead of the compiled kernel"
    return None


def slow_paths(device: torch.device | str, modules: Iterable[Any], scan: str, ssd: str | None) -> list[str]:
    """One line per slow path the model takes here ("never silently slow"): the selective scan, when the
    model has a scan mixer (a `scan_backend` attribute), and Mamba-2's SSD."""
    out = []
    if any(hasattr(m, "scan_backend") for m in modules):
        why = scan_slowness(scan, device)
        if why:
            out.append(f"selective scan {scan} ({why})")
    if ssd:
        from blocks.ssd_scan import is_slow_path

        out.extend(f"SSD {p}" for p in ssd.split("+") if is_slow_path(p))
    return out


def collect_env(
    device: torch.device | str,
    precision: str = "fp32",
    channels_last: bool = False,
    compile_mode: str | None = None,
    modules: Iterable[Any] = (),
) -> dict[str, Any]:
    """Everything that can change a figure: hardware, versions, numeric flags and layout settings."""
    dev = torch.device(device)
    modules = list(modules)  # read more than once below
    env: dict[str, Any] = {"device": dev.type}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        env.update(
            device_name=props.name,
            cuda_capability=f"{props.major}.{props.minor}",
            gpu_memory_mb=int(props.total_memory // 2**20),
            gpu_count=torch.cuda.device_count(),
            driver=gpu_driver(index),
        )
    else:
        env.update(device_name=cpu_model(), cuda_capability=None, gpu_memory_mb=None, gpu_count=0, driver=None)
    env.update(_static())
    env.update(
        threads=torch.get_num_threads(),
        interop_threads=torch.get_num_interop_threads(),
        tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
        tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
        float32_matmul_precision=torch.get_float32_matmul_precision(),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        precision=precision,
        channels_last=bool(channels_last),
        compile=compile_mode or "off",
        scan_backend=scan_backend(dev, modules),
        ssd_path=ssd_path(dev, modules),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        load_avg=load_average(),
    )
    env["slow_paths"] = slow_paths(dev, modules, env["scan_backend"], env["ssd_path"])
    return env


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: on a shared machine they say how much to trust CPU timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def env_fingerprint(env: dict[str, Any]) -> str:
    """Short stable hash of the machine/software part of `env` (FINGERPRINT_KEYS)."""
    blob = json.dumps({k: env.get(k) for k in FINGERPRINT_KEYS}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


__all__ = [
    "FINGERPRINT_KEYS", "collect_env", "cpu_model", "env_fingerprint", "gpu_driver", "load_average", "scan_backend",
    "scan_slowness", "slow_paths", "ssd_path",
]
