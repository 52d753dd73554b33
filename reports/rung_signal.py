"""Does a halving rung's top-1 carry signal, or are its rows within sampling noise of each other?

Successive halving promotes by the early rungs' figures. When a rung is so short that every row still sits
near chance, its top-1 values differ by less than one validation set's sampling error, and its promotions
follow noise (docs/benchmarks/halving.md: rung-0 tau -0.19 and 0.11 against the final ranking). The check is
deliberately simple: the spread of the rung's per-architecture top-1 against the 95% half-width of the
difference of two independent binomial scores on `val_subset` images at the rung's mean accuracy. It cannot
see correlated errors between rows scored on the same images, so it only ever says "cannot tell apart".
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from reports.agreement import fidelity_levels, fidelity_ranks, seed_means

Z95 = 1.96
MIN_ROWS = 3


def noise_half_width(top1_pct: float, images: int) -> float:
    """95% half-width (pp) of the difference of two independent top-1 scores at `top1_pct` on `images` images."""
    p = min(max(top1_pct / 100.0, 0.0), 1.0)
    return 100.0 * Z95 * math.sqrt(2.0 * p * (1.0 - p) / images)


def blind_rungs(frame: pd.DataFrame, manifest: dict[str, Any]) -> list[str]:
    """One sentence per halving rung whose top-1 spread is within sampling noise (none when it cannot be told)."""
    images = (manifest.get("data") or {}).get("val_subset")
    if not isinstance(images, int) or images <= 0 or frame.empty or "top1" not in frame.columns:
        return []
    ranks = fidelity_ranks(frame)
    out = []
    for level in fidelity_levels(frame):
        if not level.label.startswith("rung"):
            continue
        means = seed_means(frame[ranks == level.rank], ["top1"])["top1"].dropna()
        if len(means) < MIN_ROWS:
            continue
        spread = float(means.max() - means.min())
        half = noise_half_width(float(means.mean()), images)
        if spread < half:
            out.append(f"At {level.label} the {len(means)} architectures' top-1 spans {means.min():.1f}-{means.max():.1f}% "
                       f"({spread:.1f} pp), less than the sampling error of two scores on {images:,} validation images "
                       f"(+-{half:.1f} pp): its promotions could not tell them apart by top-1. A longer rung, or "
                       "more validation images, would give halving a ranking to act on.")
    return out
