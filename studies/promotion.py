"""Which rows of a finished rung go on to the next one: top 1/eta, by value or by Pareto rank.

Pure Python (no torch, no Optuna), so a decision can be checked by hand:

    promote([Row("a", (71.0,), 0), Row("b", (65.0,), 1), Row("c", (69.0,), 2)], ["maximize"], eta=3)
    -> [Promotion("a", ...)]                         # ceil(3 / 3) = 1 row

- One objective: the best ceil(n / eta) values; ties go to the lower `order` (the trial number, so the
  decision is the same whichever worker makes it).
- Several objectives: NSGA-II's order. Non-dominated sorting gives each row a front (0 = the Pareto front);
  fronts are admitted whole while they fit, and the front that does not fit is cut by crowding distance
  (larger first: the spread of the front is kept; the boundary rows of each objective count as infinitely
  far), then by `order`.
- A row with a missing or non-finite value is never promoted (it counts towards n, as the rung trained it).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One candidate of a rung: `key` (what to promote), its objective values, and a tie-breaking `order`."""

    key: Hashable
    values: tuple[float | None, ...]
    order: int = 0


@dataclass(frozen=True)
class Promotion:
    """A promoted row and why, in words a trial record can keep (`promotion_reason`)."""

    key: Hashable
    reason: str


def quota(n: int, eta: int) -> int:
    """How many of `n` rows a rung promotes: ceil(n / eta), at least one when there is any row."""
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")
    return 0 if n <= 0 else -(-n // eta)


def promote(rows: Sequence[Row], directions: Sequence[str], eta: int, k: int | None = None) -> list[Promotion]:
    """The rows to promote, best first: `k` of them (default `quota(len(rows), eta)`), finite values only."""
    signs = [_sign(d) for d in directions]
    want = quota(len(rows), eta) if k is None else k
    valid = [r for r in rows if _finite(r.values, len(signs))]
    if want <= 0 or not valid:
        return []
    total = len(rows)
    if len(signs) == 1:
        ranked = sorted(valid, key=lambda r: (-signs[0] * float(r.values[0]), r.order))
        return [Promotion(r.key, f"top {want} of {total} by {directions[0]} (place {i + 1})")
                for i, r in enumerate(ranked[:want])]
    scores = {r.key: tuple(s * float(x) for s, x in zip(signs, r.values)) for r in valid}  # larger is better
    out: list[Promotion] = []
    for rank, front in enumerate(fronts(valid, scores)):
        if len(out) + len(front) <= want:
            out.extend(Promotion(r.key, f"front {rank} of {total} rows (top {want})") for r in
                       sorted(front, key=lambda r: r.order))
            if len(out) == want:
                break
            continue
        distance = crowding(front, scores)
        cut = sorted(front, key=lambda r: (-distance[r.key], r.order))[: want - len(out)]
        out.extend(Promotion(r.key, f"front {rank} of {total} rows, crowding distance "
                                    f"{_show(distance[r.key])} (top {want})") for r in cut)
        break
    return out


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """`a` is at least as good everywhere and better somewhere (larger is better)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def fronts(rows: Sequence[Row], scores: dict[Hashable, tuple[float, ...]]) -> list[list[Row]]:
    """Non-dominated sorting: front 0 is dominated by no row, front 1 only by rows of front 0, and so on."""
    left = list(rows)
    out: list[list[Row]] = []
    while left:
        front = [r for r in left if not any(dominates(scores[o.key], scores[r.key]) for o in left if o is not r)]
        out.append(front)
        left = [r for r in left if all(r is not f for f in front)]
    return out


def crowding(front: Sequence[Row], scores: dict[Hashable, tuple[float, ...]]) -> dict[Hashable, float]:
    """NSGA-II crowding distance within one front: the sum over objectives of the normalised gap between each
    row's neighbours; each objective's extreme rows get infinity (ties sorted by `order`, so it is stable;
    an objective on which every row is equal adds nothing)."""
    distance = {r.key: 0.0 for r in front}
    if len(front) <= 2:
        return {key: math.inf for key in distance}
    for m in range(len(next(iter(scores.values())))):
        ordered = sorted(front, key=lambda r: (scores[r.key][m], r.order))
        lo, hi = scores[ordered[0].key][m], scores[ordered[-1].key][m]
        if hi == lo:  # every row equal here: this objective tells them apart nowhere, so it adds nothing
            continue
        distance[ordered[0].key] = distance[ordered[-1].key] = math.inf
        for before, row, after in zip(ordered, ordered[1:], ordered[2:]):
            distance[row.key] += (scores[after.key][m] - scores[before.key][m]) / (hi - lo)
    return distance


def _sign(direction: str) -> float:
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    return 1.0 if direction == "maximize" else -1.0


def _finite(values: Sequence[float | None], n: int) -> bool:
    if len(values) != n:
        return False
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in values)


def _show(distance: float) -> str:
    return "inf" if math.isinf(distance) else f"{distance:.3g}"
