"""`S` (VMamba's SS2D): names, official numerics, gradients, FLOP counts (with `V`), registration, CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from blocks import ModelSpec, block_types, parse
from blocks.model import HybridNet
from blocks.scan import scan_flops
from blocks.ss2d import SS2D, cross_merge, cross_scan
from hybridlab.cli import main as cli_main
from hybridlab.errors import ConfigError, PatternError
from hybridlab.measure import count_compute


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomize(m: torch.nn.Module, scale: float = 0.3) -> None:
    """Non-trivial values everywhere (norm, conv bias, dt biases, Ds) so every term of the formula matters."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name == "A_logs":
                p.copy_(torch.log(torch.rand_like(p) * 3 + 0.5))
            else:
                p.copy_(torch.randn_like(p) * scale + (1.0 if name == "out_norm.weight" else 0.0))


# -- the reference: VMamba's SS2D forward, transcribed ------------------------------------------------------
def _plain_scan(u, delta, A, B, C, D):
    """mamba-ssm's selective_scan_ref recurrence, B/C (b, n, L), no z: one step at a time."""
    b, d, length = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return torch.stack(ys, dim=-1) + D[None, :, None] * u


def _orders(h: int, w: int) -> list[torch.Tensor]:
    """Raster index visited at each step of the four scans: row-major, column-major, each reversed."""
    grid = torch.arange(h * w).reshape(h, w)
    rows, cols = grid.flatten(), grid.T.flatten()
    return [rows, cols, rows.flip(0), cols.flip(0)]


def _vmamba_forward(m: SS2D, hs: torch.Tensor) -> torch.Tensor:
    """SS2D.forwardv2 + forward_corev2 (MzeroMiko/VMamba, classification/models/vmamba.py), channels-last:
    in_proj -> x, z; z = silu(z); x -> conv2d (bias, 'same') -> silu; direction k reads the map in its order,
    x_dbl = x_proj_weight[k] @ x, dt = dt_projs_weight[k] @ dt, delta = softplus(dt + dt_projs_bias[k]),
    A = -exp(A_logs[k]), D = Ds[k]; scan; cross-merge sums the four outputs back at their raster positions;
    out_norm over channels; * z; out_proj. Written per direction with index maps (no cross-scan tensor)."""
    b, length, _ = hs.shape
    side = int(length**0.5)
    d, r, n = m.d_inner, m.dt_rank, m.d_state
    xz = hs @ m.in_proj.weight.T
    x, z = xz[..., :d], F.silu(xz[..., d:])
    x = x.reshape(b, side, side, d).permute(0, 3, 1, 2)
    if m.d_conv > 1:
        x = F.conv2d(x, m.conv2d.weight, m.conv2d.bias, padding=(m.d_conv - 1) // 2, groups=d)
    x = F.silu(x).reshape(b, d, length)
    y = torch.zeros_like(x)
    for k, order in enumerate(_orders(side, side)):
        xk = x[:, :, order]  # (b, d, L) in direction k's order
        dbl = torch.einsum("cd,bdl->bcl", m.x_proj_weight[k], xk)
        dt = torch.einsum("dr,brl->bdl", m.dt_projs_weight[k], dbl[:, :r])
        delta = F.softplus(dt + m.dt_projs_bias[k][None, :, None])
        A = -torch.exp(m.A_logs[k * d : (k + 1) * d])
        yk = _plain_scan(xk, delta, A, dbl[:, r : r + n], dbl[:, r + n :], m.Ds[k * d : (k + 1) * d])
        y[:, :, order] += yk
    y = F.layer_norm(y.transpose(1, 2), (d,), m.out_norm.weight, m.out_norm.bias, m.out_norm.eps)
    return (y * z) @ m.out_proj.weight.T


# -- names and shapes ---------------------------------------------------------------------------------------
def test_ss2d_names_and_shapes():
    m = SS2D(32)  # SS2D defaults: d_inner 64, d_state 16, d_conv 3, dt_rank 2
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    want = {
        "x_proj_weight": (4, 34, 64), "dt_projs_weight": (4, 64, 2), "dt_projs_bias": (4, 64),
        "A_logs": (256, 16), "Ds": (256,), "out_norm.weight": (64,), "out_norm.bias": (64,),
        "in_proj.weight": (128, 32), "conv2d.weight": (64, 1, 3, 3), "conv2d.bias": (64,),
        "out_proj.weight": (32, 64),
    }  # fmt: skip
    assert shapes == want and list(shapes) == list(want)
    assert m.A_logs._no_weight_decay and m.Ds._no_weight_decay
    torch.testing.assert_close(m.A_logs[200], torch.log(torch.arange(1.0, 17.0)))
    assert "conv2d.weight" not in SS2D(8, d_conv=1).state_dict()  # VMamba: d_conv < 2 means no conv
    assert SS2D(32, dt_rank=5).dt_projs_weight.shape == (4, 64, 5)
    with pytest.raises(ConfigError, match="odd"):
        SS2D(8, d_conv=4)
    with pytest.raises(ConfigError, match="square"):
        SS2D(8)(torch.randn(1, 6, 8))


def test_cross_scan_and_merge_are_adjoint():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    ys = torch.randn(2, 4, 3, 20, dtype=torch.float64)
    lhs = (cross_scan(x) * ys).sum()
    rhs = (x.flatten(2) * cross_merge(ys.view(2, 4, 3, 4, 5))).sum()
    torch.testing.assert_close(lhs, rhs)
    assert torch.equal(cross_scan(x)[:, 1, :, 1], x[:, :, 1, 0])  # column-major: second step is row 1, col 0


# -- exactness ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d_conv,ssm_ratio,side", [(3, 2.0, 3), (1, 1.0, 4), (5, 1.5, 2)])
def test_ss2d_matches_official_forward_float64(d_conv, ssm_ratio, side):
    m = SS2D(8, d_state=3, d_conv=d_conv, ssm_ratio=ssm_ratio).double()
    _randomize(m)
    x = torch.randn(2, side * side, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), _vmamba_forward(m, x), rtol=1e-10, atol=1e-10)


