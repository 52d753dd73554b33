"""`H`: a parallel hybrid head, attention and a selective scan side by side on the same input.

As in Hymba (Dong et al., 2024) and Falcon-H1 (2025): the block's normalised input feeds both branches at
once; each branch's output is normalised (RMSNorm) and scaled by a learnable per-channel vector (Hymba's
beta_1, beta_2), and one out-projection mixes them. The width is split as in Falcon-H1: `attn_ratio` of the
channels are attention heads (num_heads of them, so num_heads must divide that share) and the rest form
the SSM branch, whose outputs are concatenated with the attention heads before the out-projection.

The SSM branch is Mamba's selective scan with its gate (in-projection to x and z, depthwise conv1d + SiLU,
x_proj to dt/B/C, y * silu(z)) on `blocks.scan.selective_scan`, so it runs on the fast CPU scan and is
counted by the FLOP counter; its conv uses MambaVision's non-causal 'same' padding. Its dt projection is
applied as a matmul on `dt_proj.weight` (the bias goes into the scan), so `extra_macs` reports those MACs
to the hook-based MAC counter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.scan import selective_scan
from blocks.ssm_init import dt_bias as init_dt_bias
from hybridlab.errors import ConfigError


def split_width(dim: int, attn_ratio: float, num_heads: int) -> tuple[int, int]:
    """(attention channels, SSM channels) for `dim`; a one-line ConfigError when the split does not work."""
    d_attn = round(attn_ratio * dim)
    if d_attn <= 0 or d_attn >= dim:
        raise ConfigError(f"attn_ratio={attn_ratio} leaves no channels for one branch at dim {dim}", "H")
    if d_attn % num_heads:
        raise ConfigError(
            f"attn_ratio={attn_ratio} gives {d_attn} attention channels at dim {dim}, "
            f"not divisible by num_heads {num_heads}",
            "H",
        )
    return d_attn, dim - d_attn


class ParallelHybridHead(nn.Module):
    """out_proj(cat[beta_attn * rms(attention(x)), beta_ssm * rms(scan(x))]) on (B, L, dim)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        attn_ratio: float = 0.5,
        d_state: int = 8,
        d_conv: int = 3,
        qkv_bias: bool = True,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.d_attn, self.d_ssm = split_width(dim, attn_ratio, num_heads)
        self.num_heads = num_heads
        self.head_dim = self.d_attn // num_heads
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16)
        self.scan_backend = scan_backend
        # attention branch
        self.qkv = nn.Linear(dim, 3 * self.d_attn, bias=qkv_bias)
        # SSM branch (Mamba names)
        d = self.d_ssm
        self.in_proj = nn.Linear(dim, 2 * d, bias=False)
        self.conv1d = nn.Conv1d(d, d, d_conv, groups=d, padding=d_conv // 2, bias=True)
        self.x_proj = nn.Linear(d, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d, bias=True)
        self.dt_proj._keep_init = True  # HybridNet's official init keeps Mamba's dt init for this branch
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(init_dt_bias(d, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d, 1)))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(d))
        self.D._no_weight_decay = True
        # fusion: per-branch norm and per-channel scale, one out-projection
        self.norm_attn = nn.RMSNorm(self.d_attn, eps=1e-6, elementwise_affine=False)
        self.norm_ssm = nn.RMSNorm(d, eps=1e-6, elementwise_affine=False)
        self.beta_attn = nn.Parameter(torch.ones(self.d_attn))
        self.beta_ssm = nn.Parameter(torch.ones(d))
        self.out_proj = nn.Linear(dim, dim)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, self.d_attn)

    def _ssm(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, d, L) each
        u = F.silu(self.conv1d(u)[..., :n])
        dt, B, C = torch.split(self.x_proj(u.transpose(1, 2)), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.T).transpose(1, 2)  # bias goes in as delta_bias, as Mamba does
        A = -torch.exp(self.A_log if self.A_log.dtype == torch.float64 else self.A_log.float())
        y = selective_scan(
            u,
            dt,
            A,
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            self.D,
            z=z.contiguous(),
            delta_bias=self.dt_proj.bias,
            delta_softplus=True,
            backend=self.scan_backend,
        )
        return y.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.beta_attn * self.norm_attn(self._attention(x))
        ssm = self.beta_ssm * self.norm_ssm(self._ssm(x))
        return self.out_proj(torch.cat([attn, ssm], dim=-1))

    def extra_macs(self, input_shape: tuple[int, ...]) -> int:
        """MACs of the dt projection on a (B, L, dim) input: a matmul on `dt_proj.weight`, not a Linear call."""
        return math.prod(input_shape[:-1]) * self.dt_rank * self.d_ssm

    def extra_repr(self) -> str:
        return f"d_attn={self.d_attn}, heads={self.num_heads}, d_ssm={self.d_ssm}, d_state={self.d_state}"


__all__ = ["ParallelHybridHead", "split_width"]
