"""`G`: MambaOut's gated CNN block (Yu & Wang, 2024), a token block with no SSM.

MambaOut asks whether the selective scan is needed at all for vision: it keeps Mamba's gated block
(expand, gate, depthwise token mixing, project back) and replaces the SSM by a depthwise conv2d on the
2-D map. Here the map is the window's (window_size x window_size) tokens, so the block slots into any
token stage. Parameter names and shapes follow timm's `GatedConvBlock` (`timm.models.mambaout`), so its
weights load unchanged: norm, fc1 (dim -> 2*hidden), conv (depthwise on conv_ratio*dim channels), fc2, and
`ls.gamma` when layer scale is on.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, LayerScale
from torch import nn

from hybridlab.errors import ConfigError


class GatedCNNBlock(nn.Module):
    """x + drop_path(ls(fc2(gelu(g) * cat[i, dwconv(c)]))) with g, i, c = split(fc1(norm(x))).

    Input and output are (batch * windows, window_size**2, dim) in raster order (as `blocks.windows`
    cuts them); the conv sees each window as a (window_size, window_size) map with zero padding.
    """

    def __init__(
        self,
        dim: int,
        window_size: int = 7,
        kernel_size: int = 7,
        expansion_ratio: float = 8 / 3,
        conv_ratio: float = 1.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        hidden = int(expansion_ratio * dim)
        conv_channels = int(conv_ratio * dim)
        if not 0 < conv_channels <= hidden:
            raise ConfigError(
                f"conv_ratio={conv_ratio} gives {conv_channels} conv channels; need 1..{hidden} (expansion_ratio*dim)",
                "G",
            )
        self.window_size = window_size
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, hidden * 2)
        self.act = nn.GELU()
        self.split_indices = (hidden, hidden - conv_channels, conv_channels)
        self.conv = nn.Conv2d(
            conv_channels, conv_channels, kernel_size=kernel_size, padding=kernel_size // 2, groups=conv_channels
        )
        self.fc2 = nn.Linear(hidden, dim)
        use_scale = isinstance(layer_scale, (int, float)) and not isinstance(layer_scale, bool)
        self.ls = LayerScale(dim, init_values=float(layer_scale)) if use_scale else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        ws = self.window_size
        if n != ws * ws:
            raise ValueError(f"G expects {ws * ws} tokens per window (window {ws}), got {n}")
        shortcut = x
        g, i, conv_in = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
        conv_in = conv_in.transpose(1, 2).reshape(b, -1, ws, ws)
        conv_out = self.conv(conv_in).flatten(2).transpose(1, 2)
        y = self.fc2(self.act(g) * torch.cat((i, conv_out), dim=-1))
        return shortcut + self.drop_path(self.ls(y))

    def extra_repr(self) -> str:
        hidden, _, conv_channels = self.split_indices
        return f"window_size={self.window_size}, hidden={hidden}, conv_channels={conv_channels}"


__all__ = ["GatedCNNBlock"]
