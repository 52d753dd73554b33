"""Blocks C, M, A, the token-block wrapper and windows: official names/shapes, numerics, variants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from blocks.attention import Attention
from blocks.conv import ConvBlock
from blocks.mixer import MambaVisionMixer
from blocks.token_block import TokenBlock
from blocks.windows import in_windows, pad_to_window, window_partition, window_reverse
from hybridlab.errors import ConfigError


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomize(module: torch.nn.Module, scale: float = 0.3) -> None:
    """Non-trivial values everywhere (incl. dt bias, D, norms) so every term of a formula matters."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.log(torch.rand_like(p) * 3 + 0.5))
            else:
                p.copy_(torch.randn_like(p) * scale + (1.0 if name.endswith(("norm1.weight", "norm2.weight")) else 0.0))


# -- C -------------------------------------------------------------------------------------------
def test_conv_block_official_keys_and_formula():
    blk = ConvBlock(8).eval()
    assert list(blk.state_dict()) == [
        "conv1.weight", "conv1.bias",
        "norm1.weight", "norm1.bias", "norm1.running_mean", "norm1.running_var", "norm1.num_batches_tracked",
        "conv2.weight", "conv2.bias",
        "norm2.weight", "norm2.bias", "norm2.running_mean", "norm2.running_var", "norm2.num_batches_tracked",
    ]  # fmt: skip
    _randomize(blk)
    x = torch.randn(2, 8, 5, 7)
    y = blk.norm2(blk.conv2(F.gelu(blk.norm1(blk.conv1(x)), approximate="tanh")))
    torch.testing.assert_close(blk(x), x + y)


def test_conv_block_layer_scale_and_backward():
    blk = ConvBlock(8, drop_path=0.1, layer_scale=1e-5)
    assert blk.gamma.shape == (8,) and torch.allclose(blk.gamma, torch.full((8,), 1e-5))
    assert "gamma" not in ConvBlock(8, layer_scale=None).state_dict()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    blk(x).sum().backward()
    assert x.grad is not None and blk.conv1.weight.grad is not None and blk.gamma.grad is not None


# -- A -------------------------------------------------------------------------------------------
def test_attention_matches_manual_softmax_attention():
    attn = Attention(16, num_heads=4).eval()
    _randomize(attn)
    assert {k: tuple(v.shape) for k, v in attn.state_dict().items()} == {
        "qkv.weight": (48, 16), "qkv.bias": (48,), "proj.weight": (16, 16), "proj.bias": (16,)
    }  # fmt: skip
    x = torch.randn(3, 10, 16)
    q, k, v = attn.qkv(x).reshape(3, 10, 3, 4, 4).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-1, -2) * 4**-0.5).softmax(-1)
    want = attn.proj((weights @ v).transpose(1, 2).reshape(3, 10, 16))
    torch.testing.assert_close(attn(x), want, rtol=1e-5, atol=1e-5)
    assert "qkv.bias" not in Attention(16, num_heads=4, qkv_bias=False).state_dict()


# -- token block -----------------------------------------------------------------------------------
def test_token_block_keys_formula_and_layer_scale():
    blk = TokenBlock(16, Attention(16, 2), mlp_ratio=4, drop_path=0.0, layer_scale=None).eval()
    keys = list(blk.state_dict())
    assert keys == [
        "norm1.weight", "norm1.bias", "mixer.qkv.weight", "mixer.qkv.bias", "mixer.proj.weight", "mixer.proj.bias",
        "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    ]  # fmt: skip
    assert blk.mlp.fc1.weight.shape == (64, 16)
    _randomize(blk)
    x = torch.randn(2, 9, 16)
    h = x + blk.mixer(blk.norm1(x))
    want = h + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(h))))  # exact (erf) GELU
    torch.testing.assert_close(blk(x), want)

    scaled = TokenBlock(16, Attention(16, 2), layer_scale=1e-5, drop_path=0.2)
    assert [k for k in scaled.state_dict() if "gamma" in k] == ["gamma_1", "gamma_2"]
    x.requires_grad_(True)
    scaled.train()(x).sum().backward()
    assert scaled.gamma_1.grad is not None and x.grad is not None


