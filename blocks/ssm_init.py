"""Mamba's initialisation of the time step: shared by every selective-scan block (M, V, S, Md, H).

dt is drawn log-uniformly in [dt_min, dt_max], floored, and stored as its inverse softplus, so that
softplus(bias) starts at dt (Gu and Dao, Mamba, section 3.6 and the reference `Mamba.__init__`).
"""

from __future__ import annotations

import math

import torch


def dt_bias(shape: int | tuple[int, ...], dt_min: float = 0.001, dt_max: float = 0.1, floor: float = 1e-4,
            device: torch.device | str | None = None) -> torch.Tensor:
    """The inverse softplus of dt ~ log-uniform(dt_min, dt_max), clamped at `floor`; one `torch.rand` draw."""
    dt = torch.exp(torch.rand(shape, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse softplus
