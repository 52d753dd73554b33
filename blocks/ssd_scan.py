"""Mamba-2's state-space duality (SSD) scan: a chunked PyTorch algorithm, its sequential reference, its cost.

With a scalar decay per head, the recurrence

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T       (h: (headdim, d_state) per head)
    y_t = h_t C_t + D * x_t

equals a masked (semiseparable) matrix acting on the sequence. `ssd_chunked` cuts the sequence into chunks of
at most `chunk` tokens and computes (Dao & Gu, 2024, section 6):

1. inside each chunk, the quadratic form: y = (L o C B^T) (dt*x), with L[l, s] = exp(sum_{s<r<=l} dt_r A);
2. each chunk's final state from its own tokens: S_k = (dt*x)^T (w o B), w_s = exp(sum_{s<r<=Q} dt_r A);
3. the states passed between chunks: H_{k+1} = exp(sum over chunk k of dt A) H_k + S_k (a loop over chunks);
4. the carried state read out inside each chunk: y += exp(cumsum dt A) o (C H_k^T).

Every product is a `torch.matmul`, so `torch.utils.flop_counter.FlopCounterMode` counts exactly `ssd_flops`;
autograd gives the backward. `ssd_sequential` is the token-by-token loop, the ground truth and the slow
reference of `python -m blocks.bench_mixers`. On CUDA, mamba-ssm's fused Triton kernel
(`mamba_chunk_scan_combined`) runs when it is installed; `ssd_path` names what runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

_KERNEL: Optional[Callable] = None
_KERNEL_CHECKED = False


def _mamba_kernel() -> Optional[Callable]:
    """mamba-ssm's fused SSD kernel, or None when mamba-ssm (or Triton) is not importable here."""
    global _KERNEL, _KERNEL_CHECKED
    if not _KERNEL_CHECKED:
        _KERNEL_CHECKED = True
        try:
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        except Exception:  # noqa: BLE001 - ImportError, OSError, Triton/CUDA set-up errors alike
            mamba_chunk_scan_combined = None
        _KERNEL = mamba_chunk_scan_combined
    return _KERNEL


def ssd_path(device: torch.device | str) -> str:
    """What `ssd` runs on `device`: "mamba_ssm" (the fused CUDA kernel), "chunked" (PyTorch matmuls, the CPU
    path), or on CUDA without mamba-ssm "chunked (fallback: mamba-ssm not installed)", a slower path."""
    device = torch.device(device)
    if device.type != "cuda":
        return "chunked"
    return "mamba_ssm" if _mamba_kernel() is not None else "chunked (fallback: mamba-ssm not installed)"


SSD_BACKENDS = ("auto", "chunked", "sequential")


def resolve_ssd_path(backend: str, device: torch.device | str) -> str:
    """What `ssd(..., backend=backend)` runs on `device`: `ssd_path` for "auto", else the path asked for;
    "sequential" is the token-by-token reference, named as a slow path so a record never hides it."""
    if backend not in SSD_BACKENDS:
        raise ValueError(f"SSD backend {backend!r} is not one of {', '.join(SSD_BACKENDS)}")
    if backend == "auto":
        return ssd_path(device)
    return "sequential (slow: the token-by-token reference)" if backend == "sequential" else "chunked"


