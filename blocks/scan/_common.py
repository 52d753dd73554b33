"""Input checks and normalisation shared by every scan backend.

Semantics follow mamba-ssm's `selective_scan_fn` / `selective_scan_ref`: u, delta (B, D, L); A (D, N) real;
B and C each (D, N), (B, N, L) or (B, G, N, L) with D % G == 0; D and delta_bias (D,); z (B, D, L).
Computation runs in float32, or float64 when any input is float64 (so gradcheck is meaningful); the
output is cast back to u's dtype and the last state stays in the compute dtype (as the CUDA kernel does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor

from hybridlab.errors import ConfigError

WHERE = "selective_scan"


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
) -> tuple[int, int, int, int]:
    """Validate shapes once, up front, so every backend can assume them; returns (batch, dim, length, state)."""
    if u.dim() != 3:
        raise ConfigError(f"u must be (batch, dim, length), got shape {_shape(u)}", WHERE)
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ConfigError(f"delta must have u's shape {_shape(u)}, got {_shape(delta)}", WHERE)
    if A.is_complex():
        raise ConfigError("complex A is not supported; pass a real (dim, state) A", WHERE)
    if A.dim() != 2 or A.shape[0] != dim:
        raise ConfigError(f"A must be (dim={dim}, state), got shape {_shape(A)}", WHERE)
    state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.is_complex():
            raise ConfigError(f"complex {name} is not supported", WHERE)
        if t.dim() == 2:
            ok = tuple(t.shape) == (dim, state)
        elif t.dim() == 3:
            ok = tuple(t.shape) == (batch, state, length)
        elif t.dim() == 4:
            groups = t.shape[1]
            ok = (t.shape[0], t.shape[2], t.shape[3]) == (batch, state, length) and groups > 0 and dim % groups == 0
        else:
            ok = False
        if not ok:
            raise ConfigError(
                f"{name} must be (dim, state)=({dim}, {state}), (batch, state, length)=({batch}, {state}, {length}) "
                f"or (batch, groups, state, length) with dim % groups == 0, got shape {_shape(t)}",
                WHERE,
            )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (dim,):
            raise ConfigError(f"{name} must be (dim,)=({dim},), got shape {_shape(t)}", WHERE)
    if z is not None and z.shape != u.shape:
        raise ConfigError(f"z must have u's shape {_shape(u)}, got {_shape(z)}", WHERE)
    return batch, dim, length, state


def compute_dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    """float64 if any input is float64, else float32: half inputs are upcast like the CUDA kernel does."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def expand_groups(t: Tensor, dim: int) -> Tensor:
    """(B, G, N, L) -> (B, dim, N, L): channel d reads group d // (dim // G), as mamba-ssm's repeat does."""
    return t.repeat_interleave(dim // t.shape[1], dim=1)


def explicit_scan(name: str, forward: Callable, backward: Callable) -> Callable:
    """A scan entry point (the backends' common signature) from an explicit forward and backward.

    forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, need_saved) -> (out, last, (saved, meta) or
    None); backward(inputs, saved, meta, g_out, g_last) -> gradients of the 8 inputs. Everything the backward
    needs goes through save_for_backward, so autograd frees it after backward (unless the graph is
    retained) and saved-tensor hooks (offloading, checkpointing) see it. Without grad nothing is saved.
    """

    class Scan(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):  # type: ignore[override]
            inputs = (u, delta, A, B, C, D, z, delta_bias)
            out, last, (saved, meta) = forward(*inputs, delta_softplus, need_saved=True)
            ctx.present = [t is not None for t in inputs]
            ctx.meta = meta
            ctx.save_for_backward(*[t for t in inputs if t is not None], *saved)
            return out, last

        @staticmethod
        @torch.autograd.function.once_differentiable  # the explicit backward is not itself differentiable
        def backward(ctx, g_out, g_last):  # type: ignore[override]
            tensors = list(ctx.saved_tensors)
            inputs = tuple(tensors.pop(0) if present else None for present in ctx.present)
            grads = backward(inputs, tensors, ctx.meta, g_out, g_last)
            return (*[gr if need else None for gr, need in zip(grads, ctx.needs_input_grad)], None)

    Scan.__name__ = Scan.__qualname__ = name

    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            out, last = Scan.apply(*inputs, delta_softplus)
        else:
            out, last, _ = forward(*inputs, delta_softplus, need_saved=False)
        return (out, last) if return_last_state else out

    scan.__name__ = scan.__qualname__ = f"selective_scan_{name}"
    return scan
