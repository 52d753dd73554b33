"""Optuna storages from URLs, with heartbeats and one-line errors for the usual failures.

- default: `sqlite:///<results-dir>/<study>/study.db` (created on first run);
- any SQLAlchemy URL (`postgresql+psycopg2://user:pw@host/db`, `mysql+pymysql://...`): RDBStorage;
- `journal:///abs/path/file.log` (or `journal://relative/file.log`): a journal file with file locks,
  for several processes on one host or a shared file system.

RDB storages run a heartbeat, so the trial of a dead worker is failed and retried (with the retry
pointing back at it, which is how the runner finds the checkpoint to resume from).
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from hybridlab.errors import HybridlabError
from hybridlab.urls import mask_in_text, mask_password

HEARTBEAT_INTERVAL_S = 15
GRACE_PERIOD_S = 60
MAX_RETRY = 3


class StorageError(HybridlabError):
    """The storage cannot be opened or used; the message names it (password masked)."""


def default_storage_url(results_dir: str | os.PathLike, study: str) -> str:
    return f"sqlite:///{(Path(results_dir) / study / 'study.db').resolve()}"


def is_journal(url: str) -> bool:
    return url.startswith("journal://")


def journal_path(url: str) -> Path:
    return Path(url[len("journal://"):])


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    max_retry: int = MAX_RETRY,
) -> optuna.storages.BaseStorage:
    """Open (and create where needed) the storage behind `url`; StorageError with one line on failure."""
    shown = mask_password(url)
    if is_journal(url):
        path = journal_path(url)
        _ensure_writable_folder(path.parent, shown)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise StorageError(f"cannot open journal storage {shown}: {exc.strerror or exc}") from None
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):])
        _ensure_writable_folder(db.parent, shown)
        if db.exists() and db.stat().st_size and not _looks_like_sqlite(db):
            raise StorageError(f"storage {shown} is not a SQLite database (corrupted or another file?)")
        if db.exists() and not os.access(db, os.W_OK):
            raise StorageError(f"storage {shown} is read-only; results could not be saved")
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
        )
    except Exception as exc:  # SQLAlchemy, driver and Optuna errors all become one line
        raise storage_error(exc, url) from None


def storage_error(exc: BaseException, url: str) -> StorageError:
    """Translate a storage exception into one line that names the storage, never its password."""
    shown = mask_password(url)
    text = mask_in_text(" ".join(str(exc).split()), url)
    low = text.lower()
    if isinstance(exc, ModuleNotFoundError) or "no module named" in low:
        name = getattr(exc, "name", None) or text.rsplit(" ", 1)[-1]
        hint = " (pip install 'hybridlab[postgres]')" if "psycopg" in str(name) else ""
        return StorageError(f"storage {shown} needs the Python package {name}{hint}")
    if "database is locked" in low:
        return StorageError(
            f"storage {shown} is locked by another process; retry, or use PostgreSQL or a journal file for many workers"
        )
    if "file is not a database" in low or "malformed" in low:
        return StorageError(f"storage {shown} is not a SQLite database (corrupted or another file?)")
    if "readonly" in low or "read-only" in low or "permission denied" in low:
        return StorageError(f"storage {shown} is read-only; results could not be saved")
    if "unable to open database" in low:
        return StorageError(f"cannot open storage {shown}: its folder does not exist or is not writable")
    if "could not connect" in low or "connection refused" in low or "could not translate host" in low or "timeout" in low:
        first = text.split(" Is the server")[0]
        return StorageError(f"cannot reach database {shown}: {_short(first)}")
    if "can't load plugin" in low or "could not parse rfc1738" in low or "invalid url" in low:
        return StorageError(f"storage URL {shown} is not a valid SQLAlchemy URL or journal:///path")
    return StorageError(f"storage {shown}: {type(exc).__name__}: {_short(text)}")


def _short(text: str, limit: int = 200) -> str:
    text = text.split("(Background on this error")[0].strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ensure_writable_folder(folder: Path, shown: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the folder for storage {shown}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise StorageError(f"the folder {folder} of storage {shown} is not writable")


def _looks_like_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"
