"""Parameters, MACs and FLOPs of one forward pass, counted the way a reviewer can check by hand.

- `macs`: multiply-accumulates of nn.Conv2d and nn.Linear modules, from forward hooks (bias adds
  not counted), plus `extra_macs(input_shape)` of every module that defines it: a block whose
  projection is a matmul on a parameter (SS2D's stacked x/dt projections, H's functional dt
  projection) reports those MACs itself, so they are not silently missed. This is what ptflops
  reports as "FLOPs" and what the MambaVision paper's Table 1 lists; attention matmuls, F.conv1d
  and the scan terms (selective scan, SSD's chunked matmuls) are NOT in it: they are in `flops`.
- `flops`: torch's FlopCounterMode (2 x MACs of every matmul and convolution it sees, F.conv1d
  included), plus scaled-dot-product attention (4*B*heads*Nq*Nk*head_dim per call; FlopCounterMode
  counts SDPA's CUDA kernels and its math decomposition but not the CPU flash kernel, so calls
  it missed are added analytically), plus the selective scan, which `blocks.scan` makes
  FlopCounterMode count as its analytic 9*B*L*D*N (+B*D*L for D, +B*D*L for z) term.

Counting runs once at batch 1 (figures are per image), preferably on the meta device so even the
largest presets cost no real compute.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

CATEGORIES = ("conv", "matmul", "attention", "scan", "other")


@dataclass
class ComputeCounts:
    """Per-image compute of one forward pass at `img_size`."""

    params: int
    macs: int
    flops: int
    breakdown: dict[str, int] = field(default_factory=dict)
    counted_on: str = "meta"
    attention_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """All parameters (the usual "#Params"; every preset parameter is trainable)."""
    return sum(p.numel() for p in model.parameters())


EXTRA_MACS_HOOK = "extra_macs"


def module_macs(module: nn.Module, inputs: tuple, output: Any) -> int:
    """MACs of one nn.Conv2d / nn.Linear call from its output shape, plus the module's own
    `extra_macs(input_shape)` when it defines one (parameter matmuls that no Linear hook sees)."""
    extra = getattr(module, EXTRA_MACS_HOOK, None)
    if callable(extra) and inputs and isinstance(inputs[0], torch.Tensor):
        own = int(extra(tuple(inputs[0].shape)))
    else:
        own = 0
    if not isinstance(output, torch.Tensor):
        return own
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return own + output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return own + output.numel() * module.in_features
    return own


def sdpa_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> int:
    """QK^T and AV of one SDPA call: 2*(B*H*Nq*Nk*E) + 2*(B*H*Nq*Nk*Ev) = 4*B*H*N*N*head_dim."""
    lead = math.prod(query.shape[:-2])
    nq, e = query.shape[-2], query.shape[-1]
    nk, ev = key.shape[-2], value.shape[-1]
    return 2 * lead * nq * nk * e + 2 * lead * nq * nk * ev


class _AttentionTally(TorchFunctionMode):
    """Sees every F.scaled_dot_product_attention call; adds the analytic count when the dispatcher's
    counter missed it (the CPU flash kernel has no flop formula), never changes the computation."""

    def __init__(self, counter: FlopCounterMode) -> None:
        super().__init__()
        self.counter = counter
        self.calls = 0
        self.counted = 0  # attention FLOPs that FlopCounterMode itself saw (kernel op or bmm decomposition)
        self.added = 0  # attention FLOPs it missed, added here

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q = args[0] if len(args) > 0 else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs["key"]
        v = args[2] if len(args) > 2 else kwargs["value"]
        analytic = sdpa_flops(q, k, v)
        before = self.counter.get_total_flops()
        out = func(*args, **kwargs)
        seen = self.counter.get_total_flops() - before
        self.calls += 1
        if seen > 0:
            self.counted += seen
        else:
            self.added += analytic
        return out


@contextlib.contextmanager
def countable_scan() -> Iterator[None]:
    """Run the selective scan on a pure-PyTorch backend while counting: its FLOPs are the analytic
    term whichever backend runs, and the meta device (or a CPU copy) cannot run the CUDA kernel even
    when a `scan_backend("mamba_ssm")` context is active around the measurement."""
    try:
        from blocks.scan import available_backends, scan_backend
    except ImportError:  # pragma: no cover - blocks is part of this project
        yield
        return
    names = available_backends("cpu")
    with scan_backend("fast" if "fast" in names else names[0]):
        yield


def _category(op: Any) -> str:
    name = str(op).lower()
    if "scan" in name:
        return "scan"
    if "attention" in name:
        return "attention"
    if "conv" in name:
        return "conv"
    if any(key in name for key in ("mm", "matmul", "einsum")):
        return "matmul"
    return "other"


class _MacHooks:
    """Forward hooks on every nn.Conv2d / nn.Linear, and every module with `extra_macs`, that sum their
    MACs while installed."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.macs = 0
        self._handles: list[Any] = []

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.macs += module_macs(module, inputs, output)

    def __enter__(self) -> _MacHooks:
        self._handles = [
            m.register_forward_hook(self._hook) for m in self.model.modules() if _counted(m)
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _counted(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.Linear)) or callable(getattr(module, EXTRA_MACS_HOOK, None))


