"""Non-overlapping windows, exactly as the official MambaVision code cuts them.

Token blocks run on (batch * windows, window * window, channels). The order matters for weight
compatibility: the 1-D conv and the selective scan see the tokens of a window in raster
(row-major) order, and windows are ordered (batch, window row, window column). Maps whose sides
are not multiples of the window are zero-padded on the right and bottom and cropped back after
the blocks; padded tokens take part in mixing, as in the official code. A window at least as
large as the map therefore mixes the whole map in one window (global attention / one scan).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * H/ws * W/ws, ws*ws, C); H and W must be multiples of `window_size`."""
    b, c, h, w = x.shape
    ws = window_size
    x = x.view(b, c, h // ws, ws, w // ws, ws)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, ws*ws, C) -> (B, C, height, width)."""
    ws = window_size
    num_windows = (height // ws) * (width // ws)
    b = windows.shape[0] // num_windows
    c = windows.shape[-1]
    x = windows.reshape(b, height // ws, width // ws, ws, ws, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, height, width)


def pad_to_window(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, int, int]:
    """Zero-pad (right, bottom) so both sides are multiples of the window; returns (x, H, W) of the input."""
    _, _, h, w = x.shape
    pad_r = (window_size - w % window_size) % window_size
    pad_b = (window_size - h % window_size) % window_size
    if pad_r or pad_b:
        x = F.pad(x, (0, pad_r, 0, pad_b))
    return x, h, w


def in_windows(x: torch.Tensor, window_size: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Run `fn` on the windows of an NCHW map: pad, partition, fn, reverse, crop."""
    padded, h, w = pad_to_window(x, window_size)
    hp, wp = padded.shape[-2:]
    out = window_reverse(fn(window_partition(padded, window_size)), window_size, hp, wp)
    if hp != h or wp != w:
        out = out[:, :, :h, :w].contiguous()
    return out


__all__ = ["in_windows", "pad_to_window", "window_partition", "window_reverse"]
