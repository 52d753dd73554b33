"""Find a study and load its trials table, objectives, manifest and study file.

A source is a study name under the results folder, a study folder, a `trials.csv` / `study.db` / journal
file, a storage URL (`sqlite:///...`, `postgresql://...`, `journal:///path/file.log`) or an `optuna.Study`.
Passwords in storage URLs are masked everywhere they could be shown (`mask_url`, `StudyData.scrub`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hybridlab.errors import ConfigError, HybridlabError
from hybridlab.metrics import DEFAULT_OBJECTIVES, Objective, parse_objectives
from hybridlab.urls import mask_password as mask_url
from hybridlab.urls import scrub, url_secrets
from studies.storage import is_journal, journal_path, root_cause, sqlite_path
from studies.storage import open_storage as _open_storage
from studies.table import CSV_NAME, read_trials, trials_frame

MANIFEST_NAME = "manifest.json"
STUDY_FILE_NAME = "study.yaml"
DB_NAME = "study.db"
LIVE_STATES = ("RUNNING", "WAITING")


@dataclass
class StudyData:
    """Everything a report needs about one study."""

    name: str
    frame: pd.DataFrame
    objectives: list[Objective]
    manifest: dict[str, Any] = field(default_factory=dict)
    study_yaml: str | None = None
    source: str = ""  # where it came from, password masked
    folder: Path | None = None  # the study's results folder (default parent of the report)
    secrets: tuple[str, ...] = ()  # raw passwords seen in URLs, removed from every output
    notes: list[str] = field(default_factory=list)  # what the reader should know about the source (shown on the page)

    def scrub(self, text: str) -> str:
        """Mask passwords in any URL in `text` and any raw secret we know of."""
        return scrub(text, self.secrets)

    @property
    def ablation(self) -> dict[str, Any] | None:
        value = self.manifest.get("ablation")
        return value if isinstance(value, dict) else None


# -- loading ---------------------------------------------------------------------------------------
def is_storage_url(source: str) -> bool:
    return "://" in source


def load_study(source: Any, results_dir: str | Path = "results", study: str | None = None) -> StudyData:
    """Resolve `source` (see module doc) and load it; any problem is one HybridlabError line."""
    results_dir = Path(results_dir)
    if hasattr(source, "get_trials") and hasattr(source, "study_name"):
        return _from_optuna(source, source=f"optuna study {source.study_name!r}", results_dir=results_dir)
    text = str(source).strip()
    if not text:
        raise HybridlabError("no study given (a study name, a study folder or a storage URL)")
    if is_storage_url(text):
        return _from_storage(text, study, results_dir)
    path = Path(text)
    if path.is_file():
        if path.name == CSV_NAME:
            return _from_folder(path.parent, study)
        if path.suffix in (".db", ".sqlite", ".sqlite3"):
            return _from_storage(f"sqlite:///{path.resolve()}", study, results_dir)
        if path.suffix in (".log", ".jsonl", ".journal"):
            return _from_storage(f"journal:///{path.resolve()}", study, results_dir)
        raise HybridlabError(f"{text}: not a study folder, trials.csv, study.db or journal file")
    by_name = results_dir / text
    if by_name.is_dir() and "/" not in text and "\\" not in text:
        return _from_folder(by_name, study)
    if path.is_dir():
        return _from_folder(path, study)
    folder = by_name
    known = sorted(p.name for p in results_dir.iterdir() if (p / CSV_NAME).exists()) if results_dir.is_dir() else []
    hint = f" (studies there: {', '.join(known)})" if known else ""
    raise HybridlabError(f"study {text!r} not found: no folder {folder}{hint}")


def _from_folder(folder: Path, study: str | None = None) -> StudyData:
    """A study folder: the live storage when it can be opened from here, else the `trials.csv` snapshot.

    The runner rewrites trials.csv after each finished trial, so while a study runs the table lags the
    storage (a trial that started since shows as WAITING); reading the storage keeps every form right.
    """
    manifest = read_manifest(folder)
    csv = folder / CSV_NAME
    live = _live_url(folder, manifest, has_table=csv.exists())
    fallback = ""
    if live is not None:
        try:
            return _from_storage(live, study or manifest.get("study"), folder.parent, folder=folder)
        except HybridlabError as exc:
            if not csv.exists():
                raise
            fallback = f"the storage could not be read ({exc}), so "
    if not csv.exists():
        raise HybridlabError(f"{folder}: no {CSV_NAME} or {DB_NAME} in this study folder (has the study run?)")
    try:
        frame = read_trials(csv)
    except pd.errors.EmptyDataError:
        frame = read_trials_empty()
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise HybridlabError(f"cannot read {csv}: {_first_line(exc)}") from None
    name = str(manifest.get("study") or folder.name)
    data = StudyData(name=name, frame=frame, objectives=[], manifest=manifest,
                     study_yaml=_read_text(folder / STUDY_FILE_NAME), source=str(csv), folder=folder)
    data.objectives = objectives_for(data.manifest, frame)
    if fallback or frame["state"].isin(LIVE_STATES).any():
        stored = manifest.get("storage")
        where = f" ({mask_url(stored)})" if isinstance(stored, str) and stored else ""
        data.notes.append(f"Trial states come from trials.csv, which the study rewrites after each finished trial; "
                          f"{fallback}a trial started since shows as waiting. For live states, report from the "
                          f"study's storage URL{where}.")
    return data


def _live_url(folder: Path, manifest: dict[str, Any], has_table: bool) -> str | None:
    """The storage URL to read a study folder from: a SQLite or journal file inside the folder (the manifest's,
    else the folder's study.db).

    A storage outside the folder is not followed: a copied study folder (say, committed under docs/) must
    report what it holds, not the original's later state; the page names that storage for live states.
    Without a table, the folder's study.db is read whatever the manifest says.
    """
    stored = manifest.get("storage")
    if isinstance(stored, str) and stored:
        path = sqlite_path(stored) or (journal_path(stored) if is_journal(stored) else None)
        if path is not None and path.is_file() and _inside(path, folder):
            return stored
    own = folder / DB_NAME
    stored_elsewhere = isinstance(stored, str) and stored and not _inside(sqlite_path(stored) or Path("/"), folder)
    if own.is_file() and (not has_table or not stored_elsewhere):
        return f"sqlite:///{own.resolve()}"
    return None


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().parent == folder.resolve()
    except OSError:
        return False


def _from_storage(url: str, study_name: str | None, results_dir: Path, folder: Path | None = None) -> StudyData:
    import optuna

    secrets = url_secrets(url)
    shown = mask_url(url)
    storage = open_storage(url)
    try:
        names = sorted(optuna.get_all_study_names(storage))
    except Exception as exc:  # noqa: BLE001 - any storage/driver error becomes one line
        raise HybridlabError(scrub(f"cannot read storage {shown}: {_first_line(exc)}", secrets)) from None
    if study_name is None:
        if len(names) > 1 and local_study_name(url):
            study_name = local_study_name(url)
    if study_name is None:
        if not names:
            raise HybridlabError(f"storage {shown} holds no study")
        if len(names) > 1:
            raise HybridlabError(f"storage {shown} holds {len(names)} studies ({', '.join(names)}); "
                                 "choose one with --study NAME")
        study_name = names[0]
    elif study_name not in names:
        listed = f" (it holds: {', '.join(names)})" if names else " (it holds no study)"
        raise HybridlabError(f"study {study_name!r} not found in storage {shown}{listed}")
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except Exception as exc:  # noqa: BLE001
        raise HybridlabError(scrub(f"cannot load study {study_name!r} from {shown}: {_first_line(exc)}", secrets)) from None
    return _from_optuna(study, source=shown, results_dir=results_dir, secrets=secrets, url=url, folder=folder)


def _from_optuna(study: Any, source: str, results_dir: Path, secrets: tuple[str, ...] = (),
                 url: str | None = None, folder: Path | None = None) -> StudyData:
    """Frame from the storage; manifest and study file from `folder`, else from the study folder next to it."""
    frame = trials_frame(study)
    if folder is None:
        folder = results_dir / study.study_name
        local = sqlite_path(url) if url else None
        if local is not None and (local.parent / MANIFEST_NAME).exists():
            folder = local.parent
    manifest = read_manifest(folder) if folder.is_dir() else {}
    if manifest.get("study") not in (None, study.study_name):
        manifest = {}  # a different study's folder
    study_yaml = _read_text(folder / STUDY_FILE_NAME) if manifest else None
    data = StudyData(name=study.study_name, frame=frame, objectives=[], manifest=manifest,
                     study_yaml=study_yaml, source=source, folder=folder, secrets=secrets)
    if manifest.get("objectives"):
        data.objectives = objectives_for(manifest, frame)
    else:
        data.objectives = _objectives_from_study(study, frame)
    return data


def local_study_name(url: str) -> str | None:
    """The study named by the manifest next to a SQLite file (a study folder's study.db), if any."""
    local = sqlite_path(url)
    if local is None or not (local.parent / MANIFEST_NAME).is_file():
        return None
    try:
        name = read_manifest(local.parent).get("study")
    except HybridlabError:
        return None
    return str(name) if name else None


# -- manifest and objectives -----------------------------------------------------------------------
def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"not valid JSON ({_first_line(exc)})", str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("must be a JSON object", str(path))
    return data


def objectives_for(manifest: dict[str, Any], frame: pd.DataFrame) -> list[Objective]:
    """The manifest's objectives (names a newer or older harness recorded are kept), else the default pair."""
    if manifest.get("objectives"):
        return parse_objectives(manifest["objectives"], where="manifest.json: objectives", known_only=False)
    return parse_objectives(None)


def _objectives_from_study(study: Any, frame: pd.DataFrame) -> list[Objective]:
    directions = [d.name.lower() for d in study.directions]
    try:
        names = list(study.metric_names or [])
    except Exception:  # noqa: BLE001
        names = []
    defaults = list(DEFAULT_OBJECTIVES)
    out: list[Objective] = []
    for i, direction in enumerate(directions):
        if i < len(names) and names[i]:
            name = names[i]
        elif len(directions) <= len(defaults) and _has_data(frame, defaults[i]):
            name = defaults[i]
        else:
            name = f"value_{i}"
        out.append(Objective(name, direction))  # type: ignore[arg-type]
    return out


def _has_data(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and bool(pd.to_numeric(frame[column], errors="coerce").notna().any())


def study_setup(data: StudyData) -> dict[str, Any]:
    """The dataset and image size a study trained on, from its manifest, else from its study file.

    Keys `dataset` and `img_size`, None when not recorded (older results keep them in other places).
    """
    manifest = data.manifest
    sections = [manifest.get("data"), manifest.get("measure"), manifest.get("train")]
    if data.study_yaml:
        import yaml

        try:
            parsed = yaml.safe_load(data.study_yaml)
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, dict):
            sections += [parsed.get("data"), parsed.get("measure"), parsed.get("train")]
    sections = [s for s in sections if isinstance(s, dict)]
    dataset = next((s.get(k) for s in sections for k in ("name", "dataset") if s.get(k) is not None), None)
    img_size = next((s["img_size"] for s in sections if s.get("img_size") is not None), None)
    return {"dataset": dataset, "img_size": img_size}


def read_trials_empty() -> pd.DataFrame:
    from studies.table import normalize_frame

    return normalize_frame(pd.DataFrame())


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except OSError:
        return None


def open_storage(url: str) -> Any:
    """An Optuna storage for reading: never creates a database or journal file that is not there."""
    return _open_storage(url, create=False, heartbeat_interval=None, grace_period=None)


def _first_line(exc: BaseException) -> str:
    """The root cause's message, first line only."""
    exc = root_cause(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"the Python package {exc.name!r} is not installed"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].split(" (Background on this error")[0]