def test_ss2d_matches_official_forward_and_gradients_float32():
    m = SS2D(8, d_state=4)
    _randomize(m)
    ref = SS2D(8, d_state=4)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 9, 8)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y, want = m(x1), _vmamba_forward(ref, x2)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    want.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_ss2d_gradcheck_float64():
    """Input and parameter gradients of the fast path (one scan, grouped B/C) against finite differences."""
    m = SS2D(4, d_state=2, ssm_ratio=0.5).double()
    _randomize(m)
    x = torch.randn(1, 4, 4, dtype=torch.float64, requires_grad=True)
    names = ("A_logs", "dt_projs_bias", "Ds")  # the rest: checked against the reference in float32 above
    params = {n: p.detach().clone().requires_grad_(True) for n, p in m.named_parameters() if n in names}

    def fn(inp, *values):
        return torch.func.functional_call(m, dict(zip(params, values)), (inp,))

    assert torch.autograd.gradcheck(fn, (x, *params.values()), eps=1e-6, atol=1e-7)


# -- FLOPs, registration, training, CLI ----------------------------------------------------------------------
TINY = dict(dim=8, num_heads=[1, 1, 1, 1], window_size=[4, 4, 4, 2], stem_stride=2, num_classes=3)


def test_scan_flops_counted_for_v_and_s():
    """`C | C | V*2 | S*2` at 32 px: stage 3 is 4x4 (one window, width 32), stage 4 is 2x2 (width 64)."""
    spec = ModelSpec.create("C | C | V*2 | S[d_state=4]*2", **TINY)
    counts = count_compute(HybridNet(spec=spec), img_size=32)
    v_scan = scan_flops(1, 2 * 64, 16, 16, with_D=True, with_z=True)  # two directions of d_inner 64, N 16
    s_scan = scan_flops(1, 4 * 128, 4, 4, with_D=True, with_z=False)  # four directions of d_inner 128, N 4
    assert counts.breakdown["scan"] == 2 * v_scan + 2 * s_scan
    assert s_scan == 4 * scan_flops(1, 128, 4, 4)  # SS2D scans four times
    meta = count_compute(HybridNet(spec=spec).to("meta"), img_size=32)
    assert meta.breakdown["scan"] == counts.breakdown["scan"] and meta.flops == counts.flops


@pytest.mark.parametrize("dt_rank", [0, 1])
def test_ss2d_total_flops_match_formula(dt_rank):
    """Every term is counted: projections (the stacked x/dt projections too, even at rank 1), conv2d, scan."""
    b, length, dim, n = 2, 16, 40, 4
    m = SS2D(dim, d_state=n, dt_rank=dt_rank)
    d, r = m.d_inner, m.dt_rank
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(torch.randn(b, length, dim))
    matmuls = dim * 2 * d + 4 * d * (r + 2 * n) + 4 * r * d + d * dim  # in_proj, x_proj, dt_projs, out_proj
    want = 2 * b * length * (matmuls + 9 * d) + scan_flops(b, 4 * d, length, n)  # + 3x3 depthwise conv2d
    assert counter.get_total_flops() == want


def test_ss2d_registered_and_trains_a_step():
    bt = block_types()["S"]
    assert bt.kind == "mixer"
    assert set(bt.options) == {"d_state", "ssm_ratio", "d_conv", "dt_rank", "window"}
    with pytest.raises(PatternError, match="'d_conv' of block 'S'"):
        parse("C | S[d_conv=4]")  # the conv2d keeps the map's size only with an odd kernel
    spec = ModelSpec.create("C | C | V[d_state=2]*2 | S[d_state=2,ssm_ratio=1.0]*2", **TINY)
    model = HybridNet(spec=spec)
    loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "mixer" in n}
    assert any(".x_proj_weight" in n for n in grads) and any("x_proj_b" in n for n in grads)
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())


def test_show_lists_v_and_s(capsys):
    args = ["show", "C | C | V*2 | S[d_state=4]*2", "--dim", "8", "--num-heads", "1,1,1,1",
            "--window-size", "4,4,4,2", "--stem-stride", "2", "--img-size", "32", "--json"]  # fmt: skip
    assert cli_main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["canonical"] == "C | C | V*2 | S[d_state=4]*2"
    assert [s["pattern"] for s in info["stages"]][2:] == ["V*2", "S[d_state=4]*2"]
