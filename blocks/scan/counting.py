"""FLOP counting for the scan: opaque custom ops with analytic formulas for FlopCounterMode.

FlopCounterMode counts aten ops by formula, so a scan written in einsum/bmm would be counted as whatever
its internals happen to be (and elementwise work not at all). While a FlopCounterMode is active,
`selective_scan` calls `torch.ops.hybridlab.selective_scan` instead; the mode then sees that one op (it does
not look inside an op it has a formula for) and adds exactly `scan_flops(...)`, whatever the backend.
The backward is the op `hybridlab::selective_scan_backward`, counted as twice the forward term (the usual
convention, the one FlopCounterMode applies to matmuls); it recomputes the forward and applies the `blocked`
backend's explicit backward, which gives the same gradients as every backend.
Outside a FlopCounterMode nothing here runs.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from blocks.scan._common import compute_dtype
from blocks.scan.backends import backend_impl
from blocks.scan.blocked import blocked_backward, blocked_forward


def scan_flops(batch: int, dim: int, length: int, state: int, with_D: bool = True, with_z: bool = False) -> int:
    """Analytic FLOPs of one forward scan: 9*B*L*D*N (+B*D*L for the D skip, +B*D*L for z gating).

    The convention of state-spaces/mamba#110, also used by VMamba's FLOP counter.
    """
    flops = 9 * batch * length * dim * state
    if with_D:
        flops += batch * dim * length
    if with_z:
        flops += batch * dim * length
    return flops


def flop_counter_active() -> bool:
    """True inside `torch.utils.flop_counter.FlopCounterMode` (checked on the dispatch-mode stack)."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack
    from torch.utils.flop_counter import _FlopCounterMode

    return any(isinstance(mode, _FlopCounterMode) for mode in _get_current_dispatch_mode_stack())


@torch.library.custom_op("hybridlab::selective_scan", mutates_args=())
def _scan_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    out, last = backend_impl(backend)(u, delta, A, B, C, D, z, delta_bias, delta_softplus, True)
    return out.contiguous(), last.contiguous()


@_scan_op.register_fake
def _scan_op_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
    ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    last = u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=ct)
    return torch.empty_like(u, memory_format=torch.contiguous_format), last


@torch.library.custom_op("hybridlab::selective_scan_backward", mutates_args=())
def _scan_backward_op(
    g_out: Tensor,
    g_last: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
) -> list[Tensor]:
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    _, _, (saved, meta) = blocked_forward(*inputs, delta_softplus, need_saved=True)
    grads = blocked_backward(inputs, saved, meta, g_out, g_last)
    return [u.new_empty(0) if gr is None else gr.contiguous() for gr in grads]


@_scan_backward_op.register_fake
def _scan_backward_op_fake(g_out, g_last, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    return [u.new_empty(0) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format) for t in inputs]


def _setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, _backend = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
    ctx.delta_softplus = delta_softplus


def _backward(ctx, g_out, g_last):
    u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
    if g_out is None:
        g_out = torch.zeros_like(u)
    if g_last is None:
        g_last = torch.zeros((u.shape[0], u.shape[1], A.shape[1]), dtype=compute_dtype(u, A), device=u.device)
    grads = torch.ops.hybridlab.selective_scan_backward(
        g_out, g_last, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus
    )
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    return (*[None if t is None else gr for gr, t in zip(grads, inputs)], None, None)


_scan_op.register_autograd(_backward, setup_context=_setup_context)


def _shape_flops(u_shape, A_shape, D_shape, z_shape) -> int:
    batch, dim, length = u_shape
    return scan_flops(batch, dim, length, A_shape[1], D_shape is not None, z_shape is not None)


@register_flop_formula(torch.ops.hybridlab.selective_scan)
def _scan_op_flops(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, out_shape=None, **kwargs) -> int:
    return _shape_flops(u, A, D, z)


@register_flop_formula(torch.ops.hybridlab.selective_scan_backward)
def _scan_backward_op_flops(g_out, g_last, u, delta, A, B, C, D, z, delta_bias, softplus, out_shape=None, **kw) -> int:
    return 2 * _shape_flops(u, A, D, z)


def counted_selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    return_last_state: bool,
    backend: str,
):
    """`selective_scan` through the custom op (same results and gradients), for FlopCounterMode."""
    out, last = torch.ops.hybridlab.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend)
    return (out, last) if return_last_state else out
