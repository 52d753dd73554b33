"""Study reports: Pareto plots, hypervolume, paper tables and a self-contained HTML page.

Public API: `build_report(source, results_dir=..., out=...) -> Path` and `compare(sources, ...) -> Path`
(imported lazily, so `reports.load` / `reports.pareto` stay cheap to import).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "compare"]


def __getattr__(name: str) -> Any:
    if name == "build_report":
        from reports.build import build_report

        return build_report
    if name == "compare":
        from reports.comparison import compare

        return compare
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
