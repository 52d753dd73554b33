"""Selective scan: gradients, extreme values, FLOP counting and the benchmark's last line."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import IMPLEMENTATIONS, leaf, make_inputs, refuses, run_scan, small_blocks
from torch.utils.flop_counter import FlopCounterMode

from blocks.scan import scan_flops, selective_scan


@pytest.mark.parametrize("backend", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "bc,length,fast_mode",
    [("bnl", 7, False), ("bnl", 23, True), ("dn", 9, True), ("bgnl", 17, True)],
)
def test_gradcheck(bc, length, fast_mode, backend):
    args = leaf(make_inputs(2, 4, length, 3, bc, groups=2, seed=5))
    if refuses(backend, bc, args):
        return

    def f(*xs):
        return selective_scan(*xs, delta_softplus=True, return_last_state=True, backend=backend)

    assert torch.autograd.gradcheck(f, tuple(args), fast_mode=fast_mode)


@pytest.mark.parametrize("backend", IMPLEMENTATIONS)
@pytest.mark.parametrize("bc", ["bnl", "dn", "bgnl"])
def test_gradcheck_several_padded_blocks(bc, backend, monkeypatch):
    """Blocks of 3 steps over L=11 (4 blocks, the last one short): gradients across block boundaries."""
    small_blocks(monkeypatch)
    args = leaf(make_inputs(2, 4, 11, 3, bc, groups=2, seed=12))
    if refuses(backend, bc, args):
        return

    def f(*xs):
        return selective_scan(*xs, delta_softplus=True, return_last_state=True, backend=backend)

    assert torch.autograd.gradcheck(f, tuple(args), fast_mode=True)


@pytest.mark.parametrize("backend", IMPLEMENTATIONS)
def test_gradcheck_without_softplus_and_options(backend):
    u, delta, A, B, C, _, _, _ = make_inputs(2, 3, 11, 2, seed=6)
    delta = delta.abs()
    args = leaf([u, delta, A, B, C])

    def f(*xs):
        return selective_scan(*xs, return_last_state=True, backend=backend)

    assert torch.autograd.gradcheck(f, tuple(args))


# ---------------------------------------------------------------- numerical safety

EXTREMES = {
    # delta before softplus, and A, as softplus and -exp(A_log) can produce them
    "delta ~1e4": (1e4, -1.0),
    "delta ~1e-30": (-70.0, -1.0),
    "delta exactly 0": (-1000.0, -1.0),
    "A = -exp(10)": (0.0, -math.exp(10)),
    "A near 0": (0.0, -math.exp(-30)),
    "delta 1e4, A -exp(10)": (1e4, -math.exp(10)),
    "delta 1e-30, A near 0": (-70.0, -math.exp(-30)),
}


@pytest.mark.parametrize("backend", IMPLEMENTATIONS)
@pytest.mark.parametrize("blocks", ["one block", "blocks of 3"])
@pytest.mark.parametrize("name", list(EXTREMES))
def test_extreme_values_stay_finite(name, blocks, backend, monkeypatch):
    if blocks == "blocks of 3":
        small_blocks(monkeypatch)
    pre_delta, a_value = EXTREMES[name]
    u, delta, A, B, C, D, z, bias = make_inputs(2, 4, 41, 3, seed=8)
    delta = pre_delta + 0.5 * delta  # spread around the extreme value
    jitter = torch.rand(A.shape, generator=torch.Generator().manual_seed(0), dtype=A.dtype)
    A = torch.full_like(A, a_value) * (1 + 0.1 * jitter)
    args = (u, delta, A, B, C, D, z, bias)
    want = run_scan(args, "reference", softplus=True)
    for dtype in (torch.float32, torch.float64):
        cast = [t.to(dtype) for t in args]
        got = run_scan(cast, backend, softplus=True)
        for g in got:
            assert torch.isfinite(g).all(), f"{name}: non-finite output or gradient in {dtype}"
        if dtype == torch.float64:
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-8)


# ---------------------------------------------------------------- FLOP counting


def test_scan_flops_formula():
    assert scan_flops(2, 32, 49, 16, with_D=False, with_z=False) == 9 * 2 * 49 * 32 * 16
    assert scan_flops(2, 32, 49, 16, with_D=True, with_z=True) == 9 * 2 * 49 * 32 * 16 + 2 * 2 * 32 * 49


@pytest.mark.parametrize("backend", ["reference", "blocked", "fast"])
@pytest.mark.parametrize("with_D,with_z,bc", [(False, False, "bnl"), (True, False, "dn"), (True, True, "bgnl")])
def test_flop_counter_counts_exactly_the_analytic_term(backend, with_D, with_z, bc):
    batch, dim, length, state = 2, 32, 49, 16
    args = leaf(make_inputs(batch, dim, length, state, bc, groups=4, dtype=torch.float32, seed=9,
                            with_D=with_D, with_z=with_z))
    with FlopCounterMode(display=False) as counter:
        out = selective_scan(*args, delta_softplus=True, backend=backend)
    forward = scan_flops(batch, dim, length, state, with_D, with_z)
    assert counter.get_total_flops() == forward
    assert [str(op) for op in counter.get_flop_counts()["Global"]] == ["hybridlab.selective_scan"]
    # gradients through the counted call equal those of a normal call
    present = [t for t in args if t is not None]
    counted = torch.autograd.grad(out.sum(), present)
    normal = torch.autograd.grad(selective_scan(*args, delta_softplus=True, backend=backend).sum(), present)
    for c, n in zip(counted, normal):
        torch.testing.assert_close(c, n, rtol=1e-4, atol=1e-4)
    # a counted training step: the backward is one op at twice the forward term
    with FlopCounterMode(display=False) as counter:
        selective_scan(*args, delta_softplus=True, backend=backend).sum().backward()
    assert counter.get_total_flops() == 3 * forward


def test_flop_counter_counts_mixer_linear_layers_plus_scan():
    """The scan term adds to what FlopCounterMode counts for the ops around it (here one Linear)."""
    lin = torch.nn.Linear(8, 8, bias=False)
    u, delta, A, B, C, D, _, bias = make_inputs(2, 8, 10, 4, dtype=torch.float32, seed=10)
    with FlopCounterMode(display=False) as counter:
        x = lin(u.transpose(1, 2)).transpose(1, 2)
        selective_scan(x, delta, A, B, C, D, delta_bias=bias, delta_softplus=True)
    assert counter.get_total_flops() == 2 * (2 * 10) * 8 * 8 + scan_flops(2, 8, 10, 4, True, False)


# ---------------------------------------------------------------- benchmark script (format only, tiny shapes)


def test_bench_scan_prints_the_speedup_line_last(monkeypatch, capsys):
    import re

    import blocks.bench_scan as bench

    shapes = [("tiny L=196", 1, 4, 196, 2), ("tiny2 L=196", 1, 2, 196, 2), ("tiny L=49", 1, 4, 49, 2)]
    monkeypatch.setattr(bench, "SHAPES", shapes)
    threads = torch.get_num_threads()
    try:
        bench.main(["--threads", "1", "--repeat", "1", "--warmup", "0"])
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"fwd\+bwd speedup: \d+\.\d \(L=196\), \d+\.\d \(L=49\)", lines[-1])
    assert sum("ref/fast" in line for line in lines) == 3
