"""Selective scan: reference semantics, backend selection, parity with the reference and block layouts."""

from __future__ import annotations

import pytest
import torch
from conftest import IMPLEMENTATIONS, leaf, make_inputs, refuses, run_scan, scalar_scan, small_blocks

import blocks.scan.blocked as blocked
import blocks.scan.blocked_core as blocked_core
from blocks.scan import available_backends, resolve_backend, scan_backend, selective_scan
from hybridlab.errors import ConfigError

# ---------------------------------------------------------------- reference semantics


@pytest.mark.parametrize("bc", ["dn", "bnl", "bgnl"])
@pytest.mark.parametrize("softplus", [False, True])
def test_reference_matches_scalar_loop(bc, softplus):
    args = make_inputs(bc=bc, seed=1)
    out, last = selective_scan(*args, delta_softplus=softplus, return_last_state=True, backend="reference")
    want_out, want_last = scalar_scan(*args, softplus)
    torch.testing.assert_close(out, want_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, want_last, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["reference", "blocked", "compiled", "fast"])
def test_dtypes(backend):
    u, delta, A, B, C, D, z, bias = make_inputs(dtype=torch.float32, seed=2)
    out, last = selective_scan(u.half(), delta, A, B, C, D, backend=backend, return_last_state=True)
    assert out.dtype == torch.float16 and last.dtype == torch.float32
    ref = selective_scan(u.half().float(), delta, A, B, C, D, backend="reference")
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
    assert selective_scan(u.bfloat16(), delta.bfloat16(), A, B, C, backend=backend).dtype == torch.bfloat16
    assert selective_scan(u.double(), delta, A, B, C, backend=backend).dtype == torch.float64


@pytest.mark.parametrize(
    "bad",
    [
        dict(u=torch.zeros(2, 4)),
        dict(delta=torch.zeros(2, 4, 6)),
        dict(A=torch.zeros(5, 3)),
        dict(B=torch.zeros(2, 3, 6)),
        dict(C=torch.zeros(2, 3, 3, 5)),  # 4 channels do not split into 3 groups
        dict(D=torch.zeros(3)),
        dict(z=torch.zeros(2, 4, 4)),
        dict(delta_bias=torch.zeros(2)),
        dict(A=torch.zeros(4, 3, dtype=torch.complex64)),
    ],
)
def test_bad_shapes_raise_one_line_config_error(bad):
    u, delta, A, B, C, D, z, bias = make_inputs(dtype=torch.float32)
    kw = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias)
    kw.update(bad)
    with pytest.raises(ConfigError) as err:
        selective_scan(**kw)
    assert "\n" not in str(err.value) and str(err.value).startswith("selective_scan:")


# ---------------------------------------------------------------- backend selection


def test_auto_and_env_override(monkeypatch):
    monkeypatch.delenv("HYBRIDLAB_SCAN_BACKEND", raising=False)
    assert {"reference", "fast"} <= set(available_backends("cpu"))
    assert resolve_backend("auto", "cpu") == "fast"
    assert resolve_backend("reference", "cpu") == "reference"
    monkeypatch.setenv("HYBRIDLAB_SCAN_BACKEND", "reference")
    assert resolve_backend("auto", "cpu") == "reference"
    assert resolve_backend("fast", "cpu") == "fast"  # an explicit name beats the environment
    with scan_backend("fast"):  # the context manager beats the environment
        assert resolve_backend("auto", "cpu") == "fast"
        with scan_backend("auto"):
            assert resolve_backend("auto", "cpu") == "fast"  # innermost wins; auto means the device default
    assert resolve_backend("auto", "cpu") == "reference"


def test_env_override_changes_the_backend_that_runs(monkeypatch):
    calls = []
    from blocks.scan import backends

    real = backends._implemented

    def spy():
        impls = real()
        return {name: (lambda *a, _n=name, _f=fn: calls.append(_n) or _f(*a)) for name, fn in impls.items()}

    monkeypatch.setattr(backends, "_implemented", spy)
    args = make_inputs(dtype=torch.float32)
    monkeypatch.setenv("HYBRIDLAB_SCAN_BACKEND", "reference")
    selective_scan(*args)
    monkeypatch.setenv("HYBRIDLAB_SCAN_BACKEND", "fast")
    selective_scan(*args)
    monkeypatch.delenv("HYBRIDLAB_SCAN_BACKEND")
    selective_scan(*args)
    assert calls == ["reference", "fast", "fast"]


def test_unknown_or_unavailable_backend(monkeypatch):
    monkeypatch.setenv("HYBRIDLAB_SCAN_BACKEND", "nope")
    with pytest.raises(ConfigError, match=r"unknown scan backend 'nope' \(from \$HYBRIDLAB_SCAN_BACKEND\)"):
        selective_scan(*make_inputs(dtype=torch.float32))
    monkeypatch.delenv("HYBRIDLAB_SCAN_BACKEND")
    with pytest.raises(ConfigError, match="unknown scan backend 'bogus'"):
        resolve_backend("bogus")
    with pytest.raises(ConfigError, match="unknown scan backend"):
        with scan_backend("bogus"):
            pass
    # CPU tensors can never use the CUDA kernel, whether or not mamba-ssm is installed
    with pytest.raises(ConfigError, match="mamba_ssm") as err:
        selective_scan(*make_inputs(dtype=torch.float32), backend="mamba_ssm")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- parity of every backend with the reference