# -- M: official layout and numerics -------------------------------------------------------------------
def test_mixer_official_names_and_shapes():
    m = MambaVisionMixer(320)  # T stage 3: h = 160, dt_rank = 20
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "A_log": (160, 8), "D": (160,), "in_proj.weight": (320, 320), "x_proj.weight": (36, 160),
        "dt_proj.weight": (160, 20), "dt_proj.bias": (160,), "out_proj.weight": (320, 320),
        "conv1d_x.weight": (160, 1, 3), "conv1d_z.weight": (160, 1, 3),
    }  # fmt: skip
    assert list(shapes)[:2] == ["A_log", "D"]
    assert m.A_log._no_weight_decay and m.D._no_weight_decay
    torch.testing.assert_close(m.A_log[3], torch.log(torch.arange(1.0, 9.0)))
    assert MambaVisionMixer(196 * 4).dt_rank == math.ceil(784 / 16) == 49  # from dim, not dim/2


def _naive_scan(u, delta, A, B, C, D):
    """selective_scan_ref's recurrence, written out step by step (float64)."""
    A, D = A.double(), D.double()
    b, d, length = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return torch.stack(ys, dim=-1) + D[None, :, None] * u


def _official_forward(m: MambaVisionMixer, hs: torch.Tensor) -> torch.Tensor:
    """The official MambaVisionMixer.forward transcribed literally (dt bias twice), generalised to the branches."""
    b, length, _ = hs.shape
    xz = (hs @ m.in_proj.weight.T).transpose(1, 2)
    x, z = (xz, None) if m.branch == "none" else xz.chunk(2, dim=1)
    A = -torch.exp(m.A_log.float())  # the official .float() casts, kept literally
    if m.conv == "causal":
        x = F.silu(F.conv1d(F.pad(x, (m.d_conv - 1, 0)), m.conv1d_x.weight, groups=x.shape[1]))
    else:
        x = F.silu(F.conv1d(x, m.conv1d_x.weight, padding="same", groups=x.shape[1]))
    if z is not None:
        z = F.silu(F.conv1d(z, m.conv1d_z.weight, padding="same", groups=z.shape[1]))
    x_dbl = x.transpose(1, 2).reshape(b * length, -1) @ m.x_proj.weight.T
    dt, Bm, Cm = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
    dt = (dt @ m.dt_proj.weight.T + m.dt_proj.bias).reshape(b, length, -1).transpose(1, 2)
    delta = F.softplus(dt + m.dt_proj.bias.float()[None, :, None])
    Bm = Bm.reshape(b, length, -1).transpose(1, 2)
    Cm = Cm.reshape(b, length, -1).transpose(1, 2)
    y = _naive_scan(x, delta, A, Bm, Cm, m.D.float())
    if m.branch == "concat":
        y = torch.cat([y, z], dim=1)
    elif m.branch == "gate":
        y = y * F.silu(F.conv1d(xz.chunk(2, dim=1)[1], m.conv1d_z.weight, padding="same", groups=z.shape[1]))
    return y.transpose(1, 2) @ m.out_proj.weight.T


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(
    "branch,conv,d_conv",
    [
        ("concat", "regular", 3), ("gate", "regular", 3), ("none", "regular", 3), ("none", "causal", 3),
        ("concat", "causal", 3), ("concat", "regular", 4), ("none", "causal", 4),
    ],
)  # fmt: skip
def test_mixer_matches_literal_official_forward(branch, conv, d_conv):
    m = MambaVisionMixer(32, branch=branch, conv=conv, d_conv=d_conv).double()
    _randomize(m)
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    torch.testing.assert_close(m(x), _official_forward(m, x), rtol=1e-9, atol=1e-9)


def test_mixer_forward_backward_float32():
    m = MambaVisionMixer(24, d_state=4, d_conv=4, expand=2)
    x = torch.randn(3, 16, 24, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# -- M: Table 4 variants ---------------------------------------------------------------------------------
def _mixer_params(dim, d_state, d_conv, expand, branch):
    """Parameter count of each variant, from the docstring's description (dt_rank = ceil(dim/16))."""
    inner, r = expand * dim, math.ceil(dim / 16)
    s = inner if branch == "none" else inner // 2
    ssm = s * (r + 2 * d_state) + (r * s + s) + s * d_state + s + s * d_conv  # x_proj, dt_proj, A_log, D, conv1d_x
    out_in = inner if branch == "concat" else s
    sym = 0 if branch == "none" else s * d_conv  # conv1d_z
    return dim * inner + ssm + sym + out_in * dim


@pytest.mark.parametrize("branch", ["concat", "gate", "none"])
@pytest.mark.parametrize("dim,d_state,d_conv,expand", [(320, 8, 3, 1), (48, 16, 4, 2)])
def test_variant_parameter_counts(branch, dim, d_state, d_conv, expand):
    with torch.device("meta"):
        m = MambaVisionMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand, branch=branch)
    assert sum(p.numel() for p in m.parameters()) == _mixer_params(dim, d_state, d_conv, expand, branch)
    if branch == "none":
        assert not hasattr(m, "conv1d_z")


