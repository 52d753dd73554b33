"""Scoring supernet layouts: calibration and validation batches, exhaustive or evolutionary search, the
predicted front, and the throughput prediction adapter.

Every scored layout gets its top-1 and validation loss with inherited weights (`blocks.supernet_eval`, the
final norm recalibrated per layout on `calib_batches` training batches first), its parameter count, and,
when the study optimises throughput, a predicted throughput (`predict_throughput`). Up to `MAX_EXHAUSTIVE`
layouts are all scored, sharing prefixes; larger spaces run a seeded evolutionary search (non-dominated
selection, one-point crossover, per-position mutation) that scores only the layouts it visits.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blocks.supernet import SuperNet
from blocks.supernet_eval import calibrate_norm, score_paths
from hybridlab.errors import HybridlabError

Layout = tuple[int, ...]
Predictor = Callable[..., dict[str, float]]


def calibration_batches(datamodule: Any, n: int) -> list[torch.Tensor]:
    """The first `n` training batches (images only), for recalibrating the final norm per layout."""
    datamodule.setup("fit")
    return [batch[0] for batch in itertools.islice(datamodule.train_dataloader(), n)]


def scoring_batches(datamodule: Any, images: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Validation batches holding the first `images` images (None: all of them)."""
    datamodule.setup("fit")
    out, seen = [], 0
    for x, y, *_ in datamodule.val_dataloader():
        if images is not None and seen + len(y) > images:
            x, y = x[: images - seen], y[: images - seen]
        if len(y):
            out.append((x, y))
        seen += len(y)
        if images is not None and seen >= images:
            break
    return out


def score_layouts(net: SuperNet, paths: Sequence[Layout], calib: list[torch.Tensor],
                  batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[Layout, dict[str, float]]:
    """`{path: {top1, val_loss, params}}` with inherited weights (final norm recalibrated when `calib` is given)."""
    stats = calibrate_norm(net, calib, paths) if calib else None
    scores = score_paths(net, batches, paths, stats)
    return {p: {"top1": s.top1, "val_loss": s.loss, "params": net.path_params(p)} for p, s in scores.items()}


def predict_throughput(config: Any, layout: Any, patterns: Sequence[str], folder: Path,
                       echo: Callable[[str], None] = print) -> dict[str, float]:
    """Predicted inference img/s per pattern from a latency table of the supernet's parts (built once per
    study under `folder`, at the study's measurement profile). The one place the prediction is wired in."""
    try:
        from hybridlab.measure.latency_table import LatencyTable
    except ImportError:
        raise HybridlabError("predicting throughput per layout needs hybridlab.measure.latency_table, which this "
                             "installation lacks; drop throughput_img_s from the objectives") from None
    path = folder / "latency_table.json"
    if path.is_file():
        table = LatencyTable.load(path)
    else:
        echo(f"[supernet] timing each choice at each of {len(layout.positions)} positions for the latency table")
        profile = {k: v for k, v in config.measure.items() if k != "phase"}
        table = LatencyTable.measure(layout.base, positions=list(layout.positions), choices=list(layout.choices),
                                     profile=profile, calibrate_on=list(patterns[:3]))
        table.save(path)
    return {p: float(table.predict(p).img_s) for p in patterns}


def objective_matrix(rows: Sequence[dict[str, Any]], objectives: Sequence[Any]) -> np.ndarray:
    """Rows x objectives, each column signed so that larger is better."""
    return np.array([[(1.0 if o.direction == "maximize" else -1.0) * float(r[o.name]) for o in objectives]
                     for r in rows], dtype=float).reshape(len(rows), len(objectives))


def front_ranks(values: np.ndarray) -> np.ndarray:
    """Non-dominated rank of every row (0 = the front), larger-is-better columns; NaN rows rank last."""
    n = len(values)
    ranks = np.full(n, n, dtype=int)
    finite = np.isfinite(values).all(axis=1)
    left = np.flatnonzero(finite)
    rank = 0
    while len(left):
        sub = values[left]
        ge = (sub[:, None, :] >= sub[None, :, :]).all(axis=2)
        gt = (sub[:, None, :] > sub[None, :, :]).any(axis=2)
        dominated = (ge & gt).any(axis=0)
        ranks[left[~dominated]] = rank
        left = left[dominated]
        rank += 1
    return ranks


def crowding(values: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance within one front (boundary rows infinite)."""
    n, m = values.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(values[:, j], kind="stable")
        span = values[order[-1], j] - values[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (values[order[2:], j] - values[order[:-2], j]) / span
    return dist


def top_of_front(rows: Sequence[dict[str, Any]], objectives: Sequence[Any], k: int) -> list[int]:
    """Indices of the best `k` rows: by non-dominated rank, then crowding distance (spread along the front),
    then row order; with one objective simply the best `k` values."""
    if k <= 0 or not rows:
        return []
    values = objective_matrix(rows, objectives)
    ranks = front_ranks(values)
    spread = np.zeros(len(rows))
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        spread[members] = crowding(values[members])
    order = sorted(range(len(rows)), key=lambda i: (ranks[i], -spread[i], -values[i].sum(), i))
    return order[:k]


def evolve(evaluate: Callable[[list[Layout]], list[dict[str, Any]]], objectives: Sequence[Any], positions: int,
           choices: int, population: int, generations: int, seed: int) -> dict[Layout, dict[str, Any]]:
    """A seeded evolutionary search; `evaluate(paths)` scores new layouts (rows with the objectives' values).
    Returns every visited layout's row."""
    rng = random.Random(seed)
    seen: dict[Layout, dict[str, Any]] = {}

    def add(paths: Iterable[Layout]) -> None:
        new = [p for p in dict.fromkeys(paths) if p not in seen]
        if new:
            seen.update(zip(new, evaluate(new), strict=True))

    add(tuple(rng.randrange(choices) for _ in range(positions)) for _ in range(population))
    parents = list(seen)
    for _ in range(generations):
        children = []
        for _ in range(population * 4):
            if len(children) >= population:
                break
            a, b = rng.choice(parents), rng.choice(parents)
            cut = rng.randrange(1, positions) if positions > 1 else 0
            child = list(a[:cut] + b[cut:])
            for i in range(positions):
                if rng.random() < 1.0 / positions:
                    child[i] = rng.randrange(choices)
            if tuple(child) not in seen:
                children.append(tuple(child))
        add(children)
        pool = list(dict.fromkeys([*parents, *children]))
        best = top_of_front([seen[p] for p in pool], objectives, population)
        parents = [pool[i] for i in best]
    return seen


__all__ = ["calibration_batches", "crowding", "evolve", "front_ranks", "objective_matrix", "predict_throughput",
           "score_layouts", "scoring_batches", "top_of_front"]
