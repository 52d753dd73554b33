"""Find a study and load its trials table, objectives, manifest and study file.

A source is a study name under the results folder, a study folder, a `trials.csv` / `study.db` / journal
file, a storage URL (`sqlite:///...`, `postgresql://...`, `journal:///path/file.log`) or an `optuna.Study`.
Passwords in storage URLs are masked everywhere they could be shown (`mask_url`, `StudyData.scrub`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote

import pandas as pd

from hybridlab.errors import ConfigError, HybridlabError
from studies.table import CSV_NAME, read_trials, trials_frame

MANIFEST_NAME = "manifest.json"
STUDY_FILE_NAME = "study.yaml"
DB_NAME = "study.db"
DIRECTIONS = ("maximize", "minimize")
DEFAULT_OBJECTIVES: tuple[tuple[str, str], ...] = (("top1", "maximize"), ("throughput_img_s", "maximize"))
_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*")
_QUERY_SECRET_RE = re.compile(r"(?i)([?&;](?:password|passwd|pwd|secret|token)=)([^&;\s'\"<>]*)")
MASK = "***"


@dataclass(frozen=True)
class Objective:
    """One objective column and whether larger or smaller is better."""

    name: str
    direction: str = "maximize"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def sign(self) -> float:
        """Multiply by this to turn the objective into one to minimise."""
        return -1.0 if self.maximize else 1.0


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

    def scrub(self, text: str) -> str:
        """Mask passwords in any URL in `text` and any raw secret we know of."""
        return scrub(text, self.secrets)

    @property
    def ablation(self) -> dict[str, Any] | None:
        value = self.manifest.get("ablation")
        return value if isinstance(value, dict) else None


# -- masking ---------------------------------------------------------------------------------------
def url_secrets(url: str) -> tuple[str, ...]:
    """The password(s) a URL carries, raw and percent-decoded."""
    found: list[str] = []
    userinfo = _userinfo(url)
    if userinfo and ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += [m.group(2) for m in _QUERY_SECRET_RE.finditer(url)]
    out: list[str] = []
    for secret in found:
        for variant in (secret, unquote(secret)):
            if variant and variant not in out:
                out.append(variant)
    return tuple(out)


def mask_url(url: str) -> str:
    """`postgresql://user:pw@host/db` -> `postgresql://user:***@host/db` (also `?password=`)."""
    url = str(url)
    userinfo = _userinfo(url)
    if userinfo and ":" in userinfo:
        start = url.index("://") + 3
        user = userinfo.split(":", 1)[0]
        url = f"{url[:start]}{user}:{MASK}@{url[start + len(userinfo) + 1:]}"
    return _QUERY_SECRET_RE.sub(lambda m: m.group(1) + MASK, url)


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """Mask every URL in free text, then every known secret long enough to be unambiguous."""
    text = _URL_RE.sub(lambda m: mask_url(m.group(0)), str(text))
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def _userinfo(url: str) -> str | None:
    """The `user:password` part of a URL, if any (the part before the last '@' of the authority)."""
    if "://" not in url:
        return None
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        return None  # sqlite:///path, journal:///path: no authority
    end = len(rest)
    for stop in "?#":
        if stop in rest:
            end = min(end, rest.index(stop))
    at = rest.rfind("@", 0, end)
    return rest[:at] if at >= 0 else None


# -- loading ---------------------------------------------------------------------------------------
def is_storage_url(source: str) -> bool:
    return "://" in source


def load_study(source: Any, results_dir: "str | Path" = "results", study: str | None = None) -> StudyData:
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
    manifest = read_manifest(folder)
    study_yaml = _read_text(folder / STUDY_FILE_NAME)
    name = str(manifest.get("study") or folder.name)
    csv = folder / CSV_NAME
    if csv.exists():
        try:
            frame = read_trials(csv)
        except pd.errors.EmptyDataError:
            frame = read_trials_empty()
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise HybridlabError(f"cannot read {csv}: {_first_line(exc)}") from None
        data = StudyData(name=name, frame=frame, objectives=[], manifest=manifest, study_yaml=study_yaml,
                         source=str(csv), folder=folder)
        data.objectives = objectives_for(data.manifest, frame)
        return data
    if (folder / DB_NAME).exists():
        data = _from_storage(f"sqlite:///{(folder / DB_NAME).resolve()}", study or manifest.get("study"), folder.parent)
        data.folder = folder
        return data
    raise HybridlabError(f"{folder}: no {CSV_NAME} or {DB_NAME} in this study folder (has the study run?)")


def _from_storage(url: str, study_name: str | None, results_dir: Path) -> StudyData:
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
    data = _from_optuna(study, source=shown, results_dir=results_dir, secrets=secrets, url=url)
    return data


def _from_optuna(study: Any, source: str, results_dir: Path, secrets: tuple[str, ...] = (),
                 url: str | None = None) -> StudyData:
    """Frame from the storage; manifest and study file from the study folder when one is next to it."""
    frame = trials_frame(study)
    folder = results_dir / study.study_name
    local = _sqlite_path(url) if url else None
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


def open_storage(url: str) -> Any:
    """An Optuna storage for a URL, without ever creating a database or journal file that is not there."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    shown = mask_url(url)
    secrets = url_secrets(url)
    try:
        if url.startswith("journal://"):
            path = Path(url[len("journal://"):])
            if not path.is_file():
                raise HybridlabError(f"journal file not found: {path} (from {shown})")
            return JournalStorage(JournalFileBackend(str(path)))
        local = _sqlite_path(url)
        if url.startswith("sqlite:"):
            if local is None:
                raise HybridlabError(f"{shown}: an in-memory SQLite storage holds no study to report")
            if not local.is_file():
                raise HybridlabError(f"storage file not found: {local} (from {shown})")
        return optuna.storages.RDBStorage(_with_driver(url), skip_table_creation=True)
    except HybridlabError:
        raise
    except Exception as exc:  # noqa: BLE001 - drivers raise many kinds; the user needs one line
        raise HybridlabError(scrub(f"cannot open storage {shown}: {_first_line(exc)}", secrets)) from None


