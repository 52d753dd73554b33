"""`Md` (Mamba-2 / SSD): the chunked scan against independent references, gradients, FLOPs, the module.

The plain reference below is written from the semantics of mamba-ssm's `ssd_minimal_discrete` and `segsum`
(github.com/state-spaces/mamba, mamba_ssm/modules/ssd_minimal.py, "Listing 1" of the Mamba-2 paper): the
same four steps as einsums over (batch, chunk, position, head), with the stable segment sum. The module
reference transcribes the unfused forward of `Mamba2` (mamba_ssm/modules/mamba2.py: split of in_proj
into z, xBC, dt; causal conv1d + SiLU; the SSD; D skip; gated RMSNorm with norm_before_gate=False).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from blocks.registry import BlockContext, build_block, get_block_type
from blocks.ssd import Mamba2Mixer
from blocks.ssd_scan import chunking, ssd, ssd_chunked, ssd_flops, ssd_path, ssd_sequential
from hybridlab.errors import ConfigError

TOLS = [(torch.float64, 1e-10), (torch.float32, 1e-5)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- independent reference (ssd_minimal semantics) ----------------------------------------------------
def _segsum(a: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = a[..., j+1] + ... + a[..., i] for j <= i, -inf above the diagonal (stable form)."""
    t = a.shape[-1]
    grid = a.unsqueeze(-1).expand(*a.shape, t)  # grid[..., i, j] = a[..., i]
    strict = torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=-1)
    sums = grid.masked_fill(~strict, 0).cumsum(-2)
    keep = torch.tril(torch.ones(t, t, dtype=torch.bool))
    return sums.masked_fill(~keep, float("-inf"))


def _ssd_minimal(X, A, B, C, block_len):
    """X (b, L, h, p) already times dt; A (b, L, h) already times dt; B, C (b, L, g, n). Returns y, final state."""
    b, length = X.shape[:2]
    c = length // block_len
    X, A, B, C = (t.reshape(b, c, block_len, *t.shape[2:]) for t in (X, A, B, C))
    A = A.permute(0, 3, 1, 2)  # b h c l
    A_cum = A.cumsum(-1)
    L = torch.exp(_segsum(A))
    y_diag = torch.einsum("bclgn,bcsgn,bhcls,bcshp->bclhp", C, B, L, X)
    decay_states = torch.exp(A_cum[..., -1:] - A_cum)
    states = torch.einsum("bclgn,bhcl,bclhp->bcghpn", B, decay_states, X)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    decay_chunk = torch.exp(_segsum(F.pad(A_cum[..., -1], (1, 0))))
    new_states = torch.einsum("bhzc,bcghpn->bzghpn", decay_chunk, states)
    states, final = new_states[:, :-1], new_states[:, -1]
    y_off = torch.einsum("bclgn,bcghpn,bhcl->bclhp", C, states, torch.exp(A_cum))
    return (y_diag + y_off).reshape(b, length, *X.shape[3:]), final


def _inputs(b, length, h, p, n, dtype):
    x = torch.randn(b, length, h, p, dtype=dtype)
    dt = F.softplus(torch.randn(b, length, h, dtype=dtype) - 1)
    A = -torch.exp(torch.rand(h, dtype=dtype))
    B = torch.randn(b, length, n, dtype=dtype)
    C = torch.randn(b, length, n, dtype=dtype)
    return x, dt, A, B, C


@pytest.mark.parametrize(("dtype", "tol"), TOLS)
@pytest.mark.parametrize("chunk", [4, 12])
def test_chunked_matches_ssd_minimal_and_sequential(dtype, tol, chunk):
    x, dt, A, B, C = _inputs(2, 12, 3, 4, 5, dtype)
    want, _ = _ssd_minimal(x * dt.unsqueeze(-1), A * dt, B.unsqueeze(2), C.unsqueeze(2), chunk)
    got = ssd_chunked(x, dt, A, B, C, chunk)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(ssd_sequential(x, dt, A, B, C), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("chunk", [1, 3, 5, 64])
def test_chunked_handles_ragged_lengths(chunk):
    x, dt, A, B, C = _inputs(2, 13, 2, 3, 4, torch.float64)
    torch.testing.assert_close(ssd_chunked(x, dt, A, B, C, chunk), ssd_sequential(x, dt, A, B, C), rtol=1e-10, atol=1e-10)


def test_chunking_is_balanced():
    assert chunking(196, 64) == (49, 4) and chunking(10, 4) == (4, 3) and chunking(5, 64) == (5, 1)
    assert chunking(7, 1) == (1, 7)


def test_chunked_gradcheck_float64():
    x, dt, A, B, C = _inputs(1, 7, 2, 2, 3, torch.float64)
    args = [t.clone().requires_grad_() for t in (x, dt, A, B, C)]
    assert torch.autograd.gradcheck(lambda *a: ssd_chunked(*a, chunk=3), args)


# -- module -----------------------------------------------------------------------------------------
def _mamba2_reference(m: Mamba2Mixer, u: torch.Tensor, chunk: int) -> torch.Tensor:
    """The unfused `Mamba2.forward` (ngroups 1, rmsnorm, norm_before_gate False) on m's parameters."""
    b, length, _ = u.shape
    d_in, n, h = m.d_inner, m.d_state, m.nheads
    z, xbc, dt = torch.split(u @ m.in_proj.weight.T, [d_in, d_in + 2 * n, h], dim=-1)
    conv = F.conv1d(xbc.transpose(1, 2), m.conv1d.weight, m.conv1d.bias, padding=m.d_conv - 1, groups=d_in + 2 * n)
    xbc = F.silu(conv[..., :length].transpose(1, 2))
    x, B, C = torch.split(xbc, [d_in, n, n], dim=-1)
    x = x.reshape(b, length, h, m.headdim)
    dt = F.softplus(dt + m.dt_bias)
    A = -torch.exp(m.A_log)
    y, _ = _ssd_minimal(x * dt.unsqueeze(-1), A * dt, B.unsqueeze(2), C.unsqueeze(2), chunk)
    y = (y + x * m.D[:, None]).reshape(b, length, d_in)
    g = y * F.silu(z)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5) * m.norm.weight
    return g @ m.out_proj.weight.T


