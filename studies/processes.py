"""Whether a process on this host still runs: how a worker tells a dead peer's trial, plan or lock note."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True for this process and any live one (a zombie counts as dead; another user's as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
