"""`hybridlab status [STUDY | URL]`: where a study stands, read-only, while it runs or after.

Planned (waiting), running (worker and current epoch), finished, failed and pruned trials; the time since
the first trial started and an ETA: the mean finished-trial duration x the trials left / the workers active.
The storage is opened without creating anything; a password in its URL is never shown.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_ORDER = ("WAITING", "RUNNING", "COMPLETE", "FAIL", "PRUNED")
STATE_WORDS = {"WAITING": "planned", "RUNNING": "running", "COMPLETE": "finished", "FAIL": "failed",
               "PRUNED": "pruned"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "status", help="planned, running, finished, failed and pruned trials of a study, with an ETA",
        description="Read a study's storage (never creating or changing anything) and print its planned, running "
                    "(worker and current epoch), finished, failed and pruned trials, the elapsed time and an ETA "
                    "(mean finished-trial duration x trials left / workers active).")
    parser.add_argument("source", nargs="?", default=None, metavar="STUDY | URL",
                        help="a study name under --results-dir, a study folder, or a storage URL (default: "
                             "$HYBRIDLAB_STORAGE, or the only study under --results-dir)")
    parser.add_argument("--results-dir", default="results", type=Path, help="where studies live (default ./results)")
    parser.add_argument("--study", default=None, help="study name inside a storage holding several studies")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from hybridlab.errors import HybridlabError

    try:
        study, shown = open_study(args.source, args.results_dir, args.study)
    except HybridlabError as exc:
        table = snapshot_table(args.source, args.results_dir)
        if table is None:
            raise
        study, shown = table_study(table), f"{table}; the storage could not be read: {exc}"
        print(format_status(summarize(study), study.study_name, shown))
        print("note: trials.csv is rewritten after each finished trial, so a trial started since shows as planned")
        return 0
    print(format_status(summarize(study), study.study_name, shown))
    return 0


# -- finding the study -----------------------------------------------------------------------------
def resolve_url(source: str | None, results_dir: Path) -> tuple[str, str | None]:
    """(storage URL, the study name a folder implies) for a name, a folder, a file or a URL."""
    import os

    from hybridlab.errors import HybridlabError

    if source is None:
        env = os.environ.get("HYBRIDLAB_STORAGE")
        if env:
            return env, None
        found = study_folders(results_dir)
        if len(found) != 1:
            listed = f" ({', '.join(p.name for p in found)})" if found else ""
            raise HybridlabError(f"give a study name or storage URL: {results_dir} holds {len(found)} studies{listed}")
        source = str(found[0])
    if "://" in source:
        return source, None
    path = Path(source)
    if path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{path.resolve()}", None
    if path.is_file() and path.suffix in (".log", ".jsonl", ".journal"):
        return f"journal:///{path.resolve()}", None
    folder = results_dir / source if (results_dir / source).is_dir() and "/" not in source else path
    if not folder.is_dir():
        known = ", ".join(p.name for p in study_folders(results_dir))
        raise HybridlabError(f"study {source!r} not found: no folder {results_dir / source}"
                             + (f" (studies there: {known})" if known else ""))
    manifest = read_json(folder / "manifest.json")
    stored = manifest.get("storage")
    name = str(manifest.get("study") or folder.name)
    if (folder / "study.db").is_file():
        return f"sqlite:///{(folder / 'study.db').resolve()}", name
    if isinstance(stored, str) and stored:
        return stored, name
    raise HybridlabError(f"{folder}: no study.db and no storage recorded in manifest.json (has the study run?)")


def open_study(source: str | None, results_dir: Path, study: str | None) -> tuple[Any, str]:
    """The Optuna study to read, and its storage URL with the password masked; one-line errors."""
    import optuna

    from hybridlab.errors import HybridlabError
    from hybridlab.urls import mask_password, scrub, url_secrets
    from studies.storage import open_storage, root_cause

    url, implied = resolve_url(source, results_dir)
    shown, secrets = mask_password(url), url_secrets(url)
    storage = open_storage(url, create=False, heartbeat_interval=None, grace_period=None)

    def fail(what: str, exc: BaseException) -> HybridlabError:
        text = str(root_cause(exc)).strip().splitlines()
        return HybridlabError(scrub(f"{what}: {text[0] if text else type(exc).__name__}", secrets))

    try:
        names = sorted(optuna.get_all_study_names(storage))
    except Exception as exc:  # noqa: BLE001 - any storage or driver error becomes one line
        raise fail(f"cannot read storage {shown}", exc) from None
    wanted = study or (implied if implied in names else None)
    if wanted is None:
        if len(names) != 1:
            listed = f" ({', '.join(names)}); choose one with --study NAME" if names else ""
            raise HybridlabError(f"storage {shown} holds {len(names)} studies{listed}")
        wanted = names[0]
    if wanted not in names:
        raise HybridlabError(f"study {wanted!r} not found in storage {shown}"
                             + (f" (it holds: {', '.join(names)})" if names else " (it holds no study)"))
    try:
        return optuna.load_study(study_name=wanted, storage=storage), shown
    except Exception as exc:  # noqa: BLE001
        raise fail(f"cannot load study {wanted!r} from {shown}", exc) from None


def snapshot_table(source: str | None, results_dir: Path) -> Path | None:
    """The trials.csv of a study folder named by `source`, when there is one (read when the storage cannot be)."""
    if source is None or "://" in source:
        return None
    for folder in (results_dir / source, Path(source)):
        if (folder / "trials.csv").is_file():
            return folder / "trials.csv"
    return None


def table_study(path: Path) -> Any:
    """A trials.csv as the few parts of an Optuna study that `summarize` reads."""
    import csv
    from types import SimpleNamespace

    def when(text: str | None) -> dt.datetime | None:
        try:
            return dt.datetime.fromisoformat(text) if text else None
        except ValueError:
            return None

    def value(text: str | None) -> Any:
        if text is None or text == "":
            return None
        try:
            return int(text)
        except ValueError:
            return text

    trials = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not str(row.get("number", "")).isdigit():
                continue
            attrs = {k: value(v) for k, v in row.items() if value(v) is not None}
            trials.append(SimpleNamespace(
                number=int(row["number"]), state=SimpleNamespace(name=row.get("state") or "WAITING"), user_attrs=attrs,
                datetime_start=when(row.get("datetime_start")), datetime_complete=when(row.get("datetime_complete")),
                intermediate_values={}))
    name = str(read_json(path.parent / "manifest.json").get("study") or path.parent.name)
    return SimpleNamespace(study_name=name, user_attrs={}, get_trials=lambda deepcopy=False: trials)


def study_folders(results_dir: Path) -> list[Path]:
    """Subfolders of `results_dir` that hold a study (a study.db, trials.csv or manifest.json)."""
    if not results_dir.is_dir():
        return []
    return sorted(p for p in results_dir.iterdir()
                  if p.is_dir() and any((p / f).is_file() for f in ("study.db", "trials.csv", "manifest.json")))


def read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- summarizing -----------------------------------------------------------------------------------
@dataclass
class Status:
    """What `status` prints; times in seconds."""

    counts: dict[str, int]
    running: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    planned_architectures: int | None = None
    elapsed_s: float | None = None
    mean_trial_s: float | None = None
    workers: int = 0
    eta_s: float | None = None


def current_epoch(trial: Any) -> tuple[int | None, int | None]:
    """(epoch, total epochs) of a running trial: its `epoch`/`epochs` user attributes when the training records
    them, else the number of epochs reported to Optuna as intermediate values (total unknown)."""
    attrs = trial.user_attrs
    epoch = attrs.get("epoch", attrs.get("current_epoch"))
    total = attrs.get("epochs", attrs.get("max_epochs"))
    if not isinstance(epoch, int):
        curve = attrs.get("learning_curve")
        epoch = len(curve) if isinstance(curve, list) and curve else (len(trial.intermediate_values) or None)
    return epoch, total if isinstance(total, int) else None


def summarize(study: Any, now: dt.datetime | None = None) -> Status:
    """Counts by state, running and failed trials, elapsed time and ETA of an Optuna study."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    counts = {s: 0 for s in STATE_ORDER}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    now = now or dt.datetime.now()
    status = Status(counts=counts)
    planned = study.user_attrs.get("planned_architectures")
    status.planned_architectures = planned if isinstance(planned, int) else None
    for t in trials:
        attrs = t.user_attrs
        if t.state.name == "RUNNING":
            epoch, total = current_epoch(t)
            started = t.datetime_start
            status.running.append({
                "number": t.number, "pattern": attrs.get("pattern") or attrs.get("label") or attrs.get("baseline"),
                "seed": attrs.get("seed"), "worker": attrs.get("worker"), "epoch": epoch, "epochs": total,
                "running_s": (now - started).total_seconds() if started else None})
        elif t.state.name in ("FAIL", "PRUNED"):
            status.failed.append({"number": t.number, "state": t.state.name,
                                  "pattern": attrs.get("pattern") or attrs.get("label") or attrs.get("baseline"),
                                  "reason": attrs.get("fail_reason")})
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if starts:
        live = counts["RUNNING"]  # a study with no trial running is paused: its clock stops at the last end
        ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
        end = now if live or not ends else max(ends)
        status.elapsed_s = max(0.0, (end - min(starts)).total_seconds())
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials  # reused results took no time
                 if t.state.name == "COMPLETE" and t.datetime_start and t.datetime_complete
                 and t.user_attrs.get("reused_from") is None]
    if durations:
        status.mean_trial_s = sum(durations) / len(durations)
    status.workers = len({r["worker"] or f"trial {r['number']}" for r in status.running})
    remaining = counts["WAITING"] + counts["RUNNING"]
    if status.mean_trial_s is not None and status.workers and remaining:
        status.eta_s = status.mean_trial_s * remaining / status.workers
    elif remaining == 0:
        status.eta_s = 0.0
    return status


