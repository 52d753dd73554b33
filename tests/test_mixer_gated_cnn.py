"""`G` (MambaOut gated CNN block) against timm's real `GatedConvBlock`, plus its place in the grammar."""

from __future__ import annotations

import pytest
import torch
from timm.models.mambaout import GatedConvBlock

from blocks.gated_cnn import GatedCNNBlock
from blocks.registry import BlockContext, build_block, get_block_type
from hybridlab.errors import ConfigError


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _pair(dim: int, ws: int, dtype: torch.dtype, **kw) -> tuple[GatedCNNBlock, GatedConvBlock]:
    shared = {k: v for k, v in kw.items() if k != "layer_scale"}
    ls = kw.get("layer_scale")
    ours = GatedCNNBlock(dim, window_size=ws, layer_scale=ls, **shared).to(dtype).eval()
    ref = GatedConvBlock(dim, ls_init_value=ls, **shared).to(dtype).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ours.load_state_dict(ref.state_dict())  # strict: same names and shapes
    return ours, ref


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)]
)
@pytest.mark.parametrize(
    "kw",
    [{}, {"kernel_size": 3, "expansion_ratio": 2.0, "conv_ratio": 0.5, "layer_scale": 0.7}],
)
def test_matches_timm_gated_conv_block(dtype, tol, kw) -> None:
    dim, ws, windows = 12, 5, 3
    ours, ref = _pair(dim, ws, dtype, **kw)
    x = torch.randn(windows, ws * ws, dim, dtype=dtype)
    want = ref(x.reshape(windows, ws, ws, dim)).reshape(windows, ws * ws, dim)  # timm's block is NHWC
    torch.testing.assert_close(ours(x), want, rtol=tol, atol=tol)


def test_state_dict_names_and_shapes_follow_timm() -> None:
    ours = GatedCNNBlock(16, window_size=4, layer_scale=1e-5)
    ref = GatedConvBlock(16, ls_init_value=1e-5)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert "ls.gamma" not in GatedCNNBlock(16, window_size=4).state_dict()


def test_registered_as_token_block_and_trains() -> None:
    bt = get_block_type("G")
    assert bt.kind == "token" and {"kernel_size", "expansion_ratio", "conv_ratio", "window"} <= set(bt.options)
    blk = build_block("G", {**bt.defaults(), "kernel_size": 3}, BlockContext(dim=8, window_size=4, layer_scale=1e-2))
    x = torch.randn(2, 16, 8, requires_grad=True)
    blk(x).sum().backward()
    assert x.grad is not None and blk.conv.weight.grad is not None and blk.ls.gamma.grad is not None


def test_bad_conv_ratio_is_one_line() -> None:
    with pytest.raises(ConfigError, match="conv_ratio"):
        GatedCNNBlock(8, window_size=4, expansion_ratio=1.0, conv_ratio=2.0)
