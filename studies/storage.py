"""Optuna storages from URLs, with heartbeats and one-line errors for the usual failures.

- default: `sqlite:///<results-dir>/<study>/study.db` (created on first run);
- any SQLAlchemy URL (`postgresql+psycopg2://user:pw@host/db`, `mysql+pymysql://...`): RDBStorage;
- `journal:///abs/path/file.log` (or `journal://relative/file.log`): a journal file with file locks,
  for several processes on one host or a shared file system.

RDB storages run a heartbeat, so the trial of a dead worker is failed and retried (with the retry
pointing back at it, which is how the runner finds the checkpoint to resume from).
"""

from __future__ import annotations

import functools
import os
import random
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

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


def retry_trial(study: optuna.Study, trial: FrozenTrial, max_retry: int | None = MAX_RETRY) -> int | None:
    """Queue a retry of a failed trial: same params and user attrs, plus `retry_of` and `retry_history`.

    Like Optuna's RetryHeartbeatStaleTrialCallback, but the links live in user attrs, which a running
    trial can read, so the retry finds the checkpoints of the attempts before it. `failed_attempts` keeps
    every earlier attempt's number and reason. Returns the number of attempts so far, or None when
    `max_retry` (None: no limit) is reached.
    """
    history = [*trial.user_attrs.get("retry_history", []), trial.number]
    if max_retry is not None and len(history) > max_retry:
        return None
    reasons = [*trial.user_attrs.get("failed_attempts", []),
               {"trial": trial.number, "reason": trial.user_attrs.get("fail_reason", "unknown")}]
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("fail_reason", "worker")}
    attrs.update(retry_of=trial.number, retry_history=history, failed_attempts=reasons)
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=attrs,
            system_attrs=dict(trial.system_attrs),  # grid_id / fixed_params: the retry runs the same cell
        )
    )
    return len(history)


def resumed_by_another(trial: FrozenTrial) -> bool:
    """A trial failed by a signal or a dead worker (or with no reason): its resume is another trial."""
    reason = str(trial.user_attrs.get("fail_reason", ""))
    return not reason or reason.startswith("interrupted") or (reason.startswith("worker ") and reason.endswith(" died"))


def retry_failed(study: optuna.Study, max_retries: int, force: bool = False) -> list[int]:
    """Queue a retry of every trial that failed on its own (an error, not a dead worker or a signal) and
    has none yet, if it has been tried at most `max_retries` times; `force` retries every failed trial.

    Trials failed because their worker died or was stopped are retried by whoever failed them, at once;
    leaving them alone here keeps two workers that open the study together from queuing one twice.
    Returns the numbers of the trials retried.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = []
    for trial in trials:
        if trial.state != TrialState.FAIL or trial.number in retried or trial.user_attrs.get("placeholder"):
            continue
        if not force and resumed_by_another(trial):
            continue
        if retry_trial(study, trial, None if force else max_retries) is not None:
            queued.append(trial.number)
    return queued


def is_in_memory(url: str) -> bool:
    """`sqlite://`, `sqlite:///:memory:` and `?mode=memory` URLs name a database that dies with its process."""
    if not url.startswith("sqlite:"):
        return False
    rest = url[len("sqlite:"):].split("?", 1)
    path = rest[0].lstrip("/")
    return path in ("", ":memory:") or (len(rest) > 1 and "mode=memory" in rest[1])


def sqlite_path(url: str | None) -> Path | None:
    """The file behind a `sqlite:///` URL (None for other URLs and in-memory SQLite)."""
    if not url or not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    return None if not rest or rest == ":memory:" else Path(rest)


def with_driver(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only that driver is installed."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


CREATE_RACE_TRIES = 5  # opening a new database from several workers at once: see _lost_creation_race


def open_storage(
    url: str,
    *,
    create: bool = True,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    max_retry: int = MAX_RETRY,
) -> optuna.storages.BaseStorage:
    """Open the storage behind `url`, creating it where needed unless `create=False` (readers such as
    reports must never create an empty database); StorageError with one line on failure."""
    shown = mask_password(url)
    if is_in_memory(url):
        raise StorageError(f"storage {shown} is an in-memory SQLite database: it would be lost at exit and no other "
                           "process could see it; use sqlite:///path/to/study.db")
    if not create:
        _require_existing(url, shown)
    if is_journal(url):
        path = journal_path(url)
        _ensure_writable_folder(path.parent, shown)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise StorageError(f"cannot open journal storage {shown}: {exc.strerror or exc}") from None
    db = sqlite_path(url)
    if db is not None and create:
        _ensure_writable_folder(db.parent, shown)
    if db is not None:
        if db.exists() and db.stat().st_size and not _looks_like_sqlite(db):
            raise StorageError(f"storage {shown} is not a SQLite database (corrupted or another file?)")
        if create and db.exists() and not os.access(db, os.W_OK):
            raise StorageError(f"storage {shown} is read-only; results could not be saved")
    if url.startswith("sqlite"):  # how long to wait for another process's write lock before giving up
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": float(os.environ.get("HYBRIDLAB_SQLITE_TIMEOUT", 60))}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    retry = functools.partial(retry_trial, max_retry=max_retry) if heartbeat_interval else None
    for attempt in range(CREATE_RACE_TRIES):
        try:
            return RDBStorage(
                with_driver(url),
                engine_kwargs=engine_kwargs,
                skip_table_creation=not create,
                heartbeat_interval=heartbeat_interval or None,
                grace_period=grace_period if heartbeat_interval else None,
                heartbeat_stale_trial_callback=retry,
            )
        except Exception as exc:  # SQLAlchemy, driver and Optuna errors all become one line
            if create and attempt + 1 < CREATE_RACE_TRIES and _lost_creation_race(exc):
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)  # the winner's tables exist by now
                continue
            raise storage_error(exc, url) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _lost_creation_race(exc: BaseException) -> bool:
    """Several workers creating the tables of a new PostgreSQL/MySQL database at once: all but one fail with a
    duplicate-key error on the catalogue (e.g. pg_type); opening again then finds the tables made."""
    text = f"{type(root_cause(exc)).__name__} {root_cause(exc)}".lower()
    return "uniqueviolation" in text or "duplicate key" in text or "already exists" in text


def close_storage(storage: optuna.storages.BaseStorage) -> None:
    """Release database connections (and so file handles) an RDB storage holds; other storages hold none."""
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDBStorage in a cache
    engine = getattr(backend, "engine", None)
    if engine is not None:
        backend.remove_session()
        engine.dispose()


def _require_existing(url: str, shown: str) -> None:
    if is_journal(url) and not journal_path(url).is_file():
        raise StorageError(f"journal file not found: {journal_path(url)} (from {shown})")
    if url.startswith("sqlite:"):
        db = sqlite_path(url)
        if db is None:
            raise StorageError(f"{shown}: an in-memory SQLite storage holds no study")
        if not db.is_file():
            raise StorageError(f"storage file not found: {db} (from {shown})")


def root_cause(exc: BaseException) -> BaseException:
    """Optuna and SQLAlchemy wrap the driver's error; the innermost one says what went wrong."""
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return exc


def storage_error(exc: BaseException, url: str) -> StorageError:
    """Translate a storage exception into one line that names the storage, never its password."""
    shown = mask_password(url)
    exc = root_cause(exc)
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
