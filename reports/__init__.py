"""Study reports: Pareto plots, hypervolume, paper tables and a self-contained HTML page.

Public API: `build_report(source, results_dir=..., out=...) -> Path` and `compare(sources, ...) -> Path`
(imported lazily, so `reports.load` / `reports.pareto` stay cheap to import).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "compare"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from reports import build

        return getattr(build, name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
