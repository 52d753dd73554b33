"""Per-device reader/writer locks shared by every worker process on a host.

Training holds the device's lock shared; throughput measurement holds it exclusively. So a speed figure
is never taken while another process trains on the same GPU (or the same CPU), which would make it
meaningless, and several trainings may still share a device when the user asks for that.

Scope: one lock file per device (`cpu`, `cuda-<index or UUID>`) in `HYBRIDLAB_LOCK_DIR` (default
`<tmp>/hybridlab-locks`): every process on this host that uses the same folder shares the locks; give a
process its own folder to take it out of the scheme. Holders leave a small note next to the lock (pid,
study, shared/exclusive), so a waiting process prints one line saying who it waits for. A wait longer
than `HYBRIDLAB_LOCK_TIMEOUT_S` seconds (default 86400: one day, as a trial may train that long) ends
with a one-line `DeviceLockTimeout`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from hybridlab.errors import HybridlabError
from studies.processes import alive

DEFAULT_TIMEOUT_S = 86400.0
POLL_S = 0.05


class DeviceLockTimeout(HybridlabError):
    """The device stayed locked by another process for longer than the timeout."""


def lock_dir() -> Path:
    """`HYBRIDLAB_LOCK_DIR`, else a folder in the system temp dir (shared by all local workers)."""
    return Path(os.environ.get("HYBRIDLAB_LOCK_DIR") or Path(tempfile.gettempdir()) / "hybridlab-locks")


def lock_timeout() -> float:
    """`HYBRIDLAB_LOCK_TIMEOUT_S`, a positive number of seconds (one line when it is not)."""
    text = os.environ.get("HYBRIDLAB_LOCK_TIMEOUT_S")
    if text is None or not text.strip():
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < float("inf")):
        raise HybridlabError(f"HYBRIDLAB_LOCK_TIMEOUT_S: expected a positive number of seconds, got {text!r}")
    return value


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
    """`with DeviceLock("cuda:1", exclusive=True): ...` waits until no other process holds it.

    `waited_s` tells how long it waited; `echo` gets one line when it has to wait, naming the holders.
    """

    def __init__(
        self, device: str, exclusive: bool, study: str = "", echo: Callable[[str], None] | None = print,
        timeout_s: float | None = None,
    ) -> None:
        self.key = device_key(device)
        self.path = lock_dir() / f"{self.key}.lock"
        self.exclusive = exclusive
        self.study = study
        self.echo = echo
        self.timeout_s = timeout_s
        self.waited_s = 0.0
        self._fh = None
        self._note: Path | None = None

    def __enter__(self) -> DeviceLock:
        timeout = self.timeout_s if self.timeout_s is not None else lock_timeout()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        mode = (fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        started = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(self._fh.fileno(), mode)
                break
            except BlockingIOError:
                pass
            self.waited_s = time.monotonic() - started
            if self.waited_s > timeout:
                self._fh.close()
                self._fh = None
                raise DeviceLockTimeout(
                    f"device {self.key}: waited {timeout:g} s for its lock, held by {self.holders() or 'another process'}; "
                    "stop that process or raise HYBRIDLAB_LOCK_TIMEOUT_S"
                )
            if not told and self.echo is not None:
                told = True
                self.echo(f"waiting for device {self.key} ({'exclusive' if self.exclusive else 'shared'}): "
                          f"held by {self.holders() or 'another process'} (lock {self.path})")
            time.sleep(POLL_S)
        self.waited_s = time.monotonic() - started
        self._note = self.path.with_name(f"{self.key}.{os.getpid()}.{id(self)}.holder")
        with contextlib.suppress(OSError):
            self._note.write_text(f"pid {os.getpid()}, study {self.study or '?'}, "
                                  f"{'exclusive' if self.exclusive else 'shared'}")
        return self

    def holders(self) -> str:
        """Who holds this device now, from the holders' notes (notes of dead processes are removed)."""
        found = []
        for note in sorted(self.path.parent.glob(f"{self.key}.*.holder")):
            pid = note.name.split(".")[1]
            if pid.isdigit() and not alive(int(pid)):
                with contextlib.suppress(OSError):
                    note.unlink()
                continue
            with contextlib.suppress(OSError):
                found.append(note.read_text().strip())
        return "; ".join(found)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._note is not None:
            with contextlib.suppress(OSError):
                self._note.unlink()
            self._note = None
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

