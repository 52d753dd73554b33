"""One atomic file write for everything the harness stores: readers never see half a file.

Data goes to a temporary file in the target's folder, is flushed to disk, and is moved into place with
`os.replace` (atomic on POSIX). A failure (disk full, kill) leaves the old file intact and no temporary
file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Union

Content = Union[str, bytes, Callable[[Path], None]]


def atomic_write(path: str | os.PathLike[str], content: Content, mode: int | None = None) -> Path:
    """Write `content` (text, bytes, or a function that writes to the path it is given) to `path` atomically.

    `mode` sets the file's permission bits (e.g. 0o600 for files that may hold secrets); by default the
    file gets the usual umask-based mode, as `open()` would give it. Returns the path.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else content
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode if mode is not None else _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
