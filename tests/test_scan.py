"""Selective scan: reference semantics, backend selection, parity, gradients, extremes and FLOP counting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from blocks.scan import available_backends, resolve_backend, scan_backend, scan_flops, selective_scan
from hybridlab.errors import ConfigError


def make_inputs(batch=2, dim=4, length=5, state=3, bc="bnl", groups=1, dtype=torch.float64, seed=0,
                with_D=True, with_z=True, with_bias=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    u = r(batch, dim, length)
    delta = r(batch, dim, length) * 0.5
    A = -torch.exp(r(dim, state) * 0.5)
    shapes = {"dn": (dim, state), "bnl": (batch, state, length), "bgnl": (batch, groups, state, length)}
    B, C = r(*shapes[bc]), r(*shapes[bc])
    D = r(dim) if with_D else None
    z = r(batch, dim, length) if with_z else None
    bias = r(dim) * 0.1 if with_bias else None
    return u, delta, A, B, C, D, z, bias


def scalar_scan(u, delta, A, B, C, D, z, bias, softplus):
    """An independent, element-by-element float64 loop (no einsum) to pin down the reference."""
    batch, dim, length = u.shape
    state = A.shape[1]
    out = torch.zeros(batch, dim, length, dtype=torch.float64)
    last = torch.zeros(batch, dim, state, dtype=torch.float64)

    def bc_at(T, b, d, n, t):
        if T.dim() == 2:
            return T[d, n]
        if T.dim() == 3:
            return T[b, n, t]
        return T[b, d // (dim // T.shape[1]), n, t]

    for b in range(batch):
        for d in range(dim):
            h = [0.0] * state
            for t in range(length):
                dt = float(delta[b, d, t]) + (float(bias[d]) if bias is not None else 0.0)
                if softplus:
                    dt = math.log1p(math.exp(dt))
                y = 0.0
                for n in range(state):
                    h[n] = math.exp(dt * float(A[d, n])) * h[n] + dt * float(bc_at(B, b, d, n, t)) * float(u[b, d, t])
                    y += h[n] * float(bc_at(C, b, d, n, t))
                if D is not None:
                    y += float(D[d]) * float(u[b, d, t])
                if z is not None:
                    zz = float(z[b, d, t])
                    y *= zz / (1.0 + math.exp(-zz))
                out[b, d, t] = y
            last[b, d] = torch.tensor(h, dtype=torch.float64)
    return out, last


@pytest.mark.parametrize("bc,groups", [("dn", 1), ("bnl", 1), ("bgnl", 2)])
@pytest.mark.parametrize("softplus", [False, True])
def test_reference_matches_scalar_loop(bc, groups, softplus):
    args = make_inputs(bc=bc, groups=groups, seed=1)
    out, last = selective_scan(*args, delta_softplus=softplus, return_last_state=True, backend="reference")
    want_out, want_last = scalar_scan(*args, softplus)
    torch.testing.assert_close(out, want_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, want_last, rtol=1e-10, atol=1e-10)


def test_reference_dtype_handling():
    u, delta, A, B, C, D, z, bias = make_inputs(dtype=torch.float32, seed=2)
    out, last = selective_scan(u.half(), delta, A, B, C, D, backend="reference", return_last_state=True)
    assert out.dtype == torch.float16 and last.dtype == torch.float32
    out64 = selective_scan(u.double(), delta, A, B, C, backend="reference")
    assert out64.dtype == torch.float64


@pytest.mark.parametrize(
    "bad",
    [
        dict(u=torch.zeros(2, 4)),
        dict(delta=torch.zeros(2, 4, 6)),
        dict(A=torch.zeros(5, 3)),
        dict(B=torch.zeros(2, 3, 6)),
        dict(C=torch.zeros(2, 3, 3, 5)),  # 4 channels not divisible into 3 groups
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


def test_backend_selection(monkeypatch):
    monkeypatch.delenv("HYBRIDLAB_SCAN_BACKEND", raising=False)
    assert "reference" in available_backends()
    assert resolve_backend("auto", "cpu") in available_backends("cpu")
    assert resolve_backend("reference", "cpu") == "reference"
    monkeypatch.setenv("HYBRIDLAB_SCAN_BACKEND", "reference")
    assert resolve_backend("auto", "cpu") == "reference"
    with scan_backend("auto"):
        assert resolve_backend("auto", "cpu") != "reference" or available_backends() == ["reference"]
    monkeypatch.setenv("HYBRIDLAB_SCAN_BACKEND", "nope")
    with pytest.raises(ConfigError, match="HYBRIDLAB_SCAN_BACKEND"):
        selective_scan(*make_inputs(dtype=torch.float32))
    with pytest.raises(ConfigError, match="unknown scan backend 'bogus'"):
        resolve_backend("bogus")
    if "mamba_ssm" not in available_backends():
        with pytest.raises(ConfigError, match="mamba_ssm"):
            selective_scan(*make_inputs(dtype=torch.float32), backend="mamba_ssm")


def test_scan_flops_formula():
    assert scan_flops(2, 32, 49, 16, with_D=False, with_z=False) == 9 * 2 * 49 * 32 * 16
    assert scan_flops(2, 32, 49, 16, with_D=True, with_z=True) == 9 * 2 * 49 * 32 * 16 + 2 * 2 * 32 * 49
