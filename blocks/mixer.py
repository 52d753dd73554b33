"""`M`: the MambaVision mixer (official `MambaVisionMixer`) plus the paper's Table 4 variants.

Defaults reproduce the official module exactly, names and quirks included, so official weights give
official outputs: dt_rank = ceil(dim/16) (from dim, not from the branch width); depthwise conv1d
layers without bias (the official `conv_bias//2 == 0`); the dt bias applied twice (once by
`dt_proj`, again as `delta_bias` with softplus); the SSM output concatenated with the symmetric branch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.scan import selective_scan
from blocks.ssm_init import dt_bias as init_dt_bias
from hybridlab.errors import ConfigError

try:  # optional CUDA kernel; plain F.conv1d is used without it (and always on CPU)
    from causal_conv1d import causal_conv1d_fn
except (ImportError, OSError):  # pragma: no cover - depends on the environment
    causal_conv1d_fn = None

CONV_MODES = ("regular", "causal")
BRANCHES = ("concat", "gate", "none")


class MambaVisionMixer(nn.Module):
    """Token mixer on (B, L, dim): in_proj -> [SSM branch | symmetric branch] -> out_proj.

    With d_inner = expand * dim and h = d_inner // 2:

    - ``branch="concat"`` (official): in_proj gives x (h) and z (h); x -> conv1d_x -> SiLU -> selective
      scan; z -> conv1d_z -> SiLU; out_proj(cat[y, z]) maps d_inner -> dim.
    - ``branch="gate"`` (Table 4 row 3, "w/o concat, Mamba gating kept"): the same in_proj, the same
      SSM branch at width h and the same symmetric branch (conv2 kept), but the symmetric branch gates
      the SSM output instead of being concatenated: y * silu(conv1d_z(z)), as Mamba does with z. So
      out_proj maps h -> dim; the mixer has h*dim fewer weights than concat (-24% of the mixer,
      about -5% of a whole block with mlp_ratio 4 at dim 320) and every other tensor is identical.
    - ``branch="none"`` (Table 4 rows 1-2, "w/o conv2"): no symmetric branch at all; the SSM branch
      takes the full inner width d_inner (x_proj, dt_proj, A_log, D, conv1d_x on d_inner channels)
      so in_proj/out_proj keep their official dim x d_inner shapes; the mixer is slightly larger
      (+5% of the mixer, +1% of a block at dim 320) because the small SSM tensors double.

    ``conv="causal"`` makes the SSM-branch conv (conv1d_x, the paper's "conv1") left-padded and
    causal; ``regular`` is the official symmetric 'same' padding, which sees one future token.
    The symmetric branch's conv1d_z keeps 'same' padding in both modes, so only branch="none" with
    conv="causal" gives a mixer whose output at t ignores every input after t.

    `A_log` and `D` carry `_no_weight_decay = True` like the official code (timm's optimizer factory
    does not read the flag; see `HybridNet.no_weight_decay_keywords`).
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 8,
        d_conv: int = 3,
        expand: int = 1,
        conv: str = "regular",
        branch: str = "concat",
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        if conv not in CONV_MODES:
            raise ConfigError(f"conv={conv!r} is not one of {', '.join(CONV_MODES)}", "M")
        if branch not in BRANCHES:
            raise ConfigError(f"branch={branch!r} is not one of {', '.join(BRANCHES)}", "M")
        self.d_model = dim
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.conv = conv
        self.branch = branch
        self.scan_backend = scan_backend
        self.d_inner = int(expand * dim)
        self.dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        if branch == "none":
            self.d_ssm = self.d_inner
        else:
            if self.d_inner % 2:
                raise ConfigError(
                    f"inner width {self.d_inner} (expand*dim) must be even to split into two branches "
                    f"(branch={branch})",
                    "M",
                )
            self.d_ssm = self.d_inner // 2
        d_ssm = self.d_ssm

        self.in_proj = nn.Linear(dim, self.d_inner, bias=False)
        self.x_proj = nn.Linear(d_ssm, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_ssm, bias=True)
        self._init_dt(dt_init, dt_scale, dt_min, dt_max, dt_init_floor)
        device = self.dt_proj.weight.device
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(d_ssm, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(d_ssm, device=device))
        self.D._no_weight_decay = True
        out_width = self.d_inner if branch == "concat" else d_ssm
        self.out_proj = nn.Linear(out_width, dim, bias=False)
        self.conv1d_x = nn.Conv1d(d_ssm, d_ssm, kernel_size=d_conv, groups=d_ssm, bias=False)
        if branch != "none":
            self.conv1d_z = nn.Conv1d(d_ssm, d_ssm, kernel_size=d_conv, groups=d_ssm, bias=False)

    def _init_dt(self, dt_init: str, dt_scale: float, dt_min: float, dt_max: float, floor: float) -> None:
        """Mamba's dt init (the model-level init later overwrites it, exactly as officially)."""
        std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ConfigError(f"dt_init={dt_init!r} is not one of constant, random", "M")
        bias = self.dt_proj.bias
        with torch.no_grad():
            bias.copy_(init_dt_bias(bias.shape, dt_min, dt_max, floor, device=bias.device))
        bias._no_reinit = True

    def _conv_x(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(conv1d_x(x)) on (B, D, L), 'same' (official) or causal (left padding only)."""
        weight = self.conv1d_x.weight
        if self.conv == "regular":
            return F.silu(_same_conv(x, weight))
        k = self.d_conv
        if causal_conv1d_fn is not None and x.is_cuda and 2 <= k <= 4:
            return causal_conv1d_fn(x.contiguous(), weight.squeeze(1).to(x.dtype), None, activation="silu")
        return F.silu(F.conv1d(F.pad(x, (k - 1, 0)), weight, None, groups=self.d_ssm))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        b, seqlen, _ = hidden_states.shape
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, d_inner, L)
        if self.branch == "none":
            x, z = xz, None
        else:
            x, z = xz.chunk(2, dim=1)
        A = -torch.exp(self.A_log.float())
        x = self._conv_x(x)
        if z is not None:
            z = _same_conv(z, self.conv1d_z.weight)
        x_dbl = self.x_proj(x.transpose(1, 2).reshape(b * seqlen, self.d_ssm))
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = self.dt_proj(dt).view(b, seqlen, self.d_ssm).transpose(1, 2)  # bias added here ...
        B = B.view(b, seqlen, self.d_state).transpose(1, 2).contiguous()
        C = C.view(b, seqlen, self.d_state).transpose(1, 2).contiguous()
        y = selective_scan(
            x,
            dt,
            A,
            B,
            C,
            self.D.float(),
            z=z if self.branch == "gate" else None,  # the scan computes y * silu(z)
            delta_bias=self.dt_proj.bias.float(),  # ... and again here (official quirk)
            delta_softplus=True,
            return_last_state=False,
            backend=self.scan_backend,
        )
        if self.branch == "concat":
            y = torch.cat([y, F.silu(z)], dim=1)
        return self.out_proj(y.transpose(1, 2))

    def extra_repr(self) -> str:
        return (
            f"dim={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"conv={self.conv}, branch={self.branch}, dt_rank={self.dt_rank}"
        )


def _same_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise conv1d with 'same' padding (official); even kernels pad one more on the right, as torch does."""
    k = weight.shape[-1]
    if k % 2:
        return F.conv1d(x, weight, None, padding="same", groups=weight.shape[0])
    return F.conv1d(F.pad(x, ((k - 1) // 2, k // 2)), weight, None, groups=weight.shape[0])


__all__ = ["MambaVisionMixer"]
