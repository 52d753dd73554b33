"""Does successive halving find the grid's front for a fraction of its epochs?

Runs the built-in `quickstart_halving` study twice on the same data, seed and recipe: once as the full grid (every
placement and the baseline trained all `train.epochs`), once under its `strategy: halving` (eta 3, epochs 1/3/9).
Then compares the hypervolume of the two final fronts (top-1 up, throughput up; only full-budget rows, one shared
reference point: each objective's worst value over both studies, 10 % of the range further out) and the epochs each
spent (a promoted trial counts only the epochs it adds to its parent's). Goal of the halving design: hypervolume
within 5 % of the grid's at no more than 40 % of its epochs. Nothing is asserted: the figures are printed.

    python benchmarks/halving_vs_grid.py                          # train_subset 1000, val_subset 1000 (~25 min on 2 cores)
    python benchmarks/halving_vs_grid.py --train-subset 4000 --results /tmp/hvg

It also prints how well rung 0's ranking (1 epoch) predicts the grid's full-budget ranking (Kendall tau on top-1),
which is what halving bets on, and the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(raw: dict, results: Path) -> tuple[list, float]:
    from studies.config import load_study_config
    from studies.runner import RunOptions, run_study

    config = load_study_config(f"{raw['name']}.yaml", raw=raw)
    started = time.perf_counter()
    done = run_study(config, RunOptions(results_dir=results, progress=False, echo=lambda line: print(line, flush=True)))
    return done.study.get_trials(deepcopy=False), time.perf_counter() - started


def spent_epochs(trials: list) -> int:
    """Epochs trained: a promoted trial adds only its rung's epochs beyond its parent's."""
    by_number = {t.number: t for t in trials}
    total = 0
    for t in trials:
        if t.state.name != "COMPLETE" or "reused_from" in t.user_attrs:
            continue
        parent = by_number.get(t.user_attrs.get("promoted_from", -1))
        total += int(t.user_attrs.get("epochs", 0)) - (int(parent.user_attrs.get("epochs", 0)) if parent else 0)
    return total


def full_rows(trials: list) -> dict[str, tuple[float, float]]:
    """label -> (top1, throughput) of the full-budget trials."""
    return {t.user_attrs["label"]: (float(t.values[0]), float(t.values[1])) for t in trials
            if t.state.name == "COMPLETE" and t.user_attrs.get("fidelity_rank", 1000) == 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-subset", type=int, default=1000)
    parser.add_argument("--val-subset", type=int, default=1000)
    parser.add_argument("--results", type=Path, default=Path("/tmp/halving_vs_grid"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import numpy as np
    from scipy.stats import kendalltau

    from reports.hypervolume import hypervolume

    base = yaml.safe_load((ROOT / "studies" / "quickstart_halving.yaml").read_text())
    base["data"].update(train_subset=args.train_subset, val_subset=args.val_subset)
    grid = {k: v for k, v in base.items() if k != "strategy"}
    grid["name"] = "bench_grid"
    halving = dict(base, name="bench_halving")
    load_before = os.getloadavg()
    grid_trials, grid_s = run(grid, args.results)
    halving_trials, halving_s = run(halving, args.results)
    load_after = os.getloadavg()

    g, h = full_rows(grid_trials), full_rows(halving_trials)
    both = np.array([*g.values(), *h.values()])
    worst, span = both.min(axis=0), both.max(axis=0) - both.min(axis=0)
    reference = -(worst - 0.1 * np.where(span > 0, span, np.abs(worst) + 1))  # minimisation form
    hv_grid = hypervolume(-np.array(list(g.values())), reference)
    hv_halving = hypervolume(-np.array(list(h.values())), reference)
    e_grid, e_halving = spent_epochs(grid_trials), spent_epochs(halving_trials)
    rung0 = {t.user_attrs["label"]: float(t.values[0]) for t in halving_trials
             if t.state.name == "COMPLETE" and t.user_attrs.get("rung") == 0}
    common = sorted(set(rung0) & set(g))
    tau = kendalltau([rung0[k] for k in common], [g[k][0] for k in common])
    figures = {
        "train_subset": args.train_subset, "val_subset": args.val_subset,
        "grid": {"epochs": e_grid, "wall_s": round(grid_s), "hypervolume": hv_grid, "rows": g},
        "halving": {"epochs": e_halving, "wall_s": round(halving_s), "hypervolume": hv_halving, "rows": h},
        "epoch_share": e_halving / e_grid, "hypervolume_ratio": hv_halving / hv_grid if hv_grid else float("nan"),
        "reference_point": [-x for x in reference],
        "rung0_vs_grid_kendall_tau": float(tau.statistic), "rung0_vs_grid_p": float(tau.pvalue), "n_rows": len(common),
        "loadavg_before": load_before, "loadavg_after": load_after, "cpus": os.cpu_count(),
    }
    print(json.dumps(figures, indent=2))
    print(f"halving: {e_halving} of {e_grid} epochs ({100 * e_halving / e_grid:.0f} %), hypervolume "
          f"{hv_halving:.4g} vs grid {hv_grid:.4g} ({100 * figures['hypervolume_ratio']:.1f} %); wall {halving_s:.0f} s "
          f"vs {grid_s:.0f} s; rung-0 vs full top-1 Kendall tau {tau.statistic:.2f} over {len(common)} rows")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