def _randomized(dtype, **kw) -> Mamba2Mixer:
    m = Mamba2Mixer(8, d_state=4, headdim=4, **kw).to(dtype)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name not in ("A_log", "dt_bias"):
                p.copy_(torch.randn_like(p) * 0.4 + (1.0 if name in ("D", "norm.weight") else 0.0))
    return m


@pytest.mark.parametrize(("dtype", "tol"), TOLS)
def test_module_matches_mamba2_forward(dtype, tol):
    m = _randomized(dtype, chunk=4)
    u = torch.randn(2, 12, 8, dtype=dtype)
    torch.testing.assert_close(m(u), _mamba2_reference(m, u, chunk=4), rtol=tol, atol=tol)


def test_module_names_and_shapes_follow_mamba2():
    m = Mamba2Mixer(16, d_state=8, headdim=8)  # d_inner 32, 4 heads
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "in_proj.weight": (2 * 32 + 2 * 8 + 4, 16),
        "conv1d.weight": (32 + 16, 1, 4), "conv1d.bias": (32 + 16,),
        "dt_bias": (4,), "A_log": (4,), "D": (4,),
        "norm.weight": (32,), "out_proj.weight": (16, 32),
    }  # fmt: skip
    assert (-torch.exp(m.A_log) < 0).all() and m.A_log._no_weight_decay


def test_sequential_backend_and_paths_agree():
    m = _randomized(torch.float64, chunk=3)
    u = torch.randn(2, 10, 8, dtype=torch.float64)
    want = m(u)
    m.backend = "sequential"
    torch.testing.assert_close(m(u), want, rtol=1e-10, atol=1e-10)
    assert ssd_path("cpu") == "chunked"
    with pytest.raises(ValueError, match="SSD backend"):
        ssd(u, u, u, u, u, u, u, 4, backend="nope")


def test_registered_and_headdim_checked():
    bt = get_block_type("Md")
    assert bt.kind == "mixer" and bt.defaults()["d_state"] == 64
    blk = build_block("Md", {**bt.defaults(), "headdim": 8, "d_state": 4, "chunk": 4}, BlockContext(dim=8))
    x = torch.randn(2, 9, 8, requires_grad=True)
    blk(x).sum().backward()
    assert x.grad is not None and blk.mixer.A_log.grad is not None and blk.mixer.dt_bias.grad is not None
    with pytest.raises(ConfigError, match="not a multiple of headdim"):
        Mamba2Mixer(10, headdim=8)


# -- FLOPs ------------------------------------------------------------------------------------------
def test_flop_counter_sees_the_chunked_matmuls():
    m = Mamba2Mixer(8, d_state=4, headdim=4, chunk=4)  # d_inner 16, 4 heads, conv over 24 channels
    b, length = 2, 10  # 3 chunks, the last one padded
    with FlopCounterMode(display=False) as counter:
        m(torch.randn(b, length, 8))
    proj = b * length * 8 * (2 * 16 + 8 + 4) + b * length * 16 * 8
    conv = b * 24 * length * 4
    assert counter.get_total_flops() == 2 * (proj + conv) + ssd_flops(b, length, 4, 4, 4, 4)
    assert ssd_flops(1, 10, 4, 4, 4, 4) == 2 * (3 * 16 * 4 + 4 * 3 * 16 * 4 + 2 * 4 * 2 * 4 * 4 * 4)


def test_model_level_count_includes_ssd():
    from blocks.model import HybridNet
    from hybridlab.measure.flops import count_compute

    pattern = "C | Md[d_state=4,headdim=8,chunk=4]*2"
    model = HybridNet(pattern, dim=8, in_dim=8, num_heads=[1, 2], window_size=[4, 4], stem_stride=2, num_classes=3)
    counts = count_compute(model, 16, 3, device="cpu")  # stage 2: 4x4 map, one window of 16 tokens
    d_inner, heads, conv_ch = 32, 4, 32 + 8
    per_block = 2 * conv_ch * 16 * 4 + ssd_flops(1, 16, heads, 8, 4, 4)
    assert ssd_flops(1, 16, heads, 8, 4, 4) > 0 and d_inner == 2 * 16
    assert counts.flops == 2 * counts.macs + 2 * per_block