PARITY = [
    # (batch, dim, length, state, B/C form, D, z, bias, softplus, last)
    (2, 4, 1, 1, "bnl", True, True, True, True, True),
    (2, 4, 4, 16, "dn", False, False, False, False, False),
    (3, 6, 7, 3, "bgnl", True, False, True, True, True),
    (2, 4, 23, 16, "bnl", True, True, False, True, True),
    (1, 8, 33, 1, "dn", True, True, True, True, True),
    (2, 6, 37, 5, "bgnl", False, True, True, False, True),
    (2, 8, 50, 16, "bnl", True, False, True, True, False),
    (2, 8, 19, 1, "bnl", True, True, True, True, True),  # N=1 with input-dependent B, C: the compiled kernel too
]


def _backends_for(device: str) -> list[str]:
    return [name for name in available_backends(device) if name != "reference"]


@pytest.mark.parametrize("blocks", ["one block", "blocks of 3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", PARITY, ids=lambda c: "b{}d{}l{}n{}-{}".format(*c[:5]))
def test_backends_match_reference(case, dtype, blocks, monkeypatch):
    monkeypatch.setattr(blocked, "SHORT_LENGTH", 0)  # run the blocked core even for L=1 and L=4
    if blocks == "blocks of 3":
        small_blocks(monkeypatch)
    batch, dim, length, state, bc, with_D, with_z, with_bias, softplus, last = case
    args = make_inputs(batch, dim, length, state, bc, groups=2, dtype=dtype, seed=length,
                       with_D=with_D, with_z=with_z, with_bias=with_bias)
    want = run_scan(args, "reference", softplus, last)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    for backend in _backends_for("cpu"):
        if refuses(backend, bc, args):
            continue
        got = run_scan(args, backend, softplus, last)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            torch.testing.assert_close(g, w, **tol)


def test_plan_block_lengths(monkeypatch):
    monkeypatch.setattr(blocked_core, "BLOCK_ELEMENTS", 1 << 19)
    assert blocked_core.plan(64, 160, 196, 8) == 4  # 6 steps fit; 4 is the largest divisor of 196 in [4, 6]
    assert blocked_core.plan(64, 320, 49, 8) == 3  # 3 fit, no divisor of 49 in [2, 3]: padded to 51 steps
    assert blocked_core.plan(8, 256, 196, 16) == 14  # 16 fit, 14 divides 196
    assert blocked_core.plan(1, 8, 5, 1) == 5  # never longer than L
    assert blocked_core.plan(4096, 4096, 10, 64) == 1  # a slab over the budget still makes blocks of 1 step


@pytest.mark.parametrize("length,T", [(1, 1), (6, 3), (7, 3), (7, 7), (10, 4)])
def test_blocked_layout_round_trip(length, T):
    """(M, X, L) -> (nb, M, T, X) with zero padding -> back, and elementwise ops through the blocked view."""
    lay = blocked_core.Blocks(3, length, T)
    x = torch.randn(3, 5, length, generator=torch.Generator().manual_seed(length), dtype=torch.float64)
    blk = lay.to_blocks(x)
    assert blk.shape == (-(-length // T), 3, T, 5)
    for t in range(length):
        torch.testing.assert_close(blk[t // T, :, t % T, :], x[:, :, t], rtol=0, atol=0)
    assert (blk[-1, :, length - (lay.nb - 1) * T :] == 0).all()  # padding steps are zero
    assert torch.equal(lay.from_blocks(blk), x)
    y = torch.randn_like(x)
    prod = lay.write(lay.empty(5, x), torch.mul, blk, y)  # a blocked and an (M, X, L) source
    torch.testing.assert_close(lay.from_blocks(prod), x * y, rtol=0, atol=0)
    total = lay.read(torch.empty_like(x), torch.addcmul, blk, x, y)
    torch.testing.assert_close(total, torch.addcmul(x, x, y), rtol=0, atol=0)


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_blocked_block_layouts(steps, monkeypatch):
    """Every block layout (blocks of one step, divisors of L, padded last blocks, a single block) against the
    reference in float64, for every B/C form, with and without the options, with and without autograd
    (inference reuses two alternating state buffers instead of saving block-entry states)."""
    monkeypatch.setattr(blocked, "SHORT_LENGTH", 0)
    small_blocks(monkeypatch, steps)
    assert blocked.plan(4, 6, 37, 2) == steps  # 37 is prime: blocks of `steps`, the last one padded
    for length in (1, 3, 9, 23, 37):
        for bc in ("dn", "bnl", "bgnl"):
            for options in (True, False):
                args = make_inputs(4, 6, length, 2, bc, groups=3, seed=length, with_D=options, with_z=options,
                                   with_bias=options)
                for got, want in zip(run_scan(args, "blocked", softplus=options),
                                     run_scan(args, "reference", softplus=options)):
                    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
                with torch.no_grad():
                    out, last = selective_scan(*args, delta_softplus=options, return_last_state=True, backend="blocked")
                    ref_out, ref_last = selective_scan(*args, delta_softplus=options, return_last_state=True,
                                                       backend="reference")
                torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-9)
                torch.testing.assert_close(last, ref_last, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", IMPLEMENTATIONS)
def test_no_grad_and_retain_graph(backend):
    args = leaf(make_inputs(2, 4, 23, 3, seed=3))
    out = selective_scan(*args, delta_softplus=True, backend=backend)
    with torch.no_grad():
        again = selective_scan(*args, delta_softplus=True, backend=backend)
    assert torch.equal(out.detach(), again)
    g1 = torch.autograd.grad(out.sum(), args[0], retain_graph=True)[0]
    g2 = torch.autograd.grad(out.sum(), args[0])[0]
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("backend", IMPLEMENTATIONS)
def test_sees_in_place_changes_of_inputs(backend):
    args = leaf(make_inputs(2, 4, 9, 3, seed=4))
    u = args[0] * 1.0
    out = selective_scan(u, *args[1:], backend=backend)
    u.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


