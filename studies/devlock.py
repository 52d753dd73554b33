"""Per-device reader/writer locks shared by every worker process on a host.

Training holds the device's lock shared; throughput measurement holds it exclusively. So a speed figure
is never taken while another process trains on the same GPU (or the same CPU), which would make it
meaningless, and several trainings may still share a device when the user asks for that.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from pathlib import Path
from types import TracebackType


def lock_dir() -> Path:
    """`HYBRIDLAB_LOCK_DIR`, else a folder in the system temp dir (shared by all local workers)."""
    return Path(os.environ.get("HYBRIDLAB_LOCK_DIR") or Path(tempfile.gettempdir()) / "hybridlab-locks")


def device_key(device: str) -> str:
    """`cuda` and `cuda:0` are the same GPU when CUDA_VISIBLE_DEVICES is not set; `cpu` is one device."""
    device = str(device or "cpu").lower()
    if device in ("auto", "gpu"):
        device = "cuda"
    if device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda"):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if visible:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            if index < len(ids):
                return f"cuda-{re.sub(r'[^A-Za-z0-9_-]', '_', ids[index])}"
        return f"cuda-{index}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", device)


class DeviceLock:
    """`with DeviceLock("cuda:1", exclusive=True): ...` blocks until no other process holds it."""

    def __init__(self, device: str, exclusive: bool) -> None:
        self.path = lock_dir() / f"{device_key(device)}.lock"
        self.exclusive = exclusive
        self._fh = None

    def __enter__(self) -> DeviceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