def is_slow_path(path: str) -> bool:
    """Whether an `ssd_path` / `resolve_ssd_path` answer is a slower path than this device's best."""
    return "fallback" in path or "slow" in path


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def chunking(length: int, chunk: int) -> tuple[int, int]:
    """(chunk length q, number of chunks c): the fewest chunks of at most `chunk` tokens, balanced so the
    padding is under one token per chunk (196 tokens at chunk 64: 4 chunks of 49, not 4 of 64)."""
    c = math.ceil(length / max(1, min(chunk, length)))
    return math.ceil(length / c), c


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> Tensor:
    """y (batch, L, heads, headdim) of the recurrence without the D skip, chunk by chunk.

    x: (batch, L, heads, headdim); dt: (batch, L, heads), already positive; A: (heads,), negative;
    B, C: (batch, L, d_state), shared by all heads (one group). Chunks come from `chunking`; a ragged
    tail is zero-padded (dt = 0 there, which neither decays nor feeds the state) and cut off.
    """
    out_dtype = x.dtype
    dtype = _compute_dtype(x, dt, A, B, C)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    b, length, h, p = x.shape
    n = B.shape[-1]
    q, c = chunking(length, chunk)
    pad = c * q - length
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))
    a_cum = (dt * A).view(b, c, q, h).permute(0, 3, 1, 2).cumsum(-1)  # (b, h, c, q)
    xdt = (x * dt.unsqueeze(-1)).view(b, c, q, h, p).permute(0, 3, 1, 2, 4)  # (b, h, c, q, p)
    Bc = B.view(b, c, q, n)
    Cc = C.view(b, c, q, n)

    # 1. inside each chunk: (L o C B^T) (dt x)
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    segment = (a_cum.unsqueeze(-1) - a_cum.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
    scores = torch.matmul(Cc, Bc.transpose(-1, -2)).unsqueeze(1) * torch.exp(segment)  # (b, h, c, q, q)
    y = torch.matmul(scores, xdt)
    if c > 1:
        # 2. each chunk's own final state (the last chunk's is never read)
        to_end = torch.exp(a_cum[:, :, :-1, -1:] - a_cum[:, :, :-1])  # (b, h, c-1, q)
        own = torch.matmul(xdt[:, :, :-1].transpose(-1, -2), to_end.unsqueeze(-1) * Bc[:, None, :-1])  # (b,h,c-1,p,n)
        # 3. pass states between chunks
        chunk_decay = torch.exp(a_cum[..., -1])  # (b, h, c)
        carried = [torch.zeros_like(own[:, :, 0])]
        for k in range(c - 1):
            carried.append(carried[-1] * chunk_decay[:, :, k, None, None] + own[:, :, k])
        state_in = torch.stack(carried[1:], dim=2)  # (b, h, c-1, p, n): the state entering chunks 1..c-1
        # 4. read the carried state out inside chunks 1..c-1
        y_off = torch.matmul(Cc[:, None, 1:], state_in.transpose(-1, -2)) * torch.exp(a_cum[:, :, 1:]).unsqueeze(-1)
        y = torch.cat([y[:, :, :1], y[:, :, 1:] + y_off], dim=2)
    y = y.permute(0, 2, 3, 1, 4).reshape(b, c * q, h, p)[:, :length]
    return y.to(out_dtype)


def ssd_sequential(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """The same recurrence token by token (no D skip); shapes as in `ssd_chunked`."""
    out_dtype = x.dtype
    dtype = _compute_dtype(x, dt, A, B, C)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    b, length, h, p = x.shape
    state = x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[..., None, None]  # (b, h, 1, 1)
        inject = (x[:, t] * dt[:, t, :, None]).unsqueeze(-1) * B[:, t, None, None, :]
        state = state * decay + inject
        ys.append((state * C[:, t, None, None, :]).sum(-1))
    return torch.stack(ys, dim=1).to(out_dtype)


def ssd_flops(batch: int, length: int, heads: int, headdim: int, state: int, chunk: int) -> int:
    """FLOPs (2 per multiply-add) of the matmuls in `ssd_chunked`, on its chunks (`chunking`), padding included.

    C B^T per chunk (shared by the heads), the masked scores times dt*x, and, with more than one chunk, the
    chunk states and their read-out for every chunk but one. Elementwise work (exp, masks, the D skip and
    the state passing between chunks) is not counted, as FlopCounterMode counts no elementwise op.
    """
    q, c = chunking(length, chunk)
    macs = batch * c * q * q * state + batch * heads * c * q * q * headdim
    macs += 2 * batch * heads * (c - 1) * q * headdim * state
    return 2 * macs


def ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    dt_bias: Tensor,
    chunk: int,
    backend: str = "auto",
) -> Tensor:
    """y = SSD(x, softplus(dt + dt_bias), A, B, C) + D x, on mamba-ssm's kernel or the chunked path.

    `backend`: "auto" (the kernel on CUDA when installed and no FLOP counter is active, else chunked),
    "chunked" or "sequential".
    """
    if backend not in SSD_BACKENDS:
        raise ValueError(f"SSD backend {backend!r} is not one of {', '.join(SSD_BACKENDS)}")
    if backend == "auto" and ssd_path(x.device) == "mamba_ssm" and not _counting():
        kernel = _mamba_kernel()
        return kernel(x, dt, A, B.unsqueeze(2), C.unsqueeze(2), chunk, D=D, dt_bias=dt_bias, dt_softplus=True)
    dt = F.softplus(dt + dt_bias)
    core = ssd_sequential(x, dt, A, B, C) if backend == "sequential" else ssd_chunked(x, dt, A, B, C, chunk)
    return core + x * D[:, None].to(x.dtype)


def _counting() -> bool:
    from blocks.scan.counting import flop_counter_active

    return flop_counter_active()


__all__ = [
    "SSD_BACKENDS", "chunking", "is_slow_path", "resolve_ssd_path", "ssd", "ssd_chunked", "ssd_flops", "ssd_path",
    "ssd_sequential",
]
