"""Selective scan (Mamba-1 S6) with pluggable backends, same call as mamba-ssm's `selective_scan_fn`.

    from blocks.scan import selective_scan, scan_backend, scan_flops
    y = selective_scan(u, delta, A, B, C, D, delta_bias=b, delta_softplus=True)   # backend="auto"
    with scan_backend("reference"):                # or HYBRIDLAB_SCAN_BACKEND=reference
        y = selective_scan(u, delta, A, B, C, D, delta_bias=b, delta_softplus=True)

Backends, each in the module of its name: "reference" (sequential loop, the ground truth), "compiled" (a C
loop vectorised over channels, built on first use; input-dependent B/C only, anything else is refused),
"blocked" (pure PyTorch: a blocked sequential scan on cache-sized buffers, `blocks.scan.blocked_core`, with
a hand-written backward), "fast" (the default off CUDA: compiled where it builds and takes the inputs,
else blocked), "mamba_ssm" (the CUDA kernel, when importable and tensors are on CUDA).
`auto` is resolved per call: innermost `scan_backend(...)`, then $HYBRIDLAB_SCAN_BACKEND, then the device
default. Under FlopCounterMode every backend counts exactly `scan_flops(...)` (see `blocks.scan.counting`).
`python -m blocks.bench_scan` compares the backends' speed.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from blocks.scan._common import check_inputs
from blocks.scan.backends import ENV_VAR, available_backends, backend_impl, resolve_backend, scan_backend
from blocks.scan.counting import counted_selective_scan, flop_counter_active, scan_flops

__all__ = ["ENV_VAR", "available_backends", "resolve_backend", "scan_backend", "scan_flops", "selective_scan"]


def selective_scan(
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
    *,
    backend: str = "auto",
):
    """out (B, D, L) in u's dtype, or (out, last_state (B, D, N)) when return_last_state.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t;  y_t = <C_t, h_t>;  out = (y + D*u) * silu(z),
    with delta = softplus(delta + delta_bias) when asked. Computed in float32 (float64 if any input is).
    Under `torch.utils.flop_counter.FlopCounterMode` it counts exactly `scan_flops(...)` (see `counting`).
    """
    check_inputs(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(backend, u.device)
    if flop_counter_active():
        return counted_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, name)
    return backend_impl(name)(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
