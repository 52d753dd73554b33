"""Which supernet path(s) one training step runs: uniform, fair or sandwich sampling.

- `uniform` (SPOS): one path per step, each position's choice drawn uniformly and independently.
- `fair` (after FairNAS's strict fairness): the choices of every position are permuted independently and
  the k = number-of-choices paths they give run on k consecutive steps, so after every k steps each
  choice of each position has been trained exactly as often as the others (one path per step, not the
  k-path gradient accumulation of FairNAS, which would cost k times a stand-alone step).
- `sandwich` (once-for-all / BigNAS): every step runs the largest path, the smallest path and `n_random`
  uniform ones, gradients accumulated; "largest" picks, per position, the choice with the most parameters.

Every sampler is seeded and its state is a plain dict, so a resumed run continues the same sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hybridlab.errors import ConfigError

SAMPLINGS = ("uniform", "fair", "sandwich")
Path = tuple[int, ...]


class PathSampler:
    """`next()` returns the paths of the next step; `state_dict()`/`load_state_dict()` for resume."""

    def __init__(self, kind: str, num_positions: int, num_choices: int, seed: int = 0,
                 choice_sizes: Sequence[Sequence[int]] | None = None, n_random: int = 1) -> None:
        if kind not in SAMPLINGS:
            raise ConfigError(f"unknown sampling {kind!r}; choose one of {', '.join(SAMPLINGS)}", "strategy.sampling")
        if kind == "sandwich" and choice_sizes is None:
            raise ConfigError("sandwich sampling needs the size of every choice at every position", "strategy.sampling")
        self.kind = kind
        self.n = int(num_positions)
        self.k = int(num_choices)
        self.seed = int(seed)
        self.n_random = int(n_random)
        self.steps = 0
        self._queue: list[Path] = []
        self.largest: Path | None = None
        self.smallest: Path | None = None
        if choice_sizes is not None:
            sizes = [list(s) for s in choice_sizes]
            self.largest = tuple(max(range(self.k), key=lambda c, s=s: (s[c], -c)) for s in sizes)
            self.smallest = tuple(min(range(self.k), key=lambda c, s=s: (s[c], c)) for s in sizes)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.steps)

    def next(self) -> list[Path]:
        g = self._generator()
        self.steps += 1
        if self.kind == "uniform":
            return [tuple(torch.randint(self.k, (self.n,), generator=g).tolist())]
        if self.kind == "fair":
            if not self._queue:
                perms = [torch.randperm(self.k, generator=g).tolist() for _ in range(self.n)]
                self._queue = [tuple(perms[i][j] for i in range(self.n)) for j in range(self.k)]
            return [self._queue.pop(0)]
        randoms = [tuple(torch.randint(self.k, (self.n,), generator=g).tolist()) for _ in range(self.n_random)]
        return [self.largest, self.smallest, *randoms]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "steps": self.steps, "queue": [list(p) for p in self._queue]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self._queue = [tuple(int(c) for c in p) for p in state.get("queue", [])]


__all__ = ["SAMPLINGS", "PathSampler"]