def _with_driver(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only that driver is installed."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def local_study_name(url: str) -> str | None:
    """The study named by the manifest next to a SQLite file (a study folder's study.db), if any."""
    local = _sqlite_path(url)
    if local is None or not (local.parent / MANIFEST_NAME).is_file():
        return None
    try:
        name = read_manifest(local.parent).get("study")
    except HybridlabError:
        return None
    return str(name) if name else None


def _sqlite_path(url: str | None) -> Path | None:
    if not url or not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


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


def parse_objectives(raw: Any, where: str = "manifest.json") -> list[Objective]:
    """`[{"name": "top1", "direction": "maximize"}, ...]` (a bare name means maximize)."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError("'objectives' must be a non-empty list", where)
    out: list[Objective] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ConfigError(f"objectives[{i}] needs a 'name'", where)
        direction = str(item.get("direction", "maximize")).lower()
        if direction not in DIRECTIONS:
            raise ConfigError(f"objectives[{i}].direction must be maximize or minimize, got {direction!r}", where)
        out.append(Objective(item["name"], direction))
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"objectives repeat a name: {names}", where)
    return out


def objectives_for(manifest: dict[str, Any], frame: pd.DataFrame) -> list[Objective]:
    if manifest.get("objectives"):
        return parse_objectives(manifest["objectives"])
    return [Objective(n, d) for n, d in DEFAULT_OBJECTIVES]


def _objectives_from_study(study: Any, frame: pd.DataFrame) -> list[Objective]:
    directions = [d.name.lower() for d in study.directions]
    try:
        names = list(study.metric_names or [])
    except Exception:  # noqa: BLE001
        names = []
    defaults = [n for n, _ in DEFAULT_OBJECTIVES]
    out: list[Objective] = []
    for i, direction in enumerate(directions):
        if i < len(names) and names[i]:
            name = names[i]
        elif len(directions) <= len(defaults) and _has_data(frame, defaults[i]):
            name = defaults[i]
        else:
            name = f"value_{i}"
        out.append(Objective(name, direction))
    return out


def _has_data(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and bool(pd.to_numeric(frame[column], errors="coerce").notna().any())


def read_trials_empty() -> pd.DataFrame:
    from studies.table import normalize_frame

    return normalize_frame(pd.DataFrame())


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except OSError:
        return None


def _first_line(exc: BaseException) -> str:
    """The root cause's message (Optuna and SQLAlchemy wrap the driver's error), first line only."""
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"the Python package {exc.name!r} is not installed"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].split(" (Background on this error")[0]

