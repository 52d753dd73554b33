"""`S`: VMamba's 2-D selective scan (SS2D, MzeroMiko/VMamba), names and shapes as there.

On the window's map (its tokens in raster order, reshaped to side x side):
in_proj -> x, z; x -> depthwise conv2d (with bias) -> SiLU; cross-scan into K=4 sequences (row-major,
column-major, and both reversed); each direction has its own x_proj (stacked as `x_proj_weight`, (K, r+2N,
d_inner)) and dt projection (`dt_projs_weight` (K, d_inner, r), `dt_projs_bias` (K, d_inner)), and its own
A and D (`A_logs` (K*d_inner, N), `Ds` (K*d_inner)); ONE selective scan runs over the K*d_inner channels with
B/C grouped per direction ((batch, K, N, L)); cross-merge (each sequence put back in raster order and
summed); out_norm (LayerNorm); gate y * silu(z); out_proj. This is SS2D's v0/v2 forward, so VMamba's SS2D
weights load as they are. Defaults are SS2D's: d_state 16, ssm_ratio 2.0, d_conv 3, dt_rank ceil(dim/16).
Under FlopCounterMode the scan counts ``scan_flops(batch, 4 * d_inner, L, d_state)``: four directions.
The stacked x/dt projections are matmuls on parameters, not nn.Linear calls, so `extra_macs` reports their
MACs to the hook-based MAC counter (`hybridlab.measure.flops`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.scan import selective_scan
from blocks.ssm_init import dt_bias as init_dt_bias
from hybridlab.errors import ConfigError

K = 4  # scan directions


class SS2D(nn.Module):
    """Token mixer on (B, side*side, dim), the window's map in raster order; `d_conv` 1 means no conv2d."""

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        d_conv: int = 3,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        if d_inner < 1:
            raise ConfigError(f"ssm_ratio={ssm_ratio} gives no inner width at dim {dim}", "S")
        if d_conv > 1 and d_conv % 2 == 0:
            raise ConfigError(f"d_conv={d_conv} must be odd (the conv2d keeps the map's size) or 1 (no conv)", "S")
        if dt_init not in ("constant", "random"):
            raise ConfigError(f"dt_init={dt_init!r} is not one of constant, random", "S")
        self.d_model = dim
        self.d_state = d_state
        self.ssm_ratio = ssm_ratio
        self.d_conv = d_conv
        self.d_inner = d_inner
        self.dt_rank = math.ceil(dim / 16) if dt_rank in ("auto", 0) else int(dt_rank)
        self.scan_backend = scan_backend
        r = self.dt_rank

        # registration order = VMamba's SS2D (v2), so state_dict keys come out in its order
        self.out_norm = nn.LayerNorm(d_inner)
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        if d_conv > 1:
            self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=True)
        bound = d_inner**-0.5  # nn.Linear's default init, as VMamba stacks K freshly made Linears
        self.x_proj_weight = nn.Parameter(torch.empty(K, r + 2 * d_state, d_inner).uniform_(-bound, bound))
        self.out_proj = nn.Linear(d_inner, dim, bias=False)
        self.dt_projs_weight, self.dt_projs_bias = _dt_init(
            r, d_inner, dt_init, dt_scale, dt_min, dt_max, dt_init_floor
        )
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(K * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))  # S4D-real init, one copy per direction
        self.A_logs._no_weight_decay = True
        self.Ds = nn.Parameter(torch.ones(K * d_inner))
        self.Ds._no_weight_decay = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        b, length, _ = hidden_states.shape
        side = math.isqrt(length)
        if side * side != length:
            raise ConfigError(f"needs a square window of tokens, got {length} tokens", "S")
        d, r, n = self.d_inner, self.dt_rank, self.d_state
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)  # (B, L, d) each
        x = x.transpose(1, 2).reshape(b, d, side, side)
        if self.d_conv > 1:
            x = self.conv2d(x)
        x = F.silu(x)
        xs = cross_scan(x)  # (B, K, d, L)
        # VMamba's einsums "bkdl,kcd->bkcl" and "bkrl,kdr->bkdl" as batched matmuls: the same sums, and
        # FlopCounterMode counts them even at dt_rank 1 (where einsum becomes an uncounted elementwise mul)
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (B, K, r + 2n, L)
        dts, Bs, Cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (B, K, d, L)
        ys = selective_scan(
            xs.reshape(b, K * d, length),
            dts.reshape(b, K * d, length),
            -torch.exp(_at_least_fp32(self.A_logs)),
            Bs.contiguous(),
            Cs.contiguous(),
            _at_least_fp32(self.Ds),
            delta_bias=_at_least_fp32(self.dt_projs_bias.reshape(-1)),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        y = cross_merge(ys.view(b, K, d, side, side))  # (B, d, L)
        y = self.out_norm(y.transpose(1, 2))  # (B, L, d)
        return self.out_proj(y * F.silu(z))

    def extra_macs(self, input_shape: tuple[int, ...]) -> int:
        """MACs of the K directions' x and dt projections on a (B, L, dim) input, which no Linear hook sees."""
        tokens = math.prod(input_shape[:-1])
        d, r, n = self.d_inner, self.dt_rank, self.d_state
        return tokens * K * (d * (r + 2 * n) + r * d)

    def extra_repr(self) -> str:
        return (
            f"dim={self.d_model}, d_state={self.d_state}, ssm_ratio={self.ssm_ratio}, d_conv={self.d_conv}, "
            f"d_inner={self.d_inner}, dt_rank={self.dt_rank}"
        )


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, d, H, W) -> (B, 4, d, H*W): row-major, column-major, and each of them reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor) -> torch.Tensor:
    """(B, 4, d, H, W) of per-direction outputs -> (B, d, H*W) in raster order: the adjoint of `cross_scan`."""
    b, _, d, h, w = ys.shape
    ys = ys.reshape(b, K, d, h * w)
    pair = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    return pair[:, 0] + pair[:, 1].reshape(b, d, w, h).transpose(2, 3).reshape(b, d, h * w)


def _dt_init(
    rank: int, d_inner: int, dt_init: str, scale: float, dt_min: float, dt_max: float, floor: float
) -> tuple[nn.Parameter, nn.Parameter]:
    """Mamba's dt projection init for each direction: (K, d_inner, rank) weight, (K, d_inner) bias."""
    std = rank**-0.5 * scale
    if dt_init == "constant":
        weight = torch.full((K, d_inner, rank), std)
    else:
        weight = torch.empty(K, d_inner, rank).uniform_(-std, std)
    bias = init_dt_bias((K, d_inner), dt_min, dt_max, floor)
    return nn.Parameter(weight), nn.Parameter(bias)


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """VMamba's `.to(torch.float)` on A, D and the dt bias, without rounding a float64 model."""
    return t if t.dtype == torch.float64 else t.float()


__all__ = ["SS2D", "cross_merge", "cross_scan"]
