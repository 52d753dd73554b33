"""`V`: Vim's bidirectional Mamba mixer ("bimamba v2", hustvl/Vim), names and shapes as there.

One in_proj and one out_proj are shared by a forward and a backward selective scan over the window's
tokens (raster order, and that order reversed). Each direction has its own causal depthwise conv1d (with
bias), x_proj, dt_proj, A_log and D: the backward ones are `conv1d_b`, `x_proj_b`, `dt_proj_b`, `A_b_log`
and `D_b`, so Vim's weights load as they are. Each direction gates its own output with silu(z), z being
the in_proj's second half in that direction's order; the backward output is flipped back and the two are
summed, then halved when ``combine="average"``: Vim's released models ("..._div2", ``if_devide_out=True``)
average; its `Mamba` class default (``if_devide_out=False``) sums.

Both directions run as ONE selective scan: their channels are concatenated (2 * d_inner channels, the
backward half in reversed time) and B/C passed as two groups, one per direction, so the fast CPU scan
(or mamba-ssm's kernel on CUDA) is called once. Under FlopCounterMode that scan counts
``scan_flops(batch, 2 * d_inner, L, d_state, with_z=True)``, exactly the two directions' scans.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.scan import selective_scan
from blocks.ssm_init import dt_bias as init_dt_bias
from hybridlab.errors import ConfigError

COMBINE = ("average", "sum")


class BiMambaMixer(nn.Module):
    """Token mixer on (B, L, dim): in_proj -> forward and backward conv1d + SSM, gated by silu(z) -> out_proj.

    Defaults are Vim's: d_state 16, d_conv 4, expand 2, dt_rank ceil(dim/16), conv bias on, no linear bias.
    As in Vim, `dt_proj`'s bias is the scan's delta bias (added once, inside the softplus).
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        combine: str = "average",
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        if combine not in COMBINE:
            raise ConfigError(f"combine={combine!r} is not one of {', '.join(COMBINE)}", "V")
        if dt_init not in ("constant", "random"):
            raise ConfigError(f"dt_init={dt_init!r} is not one of constant, random", "V")
        self.d_model = dim
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.combine = combine
        self.scan_backend = scan_backend
        self.d_inner = int(expand * dim)
        self.dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        d_inner = self.d_inner
        init = (dt_init, dt_scale, dt_min, dt_max, dt_init_floor)

        # registration order = Vim's, so state_dict keys come out in its order
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv1d = self._conv()
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = self._dt_proj(*init)
        self.A_log = self._a_log()
        self.D = self._ones()
        self.A_b_log = self._a_log()
        self.conv1d_b = self._conv()
        self.x_proj_b = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj_b = self._dt_proj(*init)
        self.D_b = self._ones()
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def _conv(self) -> nn.Conv1d:
        """Depthwise conv1d as in Vim (padding d_conv-1, output cut to L: causal); applied functionally."""
        d = self.d_inner
        return nn.Conv1d(d, d, kernel_size=self.d_conv, groups=d, padding=self.d_conv - 1, bias=True)

    def _dt_proj(self, dt_init: str, dt_scale: float, dt_min: float, dt_max: float, floor: float) -> nn.Linear:
        """Mamba's dt projection init: uniform weight, bias = softplus^-1 of a log-uniform dt in [dt_min, dt_max]."""
        proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                proj.weight.fill_(std)
            else:
                proj.weight.uniform_(-std, std)
            proj.bias.copy_(init_dt_bias(proj.bias.shape, dt_min, dt_max, floor, device=proj.bias.device))
        proj.bias._no_reinit = True
        proj._keep_init = True  # HybridNet's official init keeps Vim's dt init (MambaVision's own M resets it)
        return proj

    def _a_log(self) -> nn.Parameter:
        """S4D-real init, A = -(1..N) per channel, kept as its log (no weight decay, as in Vim)."""
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        p = nn.Parameter(torch.log(a))
        p._no_weight_decay = True
        return p

    def _ones(self) -> nn.Parameter:
        p = nn.Parameter(torch.ones(self.d_inner))
        p._no_weight_decay = True
        return p

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        d, r, n = self.d_inner, self.dt_rank, self.d_state
        x, z = self.in_proj(hidden_states).split(d, dim=-1)  # (B, L, d) each
        # both directions side by side on the channel axis, each in its own time order
        xx = torch.cat([x, x.flip(1)], dim=-1).transpose(1, 2)  # (B, 2d, L)
        zz = torch.cat([z, z.flip(1)], dim=-1).transpose(1, 2)
        weight = torch.cat([self.conv1d.weight, self.conv1d_b.weight], dim=0)
        bias = torch.cat([self.conv1d.bias, self.conv1d_b.bias], dim=0)
        u = F.silu(F.conv1d(F.pad(xx, (self.d_conv - 1, 0)), weight, bias, groups=2 * d))  # causal, (B, 2d, L)
        ut = u.transpose(1, 2)  # (B, L, 2d) view
        dbl_f = self.x_proj(ut[..., :d])  # (B, L, r + 2n)
        dbl_b = self.x_proj_b(ut[..., d:])
        # dt_proj's bias is added here, once; the scan then applies softplus (Vim adds it as delta_bias)
        delta = torch.cat([self.dt_proj(dbl_f[..., :r]), self.dt_proj_b(dbl_b[..., :r])], dim=-1).transpose(1, 2)
        B = torch.stack([dbl_f[..., r : r + n], dbl_b[..., r : r + n]], dim=1).transpose(2, 3)  # (B, 2, n, L)
        C = torch.stack([dbl_f[..., r + n :], dbl_b[..., r + n :]], dim=1).transpose(2, 3)
        A = -torch.exp(_at_least_fp32(torch.cat([self.A_log, self.A_b_log], dim=0)))  # (2d, n)
        D = _at_least_fp32(torch.cat([self.D, self.D_b], dim=0))
        y = selective_scan(
            u, delta, A, B.contiguous(), C.contiguous(), D, z=zz, delta_softplus=True, backend=self.scan_backend
        )  # (B, 2d, L): (y + D u) * silu(z) per direction
        y = y[:, :d] + y[:, d:].flip(-1)
        if self.combine == "average":
            y = y / 2
        return self.out_proj(y.transpose(1, 2))

    def extra_repr(self) -> str:
        return (
            f"dim={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"combine={self.combine}, dt_rank={self.dt_rank}"
        )


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Vim's `.float()` on A and D, without rounding a float64 model (the scan then runs in float64)."""
    return t if t.dtype == torch.float64 else t.float()


__all__ = ["BiMambaMixer"]
