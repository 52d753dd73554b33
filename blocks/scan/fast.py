"""The `fast` backend, the default off CUDA: the compiled kernel where it takes the inputs, else `blocked`.

The kernel (`blocks.scan.compiled`) takes input-dependent B and C on CPU tensors, which is what the
mixers pass; input-independent (D, N) B/C, or a machine where the kernel does not build, run `blocked`.
`blocks.scan.backends.describe_backend("fast")` names which of the two runs here.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from blocks.scan import compiled
from blocks.scan.blocked import selective_scan_blocked
from blocks.scan.compiled import kernel_scan


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
    """Same contract as the reference backend; see the module docstring for what runs."""
    run = kernel_scan if compiled.supports(B, C, u.device) else selective_scan_blocked
    return run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