def test_variant_widths_stay_comparable_as_documented():
    """Docstring claims at dim 320: gate -24% of the mixer (-5% of a block), none +5% (+1% of a block)."""
    official = _mixer_params(320, 8, 3, 1, "concat")
    assert official == 216_320
    mlp_and_norms = 2 * 320 * 1280 + 1280 + 320 + 4 * 320
    for branch, mixer_change, block_change in (("gate", -0.24, -0.05), ("none", 0.05, 0.01)):
        n = _mixer_params(320, 8, 3, 1, branch)
        assert abs((n - official) / official - mixer_change) < 0.01
        assert abs((n - official) / (official + mlp_and_norms) - block_change) < 0.005


def test_causal_conv_is_causal_and_regular_is_not():
    t = 6
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])  # change only the future of t
    for conv, causal in (("causal", True), ("regular", False)):
        m = MambaVisionMixer(16, conv=conv, branch="none").double()
        _randomize(m)
        before, after = m(x)[:, : t + 1], m(x2)[:, : t + 1]
        if causal:
            torch.testing.assert_close(before, after, rtol=0, atol=1e-12)
        else:
            assert (before[:, t] - after[:, t]).abs().max() > 1e-3  # 'same' padding sees t+1
            torch.testing.assert_close(before[:, :t], after[:, :t], rtol=0, atol=1e-12)


def test_mixer_rejects_odd_inner_width_for_two_branches():
    with pytest.raises(ConfigError, match="must be even"):
        MambaVisionMixer(15)
    MambaVisionMixer(15, branch="none")  # one branch: any width


# -- windows ---------------------------------------------------------------------------------------------
def test_window_partition_raster_order_and_round_trip():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    w = window_partition(x, 2)
    assert w.shape == (2 * 2 * 3, 4, 3)
    # window 1 of batch 0 is rows 0-1, cols 2-3; its tokens are in row-major order
    torch.testing.assert_close(w[1, :, 0], x[0, 0, 0:2, 2:4].reshape(-1))
    torch.testing.assert_close(w[3, :, 2], x[0, 2, 2:4, 0:2].reshape(-1))  # second window row
    torch.testing.assert_close(w[6], window_partition(x[1:], 2)[0])  # batch-major
    torch.testing.assert_close(window_reverse(w, 2, 4, 6), x)


def test_windows_pad_odd_sizes_and_crop_back():
    x = torch.randn(2, 5, 13, 11)
    padded, h, w = pad_to_window(x, 7)
    assert padded.shape == (2, 5, 14, 14) and (h, w) == (13, 11)
    assert padded[:, :, 13:].abs().sum() == 0 and padded[:, :, :, 11:].abs().sum() == 0
    seen = []

    def fn(t):
        seen.append(t.shape)
        return t * 2

    out = in_windows(x, 7, fn)
    assert seen == [torch.Size([2 * 4, 49, 5])]
    torch.testing.assert_close(out, x * 2)
    # a window larger than the map is one zero-padded global window
    seen.clear()
    in_windows(x, 16, fn)
    assert seen == [torch.Size([2, 256, 5])]


def test_windowed_attention_mixes_only_inside_windows():
    attn = Attention(4, 1).eval()
    x = torch.randn(1, 4, 8, 8)
    y = in_windows(x, 4, lambda t: attn(t.contiguous()))
    x2 = x.clone()
    x2[:, :, 4:, 4:] += 1.0  # bottom-right window only
    y2 = in_windows(x2, 4, lambda t: attn(t.contiguous()))
    torch.testing.assert_close(y[:, :, :4], y2[:, :, :4])
    torch.testing.assert_close(y[:, :, :, :4], y2[:, :, :, :4])
    assert not torch.allclose(y[:, :, 4:, 4:], y2[:, :, 4:, 4:])
