"""`hybridlab list [--results-dir DIR | --storage URL]`: the studies in a results folder or a storage,
with their trial counts by state. Read-only: nothing is created; a password in a URL is never shown."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

STATES = ("WAITING", "RUNNING", "COMPLETE", "FAIL", "PRUNED")
HEADER = ("study", "planned", "running", "finished", "failed", "pruned", "source")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "list", help="the studies in a results folder or a storage, with their trial counts",
        description="List the studies in a results folder (each subfolder with a study.db, trials.csv or "
                    "manifest.json) or in a storage URL, with their trial counts by state.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--results-dir", default="results", type=Path, help="where studies live (default ./results)")
    where.add_argument("--storage", default=None, help="a storage URL (sqlite:///..., postgresql://..., journal:///...)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    rows = from_storage(args.storage) if args.storage else from_folder(args.results_dir)
    if not rows:
        from hybridlab.urls import mask_password

        print(f"no study in {mask_password(args.storage) if args.storage else args.results_dir}")
        return 0
    print(format_rows(rows))
    return 0


def counts_of(states: list[str]) -> dict[str, int]:
    out = {s: 0 for s in STATES}
    for s in states:
        out[s] = out.get(s, 0) + 1
    return out


def from_storage(url: str) -> list[dict[str, Any]]:
    """One row per study in the storage: name and counts by state."""
    import optuna

    from hybridlab.errors import HybridlabError
    from hybridlab.urls import mask_password, scrub, url_secrets
    from studies.storage import open_storage, root_cause

    shown = mask_password(url)
    storage = open_storage(url, create=False, heartbeat_interval=None, grace_period=None)
    try:
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
        rows = []
        for summary in sorted(summaries, key=lambda s: s.study_name):
            trials = storage.get_all_trials(summary._study_id, deepcopy=False)
            rows.append({"study": summary.study_name, "counts": counts_of([t.state.name for t in trials]),
                         "source": shown})
    except Exception as exc:  # noqa: BLE001 - any storage or driver error becomes one line
        text = str(root_cause(exc)).strip().splitlines()
        raise HybridlabError(scrub(f"cannot read storage {shown}: {text[0] if text else type(exc).__name__}",
                                   url_secrets(url))) from None
    return rows


def from_folder(results_dir: Path) -> list[dict[str, Any]]:
    """One row per study folder: counts from its study.db when there is one, else from its trials.csv."""
    from hybridlab.commands.status import read_json, study_folders
    from hybridlab.errors import HybridlabError

    rows = []
    for folder in study_folders(results_dir):
        name = str(read_json(folder / "manifest.json").get("study") or folder.name)
        db = folder / "study.db"
        row: dict[str, Any] = {"study": name, "counts": None, "source": ""}
        if db.is_file():
            try:
                found = {r["study"]: r for r in from_storage(f"sqlite:///{db.resolve()}")}
                row = {**found[name], "source": "study.db"} if name in found else row
            except HybridlabError as exc:
                row["source"] = f"study.db unreadable: {exc}"
        if row["counts"] is None and (folder / "trials.csv").is_file():
            row["counts"], row["source"] = csv_counts(folder / "trials.csv"), "trials.csv"
        if row["counts"] is None:
            row["source"] = row["source"] or "no trials yet"
        rows.append(row)
    return rows


def csv_counts(path: Path) -> dict[str, int] | None:
    """Counts by state from a trials.csv (its `state` column); None when it cannot be read."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return counts_of([row.get("state", "") for row in csv.DictReader(handle)])
    except (OSError, ValueError, csv.Error):
        return None


def format_rows(rows: list[dict[str, Any]]) -> str:
    table = [list(HEADER)]
    for r in rows:
        counts = r["counts"]
        cells = [str(counts.get(s, 0)) if counts is not None else "?" for s in STATES]
        table.append([r["study"], *cells, r["source"]])
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER) - 1)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     + "  " + row[-1] for row in table)
