"""The `blocked` backend: the blocked core of `blocks.scan.blocked_core` plus bias, softplus, D skip and z
gating, with one hand-written backward for all of it. Pure PyTorch, so it runs wherever torch does.

The glue around the core is written so that every (B, D, L) pass it needs anyway also moves data into or
out of the core's blocked layout (softplus writes delta blocked, the D skip reads y blocked, ...): the
transpositions cost no passes of their own. The whole backward is explicit (no autograd inside), so the
same code also serves the FLOP-counting custom op, whose implementation runs below autograd.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from blocks.scan._common import compute_dtype, explicit_scan
from blocks.scan.blocked_core import Blocks, Operand, addcmul_into, backward_core, copy_into, forward_core, plan
from blocks.scan.reference import selective_scan_reference

# Up to this many steps the plain loop (with autograd) is cheaper than the blocked machinery's fixed
# per-call overhead, so `blocked` runs it (measured with `python -m blocks.bench_scan --grid`).
SHORT_LENGTH = 4

Grads = tuple[Optional[Tensor], ...]


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    """Inputs in the compute dtype, B/C of shape (B, N, L) lifted to one group (B, 1, N, L)."""
    ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    Bc = B.to(ct) if B.dim() != 3 else B.to(ct).unsqueeze(1)
    Cc = C.to(ct) if C.dim() != 3 else C.to(ct).unsqueeze(1)
    return ct, u.to(ct), A.to(ct), Bc, Cc


def _layout(u: Tensor, A: Tensor) -> Blocks:
    batch, dim, length = u.shape
    return Blocks(batch, length, plan(batch, dim, length, A.shape[1]))


def blocked_forward(
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
    """(out in u's dtype, last state in the compute dtype, (tensors, meta) for `blocked_backward` or None)."""
    ct, uc, Ac, Bc, Cc = _prepare(u, delta, A, B, C, D, z, delta_bias)
    dim = u.shape[1]
    lay = _layout(uc, Ac)
    # delta (+ bias) and delta*u written straight into the core's blocked layout; softplus runs on the
    # contiguous blocked buffer (on a permuted output view it measured 10x slower)
    dr = lay.empty(dim, uc)
    if delta_bias is None:
        lay.write(dr, copy_into, delta.to(ct))
    else:
        lay.write(dr, torch.add, delta.to(ct), delta_bias.to(ct)[:, None, None])
    dl = lay.zero_padding(F.softplus(dr)) if delta_softplus else dr
    du = lay.write(lay.empty(dim, uc), torch.mul, dl, uc)
    Bo, Co = Operand(Bc, dim, lay), Operand(Cc, dim, lay)
    y, last, entries = forward_core(dl, du, Ac.t().contiguous(), Bo, Co, need_saved)
    o1 = lay.from_blocks(y)
    if D is not None:
        o1.addcmul_(uc, D.to(ct)[:, None])
    out = o1 if z is None else o1 * F.silu(z.to(ct))
    last = last.transpose(1, 2).contiguous()
    if not need_saved:
        return out.to(u.dtype), last, None
    saved = ([dr] if delta_softplus else []) + ([o1] if z is not None else []) + [dl, du, entries]
    return out.to(u.dtype), last, (saved, (delta_softplus, z is not None))


def blocked_backward(inputs, saved, meta, g_out: Optional[Tensor], g_last: Optional[Tensor]) -> Grads:
    """Gradients for inputs (u, delta, A, B, C, D, z, delta_bias) in their dtypes (None where an input is None)."""
    u, delta, A, B, C, D, z, delta_bias = inputs
    softplus, gated = meta
    ct, uc, Ac, Bc, Cc = _prepare(*inputs)
    dim = u.shape[1]
    lay = _layout(uc, Ac)
    saved = list(saved)
    dr = saved.pop(0) if softplus else None
    o1 = saved.pop(0) if gated else None
    dl, du, entries = saved
    g = torch.zeros_like(uc) if g_out is None else g_out.to(ct)
    g_z = None
    if z is not None:
        zc = z.to(ct)
        sig = torch.sigmoid(zc)
        g_z = g * o1 * sig * (1 + zc * (1 - sig))  # d silu(z) = sig(z) (1 + z (1 - sig(z)))
        g = g * (zc * sig)
    g_D = None if D is None else (g * uc).sum((0, 2))
    dy = lay.to_blocks(g)
    dlast = None if g_last is None else g_last.to(ct).transpose(1, 2)
    Bo, Co = Operand(Bc, dim, lay), Operand(Cc, dim, lay)
    d_dl, d_du, d_A = backward_core(dl, du, Ac.t().contiguous(), Bo, Co, entries, dy, dlast)
    # du = delta * u: its gradient splits into delta's (u read through the blocked view) and u's
    lay.write(d_dl, addcmul_into, d_du, uc)
    if dr is not None:
        d_dl.mul_(torch.sigmoid(dr))  # d softplus(x) = sigmoid(x)
    d_delta = lay.from_blocks(d_dl)
    d_u = lay.from_blocks(d_du.mul_(dl))
    if D is not None:
        d_u.addcmul_(g, D.to(ct)[:, None])
    g_bias = None if delta_bias is None else d_delta.sum((0, 2))
    d_B, d_C = Bo.grad(), Co.grad()
    if B.dim() == 3:
        d_B = d_B.squeeze(1)
    if C.dim() == 3:
        d_C = d_C.squeeze(1)
    grads = (d_u, d_delta, d_A.t(), d_B, d_C, g_D, g_z, g_bias)
    return tuple(None if gr is None else gr.to(x.dtype) for gr, x in zip(grads, inputs))


_blocked_scan = explicit_scan("blocked", blocked_forward, blocked_backward)


def selective_scan_blocked(
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
    """Same contract as the reference backend; pure PyTorch."""
    if u.shape[-1] <= SHORT_LENGTH:
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return _blocked_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

