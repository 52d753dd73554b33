"""`H` (parallel attention + selective-scan head): shapes, both branches learn, width split, determinism."""

from __future__ import annotations

import pytest
import torch

from blocks.parallel_head import ParallelHybridHead
from blocks.registry import BlockContext, build_block, get_block_type
from blocks.scan import scan_backend
from hybridlab.errors import ConfigError


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_shapes_and_width_split():
    h = ParallelHybridHead(16, num_heads=2, attn_ratio=0.25)
    assert (h.d_attn, h.d_ssm, h.head_dim) == (4, 12, 2)
    assert h.qkv.weight.shape == (12, 16) and h.in_proj.weight.shape == (24, 16)
    assert h.beta_attn.shape == (4,) and h.beta_ssm.shape == (12,) and h.out_proj.weight.shape == (16, 16)
    assert h(torch.randn(3, 9, 16)).shape == (3, 9, 16)


def test_formula_matches_branches_by_hand():
    h = ParallelHybridHead(8, num_heads=2, attn_ratio=0.5).double()
    with torch.no_grad():
        h.beta_attn.copy_(torch.randn(4))
        h.beta_ssm.copy_(torch.randn(4))
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    q, k, v = h.qkv(x).reshape(2, 5, 3, 2, 2).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-1, -2)) * 2**-0.5).softmax(-1) @ v
    attn = attn.transpose(1, 2).reshape(2, 5, 4)
    ssm = h._ssm(x)
    with scan_backend("reference"):
        torch.testing.assert_close(h._ssm(x), ssm, rtol=1e-10, atol=1e-10)

    def rms(t):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6)

    want = h.out_proj(torch.cat([h.beta_attn * rms(attn), h.beta_ssm * rms(ssm)], -1))
    torch.testing.assert_close(h(x), want, rtol=1e-10, atol=1e-10)


def test_gradients_reach_both_branches():
    blk = build_block("H", {**get_block_type("H").defaults(), "d_state": 4}, BlockContext(dim=16, num_heads=2))
    x = torch.randn(2, 9, 16, requires_grad=True)
    blk(x).square().mean().backward()
    mixer = blk.mixer
    for name in ("qkv.weight", "in_proj.weight", "x_proj.weight", "dt_proj.weight", "A_log", "D", "beta_attn", "beta_ssm"):
        grad = mixer.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("dim", "heads", "ratio", "match"),
    [(16, 3, 0.5, "not divisible by num_heads 3"), (16, 2, 0.01, "leaves no channels"), (8, 1, 0.99, "leaves no")],
)
def test_attn_ratio_validation_is_one_line(dim, heads, ratio, match):
    with pytest.raises(ConfigError, match=match) as info:
        ParallelHybridHead(dim, num_heads=heads, attn_ratio=ratio)
    assert "\n" not in str(info.value) and "H" in str(info.value)


def test_deterministic_output():
    def run() -> torch.Tensor:
        torch.manual_seed(3)
        h = ParallelHybridHead(16, num_heads=4, attn_ratio=0.5)
        return h(torch.randn(2, 16, 16))

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)
    torch.manual_seed(3)
    h = ParallelHybridHead(16, num_heads=4, attn_ratio=0.5).double()
    x = torch.randn(3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(h(x[1:2]), h(x)[1:2], rtol=1e-12, atol=1e-12)  # rows are independent


def test_model_count_includes_scan_and_attention():
    from blocks.model import HybridNet
    from blocks.scan import scan_flops
    from hybridlab.measure.flops import count_compute_fresh, sdpa_flops

    counts = count_compute_fresh(
        lambda: HybridNet("C | H*2", dim=8, in_dim=8, num_heads=[1, 2], window_size=[4, 4], stem_stride=2), 16
    )  # stage 2: width 16 split 8 attention (2 heads) + 8 SSM, one window of 16 tokens
    assert counts.breakdown["scan"] == 2 * scan_flops(1, 8, 16, 8, with_D=True, with_z=True)
    q = torch.empty(1, 2, 16, 4)
    assert counts.breakdown["attention"] == 2 * sdpa_flops(q, q, q)


def test_bench_records_the_scans_a_mixer_makes():
    from blocks.bench_mixers import describe_path, record, reference_mode, scan_only
    from blocks.ssd import Mamba2Mixer

    head = ParallelHybridHead(8, num_heads=2)
    rec = record(head, torch.randn(2, 5, 8))
    assert len(rec.scan_calls) == 1 and not rec.has_ssd and rec.scans
    assert describe_path(rec)[0].startswith("scan ")
    scan_only(rec, reference=True)()  # the replay runs forward and backward
    ssd_mixer = Mamba2Mixer(8, d_state=4, headdim=4, chunk=2)
    rec = record(ssd_mixer, torch.randn(2, 5, 8))
    assert rec.has_ssd and not rec.scan_calls and describe_path(rec)[0] == "ssd chunked"
    with reference_mode(ssd_mixer):
        assert ssd_mixer.backend == "sequential"
    assert ssd_mixer.backend == "auto"
