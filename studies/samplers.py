"""The Optuna sampler a study file names (`sampler: tpe | nsga2 | gp | random | grid`).

Grid cells are all queued up front, so a grid study only needs a sampler that is never asked: random.
"""

from __future__ import annotations

from typing import Any

import optuna


def make_sampler(cfg: dict[str, Any]) -> optuna.samplers.BaseSampler:
    """A seeded sampler from the study file's `sampler` section."""
    seed = cfg.get("seed", 0)
    name = cfg["name"]
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.get("n_startup_trials", 5))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=cfg.get("population_size", 8))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.get("n_startup_trials", 5))
    return optuna.samplers.RandomSampler(seed=seed)
