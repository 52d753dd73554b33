"""The CLI parser imports `hybridlab.commands.bench`; the package and the modules it needs must not load torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
import hybridlab.commands.bench, hybridlab.measure, hybridlab.measure.record, hybridlab.measure.table
heavy = [m for m in ("torch", "timm", "pandas", "lightning", "optuna") if m in sys.modules]
print(",".join(heavy))
"""


@pytest.mark.subprocess
def test_bench_module_and_measure_package_import_no_torch():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_lazy_exports_resolve_and_unknown_names_fail():
    import hybridlab.measure as hm

    assert hm.measure_side_by_side.__module__ == "hybridlab.measure.side_by_side"
    assert hm.MeasureProfile().threads == 1 and "ContentionGuard" in dir(hm)
    with pytest.raises(AttributeError):
        hm.RATIO_KEYS  # noqa: B018 - the old local table is gone: ratio directions live in hybridlab.metrics
