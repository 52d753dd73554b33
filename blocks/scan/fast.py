"""The `fast` backend: the chunked core of `blocks.scan.chunked` plus bias, softplus, D skip and z gating,
with one hand-written backward for all of it.

The whole backward is explicit (no autograd inside), so the same code also serves the FLOP-counting custom
op, whose implementation runs below autograd.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from blocks.scan._common import compute_dtype
from blocks.scan.chunked import scan_backward, scan_forward

Grads = tuple[Optional[Tensor], ...]


def fast_forward(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    need_saved: bool,
):
    """(out in u's dtype, last state in the compute dtype, state for `fast_backward` or None)."""
    dtype_in = u.dtype
    ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    uc, dr, Ac = u.to(ct), delta.to(ct), A.to(ct)
    Bc = B.to(ct) if B.dim() != 3 else B.to(ct).unsqueeze(1)
    Cc = C.to(ct) if C.dim() != 3 else C.to(ct).unsqueeze(1)
    if delta_bias is not None:
        dr = dr + delta_bias.to(ct)[:, None]
    dt = F.softplus(dr) if delta_softplus else dr
    y, last, core = scan_forward(uc, dt, Ac, Bc, Cc, need_saved)
    o1 = y if D is None else torch.addcmul(y, uc, D.to(ct)[:, None])
    out = o1 if z is None else o1 * F.silu(z.to(ct))
    state = None
    if need_saved:
        state = (core, uc, dr if delta_softplus else None, o1 if z is not None else None, ct, (u, delta, A, B, C, D, z, delta_bias))
    return out.to(dtype_in), last, state


def fast_backward(state, g_out: Optional[Tensor], g_last: Optional[Tensor]) -> Grads:
    """Gradients for (u, delta, A, B, C, D, z, delta_bias) in the inputs' dtypes (None where an input is None)."""
    core, uc, dr, o1, ct, inputs = state
    u, delta, A, B, C, D, z, delta_bias = inputs
    g = torch.zeros_like(uc) if g_out is None else g_out.to(ct)
    g_z = None
    if z is not None:
        zc = z.to(ct)
        sig = torch.sigmoid(zc)
        g_z = g * o1 * sig * (1 + zc * (1 - sig))  # d silu(z) = sig(z) (1 + z (1 - sig(z)))
        g = g * (zc * sig)
    g_D = None
    if D is not None:
        g_D = (g * uc).sum((0, 2))
    d_u, d_delta, d_A, d_B, d_C = scan_backward(core, g, g_last)
    if D is not None:
        d_u = d_u.addcmul_(g, D.to(ct)[:, None])
    if dr is not None:
        d_delta = d_delta.mul_(torch.sigmoid(dr))  # d softplus(x) = sigmoid(x)
    g_bias = None if delta_bias is None else d_delta.sum((0, 2))
    if B.dim() == 3:
        d_B = d_B.squeeze(1)
    if C.dim() == 3:
        d_C = d_C.squeeze(1)
    grads = (d_u, d_delta, d_A, d_B, d_C, g_D, g_z, g_bias)
    return tuple(None if gr is None else gr.to(x.dtype) for gr, x in zip(grads, inputs))


class _FastScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):  # type: ignore[override]
        need = any(ctx.needs_input_grad)
        out, last, state = fast_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, need)
        ctx.state = state
        if need:
            # keep autograd's in-place checks for the inputs the backward reads
            ctx.save_for_backward(*[t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None])
        return out, last

    @staticmethod
    def backward(ctx, g_out, g_last):  # type: ignore[override]
        ctx.saved_tensors  # raises if an input was modified in place since the forward
        grads = fast_backward(ctx.state, g_out, g_last)
        return (*[gr if need else None for gr, need in zip(grads, ctx.needs_input_grad)], None)


def selective_scan_fast(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    z: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Same contract as the reference backend."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias)):
        out, last = _FastScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    else:
        out, last, _ = fast_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, False)
    return (out, last) if return_last_state else out
