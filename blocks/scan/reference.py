"""The ground-truth selective scan: a plain sequential loop over L, differentiated by autograd.

Written from the semantics of mamba-ssm's `selective_scan_ref` (not imported): one state update and one
contraction with C per step, with the same operations in the same order. It is slow (autograd records
every step) and exists to check the others.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from blocks.scan._common import compute_dtype, expand_groups


def selective_scan_reference(
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
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = C_t . h_t;  out = (y + D u) * silu(z)."""
    dtype_in = u.dtype
    ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    if B.dim() == 4:
        B = expand_groups(B, dim)
    if C.dim() == 4:
        C = expand_groups(C, dim)
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    if B.dim() == 2:
        dBu = torch.einsum("bdl,dn,bdl->bdln", delta, B, u)
    elif B.dim() == 3:
        dBu = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    else:
        dBu = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    h = u.new_zeros((batch, dim, A.shape[1]))
    ys = []
    # unbind rather than indexing step by step: the backward of L separate index ops would build L
    # full-size gradient tensors (O(L^2) memory traffic), unbind's backward stacks the L slices once
    if C.dim() == 2:
        c_steps = [C] * length
    else:
        c_steps = C.unbind(C.dim() - 1)
    for dA_t, dBu_t, C_t in zip(dA.unbind(2), dBu.unbind(2), c_steps):
        h = dA_t * h + dBu_t
        if C.dim() == 2:
            ys.append(torch.einsum("bdn,dn->bd", h, C_t))
        elif C.dim() == 3:
            ys.append(torch.einsum("bdn,bn->bd", h, C_t))
        else:
            ys.append(torch.einsum("bdn,bdn->bd", h, C_t))
    out = torch.stack(ys, dim=2)
    if D is not None:
        out = out + u * D.to(ct)[:, None]
    if z is not None:
        out = out * F.silu(z.to(ct))
    out = out.to(dtype_in)
    return (out, h) if return_last_state else out
