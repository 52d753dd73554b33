"""Measuring candidates the way a careful reviewer would: params, MACs, FLOPs (scan included),
throughput, latency, training throughput and peak memory, with the environment recorded.

    from hybridlab.measure import measure, MeasureProfile, MeasureCache
    rec = measure("mambavision_t", MeasureProfile(batch_size=8, device="cpu"))
    rec.to_dict()["throughput_img_s"]

Names are imported on first use, so importing the package (or its torch-free `record` and `table`
modules, as the CLI parser does) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "cache_key_parts": "api",
    "environment": "api",
    "measure": "api",
    "measure_key": "api",
    "MeasureCache": "cache",
    "cache_key": "cache",
    "Comparison": "compare",
    "compare": "compare",
    "ratios": "compare",
    "collect_env": "env",
    "env_fingerprint": "env",
    "ComputeCounts": "flops",
    "count_compute": "flops",
    "count_compute_fresh": "flops",
    "sdpa_flops": "flops",
    "MeasureError": "phases",
    "ContentionGuard": "guard",
    "LatencyTable": "latency_table",
    "LatencyPrediction": "latency_table",
    "GuardReaders": "guard",
    "FIGURES": "record",
    "PRECISIONS": "record",
    "MeasureProfile": "record",
    "MeasureRecord": "record",
    "ModelSource": "resolve",
    "resolve_model": "resolve",
    "CandidateThroughput": "side_by_side",
    "SideBySide": "side_by_side",
    "measure_side_by_side": "side_by_side",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
