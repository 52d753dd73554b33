"""`C`: the MambaVision conv block (official `ConvBlock`), with the official parameter names."""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn


class ConvBlock(nn.Module):
    """conv3x3-BN-GELU(tanh)-conv3x3-BN, optional layer scale `gamma`, DropPath, residual add.

    Keys: conv1.{weight,bias}, norm1.*, conv2.{weight,bias}, norm2.*, and gamma only when
    `layer_scale` is a number (no released MambaVision model sets it). No activation after the add.
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=kernel_size, stride=1, padding=kernel_size // 2)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.act1 = nn.GELU(approximate="tanh")
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=kernel_size, stride=1, padding=kernel_size // 2)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        self.layer_scale = isinstance(layer_scale, (int, float)) and not isinstance(layer_scale, bool)
        if self.layer_scale:
            self.gamma = nn.Parameter(float(layer_scale) * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.layer_scale:
            x = x * self.gamma.view(1, -1, 1, 1)
        return shortcut + self.drop_path(x)


__all__ = ["ConvBlock"]