def _dummy_input(batch: int, in_chans: int, img_size: int | tuple[int, int], device: torch.device) -> torch.Tensor:
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    if device.type == "meta":
        return torch.empty(batch, in_chans, h, w, device=device)
    return torch.randn(batch, in_chans, h, w, device=device)


def _model_device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def count_macs(model: nn.Module, img_size: int | tuple[int, int], in_chans: int = 3, device: torch.device | str | None = None) -> int:
    """Per-image MACs of nn.Conv2d and nn.Linear modules and `extra_macs` hooks (ptflops' and the paper's
    "FLOPs", with parameter matmuls included); hooks, no counter."""
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), countable_scan(), _MacHooks(model) as hooks:
            model(_dummy_input(1, in_chans, img_size, device))
    finally:
        model.train(was_training)
    return hooks.macs


def count_compute(
    model: nn.Module,
    img_size: int | tuple[int, int],
    in_chans: int = 3,
    batch: int = 1,
    device: torch.device | str | None = None,
) -> ComputeCounts:
    """Run one forward pass of `model` on a (batch, in_chans, H, W) input; figures are divided by `batch`.

    The model runs in eval mode under no_grad on `device` (default: where its parameters are).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    x = _dummy_input(batch, in_chans, img_size, device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    tally = _AttentionTally(counter)
    try:
        with torch.no_grad(), countable_scan(), _MacHooks(model) as hooks, counter, tally:
            model(x)
    finally:
        model.train(was_training)
    macs = hooks.macs
    breakdown = {c: 0 for c in CATEGORIES}
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        breakdown[_category(op)] += int(n)
    # SDPA decomposed into bmm (meta / math backend) was counted as matmul: move it to attention.
    decomposed = max(0, tally.counted - breakdown["attention"])
    breakdown["matmul"] -= decomposed
    breakdown["attention"] += decomposed + tally.added
    total = sum(breakdown.values())
    return ComputeCounts(
        params=count_params(model),
        macs=macs // batch,
        flops=total // batch,
        breakdown={k: v // batch for k, v in breakdown.items()},
        counted_on=device.type,
        attention_calls=tally.calls,
    )


def count_compute_fresh(
    build: Callable[[], nn.Module], img_size: int, in_chans: int = 3, fallback_device: str = "cpu"
) -> ComputeCounts:
    """Count a model built by `build()` on the meta device (no memory, no compute); if the model cannot
    run on meta (data-dependent code), build it for real on `fallback_device` and count at batch 1."""
    try:
        with torch.device("meta"):
            model = build()
        return count_compute(model, img_size, in_chans, device="meta")
    except (NotImplementedError, RuntimeError) as exc:  # e.g. .item() / data-dependent ops on meta
        if "meta" not in str(exc).lower() and "data-dependent" not in str(exc).lower():
            raise
    model = build().to(fallback_device)
    return count_compute(model, img_size, in_chans, device=fallback_device)


__all__ = [
    "CATEGORIES",
    "EXTRA_MACS_HOOK",
    "ComputeCounts",
    "count_compute",
    "count_compute_fresh",
    "count_macs",
    "count_params",
    "module_macs",
    "sdpa_flops",
]
