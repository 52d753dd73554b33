"""`V` (Vim's bidirectional Mamba): names, official numerics, gradients, FLOP count, registration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from blocks import ModelSpec, block_types
from blocks.model import HybridNet
from blocks.scan import scan_flops
from blocks.vim import BiMambaMixer
from hybridlab.errors import ConfigError
from hybridlab.measure import count_compute


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomize(m: torch.nn.Module, scale: float = 0.3) -> None:
    """Non-trivial values everywhere (conv biases, dt biases, D) so every term of the formula matters."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "A_" in name and name.endswith("log"):
                p.copy_(torch.log(torch.rand_like(p) * 3 + 0.5))
            else:
                p.copy_(torch.randn_like(p) * scale)


# -- the reference: Vim's forward, transcribed ----------------------------------------------------------
def _plain_scan(u, delta, A, B, C, D, z):
    """mamba-ssm's selective_scan_ref recurrence with B/C of shape (b, n, L), one step at a time."""
    b, d, length = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return (torch.stack(ys, dim=-1) + D[None, :, None] * u) * F.silu(z)


def _vim_direction(m, xz, conv, x_proj, dt_proj, A_log, D):
    """One direction of `mamba_inner_fn_no_out_proj` (hustvl/Vim, mamba-1p1p1/mamba_ssm/ops/
    selective_scan_interface.py): causal conv1d with bias + SiLU, x_proj on (b l) d, dt = W_dt @ dt^T without
    bias, the bias as delta_bias under softplus, input-dependent B/C, scan with D skip and silu(z) gate."""
    length = xz.shape[-1]
    x, z = xz.chunk(2, dim=1)
    x = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=conv.weight.shape[-1] - 1, groups=x.shape[1])[..., :length])
    x_dbl = x.transpose(1, 2).reshape(-1, x.shape[1]) @ x_proj.weight.T  # ((b l), r + 2n)
    r, n = dt_proj.weight.shape[1], A_log.shape[1]
    dt = (dt_proj.weight @ x_dbl[:, :r].T).reshape(-1, x.shape[0], length).transpose(0, 1)  # (b, d, l)
    delta = F.softplus(dt + dt_proj.bias[None, :, None])
    Bm = x_dbl[:, r : r + n].reshape(x.shape[0], length, n).transpose(1, 2)
    Cm = x_dbl[:, r + n :].reshape(x.shape[0], length, n).transpose(1, 2)
    return _plain_scan(x, delta, -torch.exp(A_log), Bm, Cm, D, z)


def _vim_forward(m: BiMambaMixer, hs: torch.Tensor, divide_out: bool) -> torch.Tensor:
    """`Mamba.forward` with bimamba_type="v2" (hustvl/Vim, mamba-1p1p1/mamba_ssm/modules/mamba_simple.py):
    xz = W_in @ hs as (b, 2d, l); forward on xz, backward on xz.flip(-1) with the *_b parameters; then
    out_proj((out + out_b.flip(-1)) [/ 2 when if_devide_out])."""
    xz = (hs @ m.in_proj.weight.T).transpose(1, 2)
    out = _vim_direction(m, xz, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D)
    out_b = _vim_direction(m, xz.flip([-1]), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b)
    y = (out + out_b.flip([-1])).transpose(1, 2)
    if divide_out:
        y = y / 2
    return y @ m.out_proj.weight.T


# -- names and shapes -----------------------------------------------------------------------------------
def test_vim_names_and_shapes():
    m = BiMambaMixer(32)  # Vim defaults: d_inner 64, d_state 16, d_conv 4, dt_rank 2
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    direction = {
        "conv1d.weight": (64, 1, 4), "conv1d.bias": (64,), "x_proj.weight": (34, 64),
        "dt_proj.weight": (64, 2), "dt_proj.bias": (64,),
    }  # fmt: skip
    want = {"A_log": (64, 16), "D": (64,), "A_b_log": (64, 16), "D_b": (64,), "in_proj.weight": (128, 32)}
    want |= direction | {k.replace(".", "_b.", 1): v for k, v in direction.items()} | {"out_proj.weight": (32, 64)}
    assert shapes == want
    assert list(shapes) == list(want)  # the order of Vim's state_dict (direct parameters, then modules)
    assert m.A_b_log._no_weight_decay and m.D_b._no_weight_decay
    torch.testing.assert_close(m.A_b_log[5], torch.log(torch.arange(1.0, 17.0)))
    with pytest.raises(ConfigError, match="combine"):
        BiMambaMixer(8, combine="max")