# -- printing --------------------------------------------------------------------------------------
def fmt_duration(seconds: float | None) -> str:
    """1h05m, 12m30s, 42s."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_status(status: Status, name: str, shown_url: str) -> str:
    counts = status.counts
    total = sum(counts.values())
    lines = [f"study {name} ({shown_url})"]
    parts = [f"{counts.get(s, 0)} {STATE_WORDS[s]}" for s in STATE_ORDER]
    parts += [f"{n} {s.lower()}" for s, n in counts.items() if s not in STATE_ORDER and n]
    arch = f"; {status.planned_architectures} architectures planned" if status.planned_architectures else ""
    lines.append(f"trials: {total} ({', '.join(parts)}){arch}")
    for r in status.running:
        epoch = "epoch ?" if r["epoch"] is None else f"epoch {r['epoch']}" + (f"/{r['epochs']}" if r["epochs"] else "")
        seed = "" if r["seed"] is None else f" seed {r['seed']}"
        lines.append(f"  running trial {r['number']}: {r['pattern'] or '?'}{seed} | worker {r['worker'] or '?'} | "
                     f"{epoch} | for {fmt_duration(r['running_s'])}")
    for r in status.failed:
        word = "failed" if r["state"] == "FAIL" else "pruned"
        reason = " ".join(str(r["reason"] or "no reason recorded").split())
        lines.append(f"  {word} trial {r['number']}: {r['pattern'] or '?'}: {reason[:160]}")
    lines.append(f"elapsed: {fmt_duration(status.elapsed_s)}" if status.elapsed_s is not None
                 else "elapsed: no trial has started")
    remaining = counts.get("WAITING", 0) + counts.get("RUNNING", 0)
    if remaining == 0:
        lines.append("ETA: done (no trial planned or running)")
    elif status.eta_s is not None:
        plural = "s" if status.workers != 1 else ""
        lines.append(f"ETA: {fmt_duration(status.eta_s)} (mean finished trial {fmt_duration(status.mean_trial_s)} x "
                     f"{remaining} left / {status.workers} active worker{plural})")
    elif not status.workers:
        lines.append(f"ETA: unknown ({remaining} trials left, no worker running)")
    else:
        lines.append(f"ETA: unknown ({remaining} trials left, no trial finished yet)")
    return "\n".join(lines)
