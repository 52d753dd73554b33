"""The standard MambaVision token block (official `Block`) that wraps any `mixer`-kind block."""

from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp
from torch import nn


class TokenBlock(nn.Module):
    """x + drop_path(gamma_1 * mixer(norm1(x))), then x + drop_path(gamma_2 * mlp(norm2(x))).

    Keys match the official `Block`: norm1, mixer.*, norm2, mlp.fc1/fc2 (timm Mlp, exact GELU), and
    gamma_1/gamma_2 only when `layer_scale` is a number. With mlp_ratio giving a hidden width of 0
    the MLP half (norm2, mlp, gamma_2) is left out, which makes mixer-only blocks expressible.
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        hidden = int(dim * mlp_ratio)
        self.has_mlp = hidden > 0
        if self.has_mlp:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(in_features=dim, hidden_features=hidden, act_layer=nn.GELU, drop=0.0)
        use_scale = isinstance(layer_scale, (int, float)) and not isinstance(layer_scale, bool)
        if use_scale:
            self.gamma_1 = nn.Parameter(float(layer_scale) * torch.ones(dim))
            if self.has_mlp:
                self.gamma_2 = nn.Parameter(float(layer_scale) * torch.ones(dim))
        else:
            self.gamma_1 = 1.0
            self.gamma_2 = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma_1 * self.mixer(self.norm1(x)))
        if self.has_mlp:
            x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
        return x


__all__ = ["TokenBlock"]
