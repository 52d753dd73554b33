"""HybridNet: builds any pattern into the official MambaVision layout, keys and init included.

    stem (PatchEmbed) -> levels[i] (blocks, then Downsample except after the last) -> BatchNorm2d
    -> global average pool -> head

State-dict keys equal the official ones (`patch_embed.conv_down.{0,1,3,4}`, `levels.{i}.blocks.{j}`,
`levels.{i}.downsample.reduction.0`, `norm`, `head`), so the presets load official checkpoints.
Unlike the official code, a stage may mix conv and token blocks in any order: token blocks run in
windows, consecutive token blocks with the same window share one partition, and conv blocks run
on the full NCHW map in between.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from blocks.registry import BlockContext, build_block
from blocks.spec import ModelSpec
from blocks.windows import in_windows
from hybridlab.errors import ConfigError

# Official MambaVision constructor arguments that it accepts and ignores (or that only take their
# defaults here); anything else unknown is still ignored like the official code does, but warned about.
OFFICIAL_IGNORED = frozenset(
    {"resolution", "global_pool", "qkv_bias", "qk_scale", "drop_rate", "attn_drop_rate", "norm_layer", "bn_eps"}
)
# The settings HybridNet takes are ModelSpec's fields, defaults included: they are not repeated here.
_SETTINGS = frozenset(f.name for f in fields(ModelSpec) if f.name != "pattern")
_NULLABLE = frozenset(f.name for f in fields(ModelSpec) if f.default is None)  # None is a value, not "unset"


class PatchEmbed(nn.Module):
    """Official stem: conv3x3/s2-BN(1e-4)-ReLU-conv3x3/s2-BN(1e-4)-ReLU; `stride` 2 or 1 for small images."""

    def __init__(self, in_chans: int = 3, in_dim: int = 64, dim: int = 96, stride: int = 4) -> None:
        super().__init__()
        self.proj = nn.Identity()
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, 3, 2 if stride >= 2 else 1, 1, bias=False),
            nn.BatchNorm2d(in_dim, eps=1e-4),
            nn.ReLU(),
            nn.Conv2d(in_dim, dim, 3, 2 if stride == 4 else 1, 1, bias=False),
            nn.BatchNorm2d(dim, eps=1e-4),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_down(self.proj(x))


class Downsample(nn.Module):
    """Official downsample: one conv3x3/s2 without bias, norm or activation."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(dim, dim_out, 3, 2, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(x)


