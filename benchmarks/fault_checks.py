"""What benchmarks/fault_injection.py checks after each fault, read straight from the files.

Optuna's SQLite tables and trials.csv are read with sqlite3 and csv, never through hybridlab's own code, so a
bug in the code under test cannot hide a lost result.
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path


def query(folder: Path, sql: str) -> list[tuple]:
    """Read Optuna's sqlite tables directly (read-only), so checking never goes through the code under test."""
    try:
        with sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def db_states(folder: Path) -> dict[int, str]:
    return dict(query(folder, "select number, state from trials"))


def planned(folder: Path) -> bool:
    return bool(query(folder, "select 1 from study_user_attributes where key = 'planned_architectures'"))


def csv_rows(folder: Path) -> dict[int, tuple[str, str]]:
    try:
        with open(folder / "trials.csv", newline="") as handle:
            return {int(r["number"]): (r["state"], r["top1"]) for r in csv.DictReader(handle)}
    except (OSError, KeyError, ValueError):
        return {}


def finished(folder: Path) -> dict[int, tuple[str, str]]:
    return {n: row for n, row in csv_rows(folder).items() if row[0] == "COMPLETE"}


def leftovers(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*.tmp")]
