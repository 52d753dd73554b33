"""MACs of every mixer equal a hand count: Linear/Conv2d layers plus the parameter matmuls (`extra_macs`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blocks.gated_cnn import GatedCNNBlock
from blocks.mixer import MambaVisionMixer
from blocks.parallel_head import ParallelHybridHead
from blocks.ss2d import SS2D
from blocks.ssd import Mamba2Mixer
from blocks.vim import BiMambaMixer
from hybridlab.measure.flops import count_compute, count_macs

SIDE = 4
TOKENS = SIDE * SIDE  # one 4x4 window


class OnTokens(nn.Module):
    """Feeds a (1, dim, 4, 4) "image" to a token mixer as (1, 16, dim), so the image-level counters apply."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x.flatten(2).transpose(1, 2))


def _macs(mixer: nn.Module, dim: int, device: str = "cpu") -> int:
    return count_macs(OnTokens(mixer).to(device), SIDE, in_chans=dim, device=device)


def test_ss2d_macs_count_the_four_directions_projections():
    # dim 8, ssm_ratio 2 -> d_inner 16; dt_rank ceil(8/16) = 1; d_state 4; 3x3 depthwise conv2d
    m = SS2D(8, d_state=4)
    per_token = (
        8 * 32  # in_proj: dim -> 2 * d_inner
        + 16 * 3 * 3  # depthwise conv2d, 3x3, on d_inner channels
        + 4 * 16 * (1 + 2 * 4)  # x_proj_weight: 4 directions x d_inner -> dt_rank + 2 * d_state
        + 4 * 1 * 16  # dt_projs_weight: 4 directions x dt_rank -> d_inner
        + 16 * 8  # out_proj: d_inner -> dim
    )
    assert m.extra_macs((1, TOKENS, 8)) == TOKENS * (4 * 16 * 9 + 4 * 16)
    assert _macs(m, 8) == TOKENS * per_token
    assert _macs(SS2D(8, d_state=4).to("meta"), 8, device="meta") == TOKENS * per_token


def test_ss2d_macs_agree_with_the_flop_counter():
    """Every S product is a Linear, a Conv2d or a parameter matmul: FlopCounterMode sees 2x the MACs."""
    counts = count_compute(OnTokens(SS2D(8, d_state=4, dt_rank=2)), SIDE, in_chans=8, device="cpu")
    assert counts.breakdown["matmul"] + counts.breakdown["conv"] == 2 * counts.macs


def test_parallel_head_macs_count_the_functional_dt_projection():
    # dim 16: 8 attention channels (2 heads), 8 SSM channels; dt_rank ceil(16/16) = 1; d_state 8
    m = ParallelHybridHead(16, num_heads=2, attn_ratio=0.5, d_state=8)
    per_token = (
        16 * 24  # qkv: dim -> 3 * d_attn
        + 16 * 16  # in_proj: dim -> 2 * d_ssm
        + 8 * (1 + 2 * 8)  # x_proj: d_ssm -> dt_rank + 2 * d_state
        + 1 * 8  # dt projection, a matmul on dt_proj.weight (extra_macs)
        + 16 * 16  # out_proj
    )  # the conv1d and the attention matmuls are not MACs (the paper's convention), only FLOPs
    assert _macs(m, 16) == TOKENS * per_token


def test_vim_macs_count_both_directions():
    m = BiMambaMixer(8, d_state=4)  # d_inner 16, dt_rank 1
    per_token = 8 * 32 + 2 * 16 * (1 + 2 * 4) + 2 * 1 * 16 + 16 * 8  # in_proj, x_proj(_b), dt_proj(_b), out_proj
    assert _macs(m, 8) == TOKENS * per_token


def test_mamba2_macs_are_its_projections():
    m = Mamba2Mixer(8, d_state=4, headdim=4, chunk=4)  # d_inner 16, 4 heads
    per_token = 8 * (2 * 16 + 2 * 4 + 4) + 16 * 8  # in_proj: z, xBC, dt; out_proj (SSD matmuls are FLOPs)
    assert _macs(m, 8) == TOKENS * per_token


def test_mambavision_mixer_macs_unchanged():
    m = MambaVisionMixer(8, d_state=4)  # d_inner 8, SSM branch 4, dt_rank 1
    per_token = 8 * 8 + 4 * (1 + 2 * 4) + 1 * 4 + 8 * 8  # in_proj, x_proj, dt_proj, out_proj
    assert _macs(m, 8) == TOKENS * per_token


def test_gated_cnn_macs():
    m = GatedCNNBlock(8, window_size=SIDE)  # hidden int(8/3 * 8) = 21, 8 conv channels, 7x7 depthwise
    per_token = 8 * 42 + 8 * 7 * 7 + 21 * 8  # fc1, conv, fc2
    assert _macs(m, 8) == TOKENS * per_token


@pytest.mark.parametrize("batch", [1, 3])
def test_extra_macs_scale_with_the_batch_of_windows(batch):
    m = SS2D(8, d_state=4)
    assert m.extra_macs((batch, TOKENS, 8)) == batch * m.extra_macs((1, TOKENS, 8))
