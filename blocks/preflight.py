"""Pre-flight size check: how much memory a spec needs, estimated before anything is allocated.

Why: a pattern can ask for far more memory than the machine has (`C | M*1000 | M*1000 | M*1000` has
billions of weights at a large `dim`; `A[window=4096]` pads a 14x14 map to 4096x4096 tokens). Building
or running such a model ends in a MemoryError traceback, or in the machine swapping for minutes. The
estimate below costs milliseconds, so `show`, `bench` and studies can refuse with one line instead.

What is counted (float32 everywhere; a rough lower bound, not a profile):
- parameters and buffers: exact, from one meta-device build of each distinct block (a pattern of
  thousands of blocks has a handful of distinct ones) plus the stem, downsamplers, norm and head worked
  out from their shapes;
- activations: each stage's map padded up to its windows (`ceil(side / window) * window`), times the
  stage's width, times the widest per-token tensor of its blocks (`mlp_ratio`, the qkv projection (3),
  the mixer's `2 * expand`), times the batch. Inference keeps a few of the largest alive at once;
  training keeps every block's, and four copies of the weights (weights, gradients, two Adam moments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocks.registry import BlockContext
from blocks.spec import ModelSpec
from hybridlab.errors import ConfigError

FLOAT_BYTES = 4
LIVE_ACTIVATIONS = 3  # inference: a block's input, its output and its widest intermediate
TRAINING_WEIGHT_COPIES = 4  # weights, gradients and the optimizer's two moments
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Footprint:
    """The estimate for one spec at one image size and batch size, in bytes."""

    params: int  # parameter elements
    buffers: int  # buffer elements (BatchNorm statistics)
    stage_params: tuple[int, ...]  # parameter elements of `levels.{i}`: its blocks and its downsampler
    param_bytes: int  # parameters and buffers
    largest_activation_bytes: int
    activation_sum_bytes: int  # over every block: what training keeps for the backward pass
    img_size: int
    batch_size: int

    def total(self, training: bool = False) -> int:
        """Peak bytes for inference (a few live activations) or training (every block's kept)."""
        if training:
            return TRAINING_WEIGHT_COPIES * self.param_bytes + self.activation_sum_bytes
        return self.param_bytes + LIVE_ACTIVATIONS * self.largest_activation_bytes

    def describe(self, training: bool = False) -> str:
        what = "training" if training else "inference"
        return (
            f"about {format_bytes(self.total(training))} for {what} at {self.img_size} px, batch {self.batch_size} "
            f"(weights {format_bytes(self.param_bytes)}, largest activation "
            f"{format_bytes(self.largest_activation_bytes)})"
        )


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - the loop always returns


def estimate(spec: ModelSpec, img_size: int, batch_size: int = 1) -> Footprint:
    """Parameter bytes and activation sizes of `spec`, without building the model."""
    img_size, batch_size = int(img_size), int(batch_size)
    if img_size < 1 or batch_size < 1:
        raise ConfigError(f"image size and batch size must be at least 1, got {img_size} and {batch_size}", "model")
    parsed = spec.parsed
    dims = spec.stage_dims
    sides = spec.feature_map_sides(img_size)
    params, buffers = _fixed_params(spec)
    stage_params = [a * b * 9 for a, b in zip(dims, dims[1:])] + [0]  # the downsamplers
    cache: dict[Any, tuple[int, int]] = {}
    largest = 0
    total = 0
    # the stem's first conv output: in_dim channels at half the input side (full side with stride 1)
    stem_side = (img_size + 1) // 2 if spec.stem_stride >= 2 else img_size
    stem = spec.in_dim * stem_side * stem_side
    largest = total = stem
    for i, stage in enumerate(parsed.stages):
        for block in stage:
            options = block.resolved_options()
            block_type = block.block_type
            window = (int(options.get("window", 0)) or spec.window_size[i]) if block_type.is_token else None
            ctx = BlockContext(
                dim=dims[i], num_heads=spec.num_heads[i], window_size=window or spec.window_size[i],
                mlp_ratio=spec.mlp_ratio, layer_scale=spec.layer_scale, layer_scale_conv=spec.layer_scale_conv,
            )  # fmt: skip
            key = (block.symbol, block.options, ctx)
            if key not in cache:
                cache[key] = _block_params(block.symbol, options, ctx)
            params += cache[key][0]
            buffers += cache[key][1]
            stage_params[i] += cache[key][0]
            side = sides[i] if window is None else math.ceil(sides[i] / window) * window
            widest = max(1.0, spec.mlp_ratio, 3.0 if block_type.is_token else 1.0, 2.0 * float(options.get("expand", 1)))
            elements = side * side * dims[i] * widest
            largest = max(largest, elements)
            total += elements * 2  # the block's input and its widest intermediate
    return Footprint(
        params=params,
        buffers=buffers,
        stage_params=tuple(stage_params),
        param_bytes=(params + buffers) * FLOAT_BYTES,
        largest_activation_bytes=int(largest * batch_size * FLOAT_BYTES),
        activation_sum_bytes=int(total * batch_size * FLOAT_BYTES),
        img_size=img_size,
        batch_size=batch_size,
    )


def available_bytes(device: Any = "cpu") -> int | None:
    """Free memory where the model will run: CUDA's free memory, else MemAvailable; None when unknown."""
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        return None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file says kB and means KiB
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(
    spec: ModelSpec,
    img_size: int,
    batch_size: int = 1,
    budget_bytes: int | None = None,
    training: bool = False,
    device: Any = "cpu",
) -> Footprint:
    """The estimate, or a one-line ConfigError with it when it exceeds the budget.

    `budget_bytes` defaults to the free memory of `device` (MemAvailable on CPU); when that cannot be
    read, nothing is refused.
    """
    footprint = estimate(spec, img_size, batch_size)
    budget = available_bytes(device) if budget_bytes is None else int(budget_bytes)
    if budget is not None and footprint.total(training) > budget:
        source = "the budget" if budget_bytes is not None else f"available on {device}"
        pattern = spec.pattern if len(spec.pattern) <= 60 else spec.pattern[:57] + "..."
        raise ConfigError(
            f"{pattern!r} would need {footprint.describe(training)}, "
            f"but {format_bytes(budget)} is {source}; use a smaller pattern, dim, window, image or batch",
            "model",
        )
    return footprint


def _block_params(symbol: str, options: dict[str, Any], ctx: BlockContext) -> tuple[int, int]:
    """Parameter and buffer elements of one block, from a build on the meta device (no memory)."""
    import torch

    from blocks.registry import build_block

    with torch.device("meta"):
        module = build_block(symbol, options, ctx)
    return sum(t.numel() for t in module.parameters()), sum(t.numel() for t in module.buffers())


def _fixed_params(spec: ModelSpec) -> tuple[int, int]:
    """Parameter and buffer elements of the stem, downsamplers, final norm and head (see `blocks.model`)."""
    dims = spec.stage_dims
    stem = spec.in_chans * spec.in_dim * 9 + 2 * spec.in_dim + spec.in_dim * dims[0] * 9 + 2 * dims[0]
    downsample = sum(a * b * 9 for a, b in zip(dims, dims[1:]))
    norm = 2 * dims[-1]
    head = dims[-1] * spec.num_classes + spec.num_classes if spec.num_classes > 0 else 0
    # BatchNorm buffers: running mean and variance, plus a one-element step counter
    buffers = (2 * spec.in_dim + 1) + (2 * dims[0] + 1) + (2 * dims[-1] + 1)
    return stem + downsample + norm + head, buffers


__all__ = ["Footprint", "available_bytes", "check_fits", "estimate", "format_bytes"]
