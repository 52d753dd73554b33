"""`Md`: the Mamba-2 mixer (state-space duality), parameter names and shapes of mamba-ssm's `Mamba2`.

One group (ngroups=1) of B and C shared by all heads, a scalar A per head, the gated RMSNorm before the
out-projection (norm_before_gate=False), a causal depthwise conv1d over x, B and C, no projection biases:
the `Mamba2` defaults, except d_state 64 and chunk 64 (a chunk near the window's length suits CPUs; the
scan cuts the sequence into balanced chunks of at most `chunk` tokens). The scan is `blocks.ssd_scan.ssd`:
mamba-ssm's fused kernel on CUDA when installed, else the chunked PyTorch algorithm (counted by
FlopCounterMode); on CUDA without mamba-ssm that is a slower path, and `ssd_path` says so (`show` and the
measurement record's env carry it).
The conv is causal as in Mamba-2, so within a window a token sees only the tokens before it in raster order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blocks.ssd_scan import resolve_ssd_path, ssd
from blocks.ssm_init import dt_bias as init_dt_bias
from hybridlab.errors import ConfigError


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * silu(z)) * weight, mamba-ssm's `RMSNormGated` with norm_before_gate=False, one group."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y * F.silu(z)
        return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mamba2Mixer(nn.Module):
    """in_proj -> [z | x B C | dt]; causal conv1d + SiLU on xBC; SSD over heads; gated RMSNorm; out_proj.

    Shapes (d_inner = expand*dim, nheads = d_inner/headdim): in_proj (2*d_inner + 2*d_state + nheads, dim),
    conv1d (d_inner + 2*d_state, 1, d_conv) with bias, dt_bias/A_log/D (nheads,), norm.weight (d_inner,),
    out_proj (dim, d_inner).
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        chunk: int = 64,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.d_model = dim
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * dim)
        if self.d_inner % headdim:
            raise ConfigError(
                f"inner width {self.d_inner} (expand*dim) is not a multiple of headdim {headdim}", "Md"
            )
        self.headdim = headdim
        self.nheads = self.d_inner // headdim
        self.chunk = chunk
        self.backend = backend
        self.in_proj = nn.Linear(dim, 2 * self.d_inner + 2 * d_state + self.nheads, bias=False)
        conv_dim = self.d_inner + 2 * d_state
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True)
        self.act = nn.SiLU()
        self.dt_bias = nn.Parameter(init_dt_bias(self.nheads, dt_min, dt_max, dt_init_floor))
        self.dt_bias._no_weight_decay = True
        A = torch.empty(self.nheads).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.D._no_weight_decay = True
        self.norm = GatedRMSNorm(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        b, length, _ = u.shape
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, self.d_inner + 2 * self.d_state, self.nheads], -1)
        # causal depthwise conv: left padding only, so FlopCounterMode sees exactly `length` outputs
        w = self.conv1d.weight
        xbc = F.conv1d(F.pad(xbc.transpose(1, 2), (self.d_conv - 1, 0)), w, self.conv1d.bias, groups=w.shape[0])
        xbc = self.act(xbc).transpose(1, 2)
        x, B, C = torch.split(xbc, [self.d_inner, self.d_state, self.d_state], dim=-1)
        A = -torch.exp(self.A_log if self.A_log.dtype == torch.float64 else self.A_log.float())
        y = ssd(
            x.reshape(b, length, self.nheads, self.headdim),
            dt,
            A,
            B,
            C,
            self.D,
            self.dt_bias,
            self.chunk,
            backend=self.backend,
        )
        y = self.norm(y.reshape(b, length, self.d_inner), z)
        return self.out_proj(y)

    def ssd_path(self, device: torch.device | str) -> str:
        """The SSD implementation this mixer runs on `device` (measurement records carry it)."""
        return resolve_ssd_path(self.backend, device)

    def extra_repr(self) -> str:
        return (
            f"dim={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"headdim={self.headdim}, nheads={self.nheads}, chunk={self.chunk}"
        )


__all__ = ["GatedRMSNorm", "Mamba2Mixer"]