# -- exactness ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("combine", ["average", "sum"])
@pytest.mark.parametrize("d_conv,expand", [(4, 2), (3, 1)])
def test_vim_matches_official_forward_float64(combine, d_conv, expand):
    m = BiMambaMixer(16, d_state=4, d_conv=d_conv, expand=expand, combine=combine).double()
    _randomize(m)
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    want = _vim_forward(m, x, divide_out=combine == "average")
    torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-10)


def test_vim_matches_official_forward_and_gradients_float32():
    m = BiMambaMixer(16, d_state=4)
    _randomize(m)
    ref = BiMambaMixer(16, d_state=4)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 12, 16)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y, want = m(x1), _vim_forward(ref, x2, divide_out=True)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    want.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_vim_directions_are_distinct():
    """The backward direction uses its own weights and reversed order: changing them changes the output."""
    m = BiMambaMixer(8, d_state=2, d_conv=2, expand=1).double()
    _randomize(m)
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    before = m(x)
    with torch.no_grad():
        m.x_proj_b.weight.mul_(2.0)
    assert not torch.allclose(before, m(x))
    torch.testing.assert_close(m(x), _vim_forward(m, x, divide_out=True), rtol=1e-10, atol=1e-10)


def test_vim_gradcheck_float64():
    """Input and parameter gradients of the fast path (one grouped scan) against finite differences."""
    m = BiMambaMixer(4, d_state=2, d_conv=2, expand=1).double()
    _randomize(m)
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    names = ("A_b_log", "dt_proj_b.bias", "conv1d.weight", "D_b", "x_proj.weight")
    params = {n: p.detach().clone().requires_grad_(True) for n, p in m.named_parameters() if n in names}

    def fn(inp, *values):
        return torch.func.functional_call(m, dict(zip(params, values)), (inp,))

    assert torch.autograd.gradcheck(fn, (x, *params.values()), eps=1e-6, atol=1e-7)


# -- FLOPs, registration, training -------------------------------------------------------------------------
def test_vim_counted_scan_flops_match_formula():
    dim, length = 16, 16  # a 4x4 map in one 4x4 window
    spec = ModelSpec.create("C | V[d_state=4]", dim=dim, num_heads=[1, 1], window_size=[4, 4], stem_stride=2,
                            num_classes=3)  # fmt: skip
    model = HybridNet(spec=spec)
    counts = count_compute(model, img_size=16)
    d_inner = 2 * (2 * dim)  # expand 2 on stage 2's width
    want = scan_flops(1, 2 * d_inner, length, 4, with_D=True, with_z=True)
    assert want == 2 * scan_flops(1, d_inner, length, 4, with_D=True, with_z=True)  # two directions
    assert counts.breakdown["scan"] == want


def test_vim_total_flops_match_formula():
    """Every term is counted: projections of both directions, both causal conv1d, and both scans."""
    b, length, dim, n = 2, 16, 16, 4
    m = BiMambaMixer(dim, d_state=n)
    d, r = m.d_inner, m.dt_rank
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(torch.randn(b, length, dim))
    matmuls = dim * 2 * d + 2 * (d * (r + 2 * n) + r * d) + d * dim  # in_proj, x_proj(_b), dt_proj(_b), out_proj
    want = 2 * b * length * (matmuls + 2 * d * m.d_conv) + scan_flops(b, 2 * d, length, n, with_z=True)
    assert counter.get_total_flops() == want


def test_vim_registered_and_trains_a_step():
    bt = block_types()["V"]
    assert bt.kind == "mixer"
    assert set(bt.options) == {"d_state", "expand", "d_conv", "combine", "window"}
    assert bt.defaults()["combine"] == "average"
    spec = ModelSpec.create("C | V[d_state=2,expand=1]*2", dim=8, num_heads=[1, 1], window_size=[4, 4],
                            stem_stride=2, num_classes=3)  # fmt: skip
    model = HybridNet(spec=spec)
    x = torch.randn(2, 3, 16, 16)
    loss = F.cross_entropy(model(x), torch.tensor([0, 2]))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "mixer" in n}
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())


def test_official_model_init_keeps_vim_and_parallel_head_dt_biases() -> None:
    """MambaVision's from-scratch init zeroes every Linear bias (its own M's dt bias too); V and H keep theirs."""
    import torch

    from blocks.spec import ModelSpec

    torch.manual_seed(0)
    model = ModelSpec.create("C | V H M", dim=16, in_dim=8, num_heads=[1, 2], window_size=[4, 4]).build()
    block_v, block_h, block_m = model.levels[1].blocks
    for proj in (block_v.mixer.dt_proj, block_v.mixer.dt_proj_b, block_h.mixer.dt_proj):
        assert proj.bias.abs().min() > 0  # inverse-softplus of dt in [1e-3, 0.1]: never 0
    assert torch.count_nonzero(block_m.mixer.dt_proj.bias) == 0  # the official quirk, kept for M
