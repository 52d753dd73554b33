"""Measuring candidates the way a careful reviewer would: params, MACs, FLOPs (scan included),
throughput, latency, training throughput and peak memory, with the environment recorded.

    from hybridlab.measure import measure, MeasureProfile, MeasureCache
    rec = measure("mambavision_t", MeasureProfile(batch_size=8, device="cpu"))
    rec.to_dict()["throughput_img_s"]
"""

from hybridlab.measure.api import (
    RATIO_KEYS,
    Comparison,
    MeasureError,
    cache_key_parts,
    compare,
    environment,
    measure,
    measure_key,
    ratios,
)
from hybridlab.measure.cache import MeasureCache, cache_key
from hybridlab.measure.env import collect_env, env_fingerprint
from hybridlab.measure.flops import ComputeCounts, count_compute, count_compute_fresh, sdpa_flops
from hybridlab.measure.record import FIGURES, PRECISIONS, MeasureProfile, MeasureRecord
from hybridlab.measure.resolve import ModelSource, resolve_model

__all__ = [
    "FIGURES",
    "PRECISIONS",
    "RATIO_KEYS",
    "Comparison",
    "ComputeCounts",
    "MeasureCache",
    "MeasureError",
    "MeasureProfile",
    "MeasureRecord",
    "ModelSource",
    "cache_key",
    "cache_key_parts",
    "collect_env",
    "compare",
    "count_compute",
    "count_compute_fresh",
    "env_fingerprint",
    "environment",
    "measure",
    "measure_key",
    "ratios",
    "resolve_model",
    "sdpa_flops",
]