class HybridLevel(nn.Module):
    """One stage (`levels.{i}`): its blocks in order, then the optional downsample.

    `windows[j]` is None for a conv block and the window side for a token block; runs of token
    blocks with equal windows form one segment (one pad + partition + reverse + crop), which for a
    stage of token blocks only is exactly the official `MambaVisionLayer`.
    """

    def __init__(self, blocks: Sequence[nn.Module], windows: Sequence[int | None], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.grad_checkpointing = False
        self.segments: list[tuple[int | None, int, int]] = []
        for j, window in enumerate(windows):
            last = self.segments[-1] if self.segments else None
            if window is not None and last is not None and last[0] == window and last[2] == j:
                self.segments[-1] = (window, last[1], j + 1)
            else:
                self.segments.append((window, j, j + 1))

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The stage output before downsampling (the multi-scale feature)."""
        for window, start, end in self.segments:
            if window is None:
                x = self._call(self.blocks[start], x)
            else:
                x = in_windows(x, window, lambda t, s=start, e=end: self._run(t, s, e))
        return x

    def _run(self, tokens: torch.Tensor, start: int, end: int) -> torch.Tensor:
        for blk in self.blocks[start:end]:
            tokens = self._call(blk, tokens)
        return tokens

    def _call(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return self.downsample(x) if self.downsample is not None else x


class HybridNet(nn.Module):
    """A hybrid backbone from a pattern (or a ModelSpec); argument names mirror official MambaVision.

    Give a `spec`, or a `pattern` plus settings, or both. Settings are ModelSpec's fields (`dim`,
    `num_heads`, `window_size`, ...), validated by `ModelSpec.create`, with ModelSpec's defaults. With a
    `spec`, every setting given here (and a given `pattern`) overrides the spec's, through
    `spec.with_settings`: `HybridNet(spec=s, dim=80)` has dim 80 whatever `s.dim` is. A setting given as
    None counts as not given, except where None is a value (`layer_scale`, `layer_scale_conv`, `dims`).
    When `pattern` is None, official `depths=[...]` give the official pattern (conv stages 1-2, then the
    first ceil(N/2) mixers and the rest attention); with neither, the MambaVision-T pattern is used.
    Other keyword arguments are ignored, like the official constructor does (unknown ones with a warning).
    `forward_features` returns the normalised NCHW map (timm convention; the official one pools).
    """

    def __init__(
        self,
        pattern: str | None = None,
        *,
        spec: ModelSpec | None = None,
        depths: Sequence[int] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        given = {k: v for k, v in settings.items() if k in _SETTINGS and (v is not None or k in _NULLABLE)}
        _warn_ignored({k: v for k, v in settings.items() if k not in _SETTINGS})
        spec = _resolve_spec(spec, pattern, depths, given)
        self.spec = spec
        self.pattern = spec.pattern
        parsed = spec.parsed
        stage_dims = spec.stage_dims
        self.dims = stage_dims
        self.depths = parsed.depths
        self.num_classes = spec.num_classes
        self.num_features = self.head_hidden_size = stage_dims[-1]
        self.stem_stride = spec.stem_stride

        self.patch_embed = PatchEmbed(spec.in_chans, spec.in_dim, stage_dims[0], spec.stem_stride)
        total = sum(self.depths)
        dpr = [x.item() for x in torch.linspace(0, spec.drop_path_rate, total, device="cpu")]
        levels = []
        k = 0
        for i, stage in enumerate(parsed.stages):
            blocks, windows = [], []
            for j, block in enumerate(stage):
                options = block.resolved_options()
                window = None
                if block.block_type.is_token:
                    window = int(options.get("window", 0)) or spec.window_size[i]
                ctx = BlockContext(
                    dim=stage_dims[i],
                    num_heads=spec.num_heads[i],
                    window_size=window or spec.window_size[i],
                    mlp_ratio=spec.mlp_ratio,
                    drop_path=dpr[k],
                    layer_scale=spec.layer_scale,
                    layer_scale_conv=spec.layer_scale_conv,
                    stage=i,
                    index=j,
                )
                blocks.append(build_block(block.symbol, options, ctx))
                windows.append(window)
                k += 1
            last = i == parsed.num_stages - 1
            down = None if last else Downsample(stage_dims[i], stage_dims[i + 1])
            levels.append(HybridLevel(blocks, windows, down))
        self.levels = nn.ModuleList(levels)
        self.norm = nn.BatchNorm2d(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.feature_info = [
            dict(num_chs=d, reduction=spec.stem_stride * 2**i, module=f"levels.{i}") for i, d in enumerate(stage_dims)
        ]
        if spec.init == "official":
            self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Official from-scratch init: every Linear (dt_proj too) trunc_normal(.02), bias 0; norms 1/0.

        A Linear marked `_keep_init` (the dt projections of blocks from other designs, Vim's and the parallel
        head's, whose reference inits set dt's bias by inverse softplus) keeps its own initialisation.
        """
        weight = getattr(m, "weight", None)
        if weight is None or weight.is_meta or getattr(m, "_keep_init", False):
            return
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -- timm interface ------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        """The official set, {'rpb'}: it matches nothing, and timm's optimizer factory never reads it."""
        return {"rpb"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for timm's layer-wise LR decay: stem, then blocks in order, then the norm."""
        return dict(
            stem=r"^patch_embed",
            blocks=r"^levels\.(\d+)"
            if coarse
            else [
                (r"^levels\.(\d+)\.blocks\.(\d+)", None),
                (r"^levels\.(\d+)\.downsample", (99998,)),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (activation memory for compute)."""
        for level in self.levels:
            level.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New head for `num_classes` (0 = Identity); only average pooling exists."""
        if global_pool not in (None, "", "avg"):
            raise ConfigError(f"global_pool {global_pool!r} is not supported (only 'avg')", "model")
        self.num_classes = num_classes
        ref = self.norm.weight if isinstance(self.norm, nn.BatchNorm2d) else None
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if ref is not None and num_classes > 0:
            head = head.to(device=ref.device, dtype=ref.dtype)
            self._init_weights(head)
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for level in self.levels:
            x = level(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (if given a map) and classify; `pre_logits` returns the pooled features."""
        if x.dim() == 4:
            x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Pre-downsample stage outputs (strides stem_stride * 2**i), timm's signature.

        `indices`: None = all stages, int n = the last n, list = those stages. `norm` applies the
        final BatchNorm to the last stage's map (the only one it fits).
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ConfigError(f"output_fmt must be NCHW or NHWC, got {output_fmt!r}", "forward_intermediates")
        take, max_index = feature_take_indices(len(self.levels), indices)
        last = len(self.levels) - 1
        levels = self.levels[: max_index + 1] if stop_early else self.levels
        feats = []
        x = self.patch_embed(x)
        for i, level in enumerate(levels):
            x = level.forward_blocks(x)
            if i in take:
                y = self.norm(x) if norm and i == last else x
                feats.append(y.permute(0, 2, 3, 1).contiguous() if output_fmt == "NHWC" else y)
            if level.downsample is not None and not (stop_early and i == max_index):
                x = level.downsample(x)
        if intermediates_only:
            return feats
        if len(levels) == len(self.levels):
            x = self.norm(x)
        return x, feats

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All stage outputs (NCHW, pre-downsample), e.g. for detection/segmentation necks."""
        return self.forward_intermediates(x, intermediates_only=True)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages (and norm/head) not needed for `indices`; returns the absolute indices."""
        take, max_index = feature_take_indices(len(self.levels), indices)
        if max_index < len(self.levels) - 1:
            self.levels = self.levels[: max_index + 1]
            prune_norm = True
            self.num_features = self.head_hidden_size = self.dims[max_index]
        self.levels[-1].downsample = None
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take

    def extra_repr(self) -> str:
        return f"pattern={self.pattern!r}"


def _resolve_spec(
    spec: ModelSpec | None, pattern: str | None, depths: Sequence[int] | None, given: dict[str, Any]
) -> ModelSpec:
    if pattern is None and depths is not None:
        from blocks.presets import official_pattern

        pattern = official_pattern(depths)
    elif pattern is not None and depths is not None:
        from blocks.grammar import parse

        if tuple(parse(pattern).depths) != tuple(depths):
            raise ConfigError(
                f"depths {list(depths)} do not match the pattern's depths {list(parse(pattern).depths)}", "model"
            )
    if spec is None:
        from blocks.presets import DEFAULT_PATTERN

        return ModelSpec.create(pattern if pattern is not None else DEFAULT_PATTERN, **given)
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"spec must be a ModelSpec, got {type(spec).__name__}", "model")
    changes = dict(given)
    if pattern is not None:
        changes["pattern"] = pattern
    return spec.with_settings(**changes) if changes else spec


def _warn_ignored(kwargs: dict[str, Any]) -> None:
    unknown = sorted(k for k in kwargs if k not in OFFICIAL_IGNORED)
    if unknown:
        warnings.warn(f"HybridNet ignores unknown arguments: {', '.join(unknown)}", stacklevel=3)


__all__ = ["Downsample", "HybridLevel", "HybridNet", "PatchEmbed"]
