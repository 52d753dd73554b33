"""Selective scan: reference semantics, backend selection, parity, gradients, extremes and FLOP counting."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import blocks.scan.blocked as blocked
import blocks.scan.blocked_core as blocked_core
import blocks.scan.compiled as compiled
import blocks.scan.fast as fast
from blocks.scan import available_backends, resolve_backend, scan_backend, scan_flops, selective_scan
from blocks.scan.backends import describe_backend
from hybridlab.errors import ConfigError

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch=2, dim=4, length=5, state=3, bc="bnl", groups=2, dtype=torch.float64, seed=0,
                with_D=True, with_z=True, with_bias=True):
    """Seeded inputs in mamba-ssm's layout; B/C in form "dn" (D, N), "bnl" (B, N, L) or "bgnl" (B, G, N, L)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    u = r(batch, dim, length)
    delta = r(batch, dim, length) * 0.5
    A = -torch.exp(r(dim, state) * 0.5)
    shapes = {"dn": (dim, state), "bnl": (batch, state, length), "bgnl": (batch, groups, state, length)}
    B, C = r(*shapes[bc]), r(*shapes[bc])
    D = r(dim) if with_D else None
    z = r(batch, dim, length) if with_z else None
    bias = r(dim) * 0.1 if with_bias else None
    return u, delta, A, B, C, D, z, bias


def leaf(args):
    return [None if t is None else t.detach().clone().requires_grad_() for t in args]


def run(args, backend, softplus=True, last=True, weights_seed=7):
    """Forward + a seeded random-weighted backward; returns outputs followed by the input gradients."""
    args = leaf(args)
    res = selective_scan(*args, delta_softplus=softplus, return_last_state=last, backend=backend)
    outs = res if last else (res,)
    g = torch.Generator().manual_seed(weights_seed)
    loss = sum((o.double() * torch.randn(o.shape, generator=g, dtype=torch.float64)).sum() for o in outs)
    present = [t for t in args if t is not None]
    grads = torch.autograd.grad(loss, present)
    return list(outs) + list(grads)


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


# The two CPU implementations behind `fast`; tests that name one of them run it whatever `fast` picks.
IMPLEMENTATIONS = ["blocked", "compiled"]


def refuses(backend: str, bc: str, args) -> bool:
    """`compiled` by name takes input-dependent B/C only: check that it refuses (D, N) ones with one line."""
    if backend != "compiled" or bc != "dn":
        return False
    with pytest.raises(ConfigError, match=r"^selective_scan: scan backend 'compiled' takes input-dependent B and C"):
        selective_scan(*args, backend=backend)
    return True


def small_blocks(monkeypatch, steps: int = 3) -> None:
    """Make both cores cut time into blocks of about `steps` steps at every test shape, so that several
    blocks, block boundaries and (where `steps` does not divide L) padding are exercised: the blocked core's
    buffers, and the compiled kernel's backward blocks (it saves the state entering each)."""
    monkeypatch.setattr(compiled, "STEPS", steps)
    real_plan = blocked_core.plan

    def plan(batch, dim, length, state):
        monkeypatch.setattr(blocked_core, "BLOCK_ELEMENTS", steps * batch * dim * state)
        return real_plan(batch, dim, length, state)

    monkeypatch.setattr(blocked_core, "plan", plan)
    monkeypatch.setattr(blocked, "plan", plan)


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
    want = run(args, "reference", softplus, last)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    for backend in _backends_for("cpu"):
        if refuses(backend, bc, args):
            continue
        got = run(args, backend, softplus, last)
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
                for got, want in zip(run(args, "blocked", softplus=options), run(args, "reference", softplus=options)):
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


# ---------------------------------------------------------------- the compiled kernel


def test_compiled_kernel_builds_where_a_compiler_exists():
    """Where a C compiler is on PATH (CI, these machines) `fast` must be the compiled kernel, not silently the
    fallback: a broken build would otherwise only show up as slower studies."""
    if compiled._compiler() is None:
        pytest.skip("no C compiler here: fast runs blocked")
    assert compiled.available(), compiled.status()
    assert describe_backend("fast") == "fast:compiled"
    assert "compiled" in available_backends("cpu")


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 16])
def test_compiled_blocks_groups_and_channel_chunks(steps, monkeypatch):
    """Backward blocks of every length (1 step, divisors of L, a short last block, one block), B/C groups,
    and channels cut into several chunks per group (16 + 4 of a group of 20), against the reference in float64."""
    monkeypatch.setattr(compiled, "STEPS", steps)
    monkeypatch.setattr(compiled, "SLAB", 16 * 2)  # state 2: chunks of 16 channels
    assert compiled._geometry(4, 40, 2, 2) == (16, 4, 16)  # 2 groups x 2 chunks, 4 batch rows
    for length in (1, 3, 9, 37):
        for bc in ("bnl", "bgnl"):
            for options in (True, False):
                args = make_inputs(4, 40, length, 2, bc, groups=2, seed=length, with_D=options, with_z=options,
                                   with_bias=options)
                for got, want in zip(run(args, "compiled", softplus=options), run(args, "reference", softplus=options)):
                    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_compiled_narrows_chunks_to_feed_every_thread(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert compiled._geometry(64, 160, 1, 8) == (160, 1, 64)  # one chunk per batch row is plenty
    assert compiled._geometry(1, 160, 1, 8) == (40, 4, 4)  # batch 1: 4 chunks for 2 threads
    assert compiled._geometry(1, 16, 1, 8) == (16, 1, 1)  # never narrower than 16 channels


def test_compiled_reads_strided_views_and_returns_views():
    """The mixer passes delta as a (B, D, L) view of (B, L, D) memory and gets gradients back through
    views: for every layout of u, delta, z and the incoming gradient, the compiled kernel must give the
    reference's outputs and input gradients."""
    inputs = make_inputs(3, 8, 13, 4, "bnl", seed=21)
    layouts = {
        "contiguous": lambda t: t,
        "channels last": lambda t: t.transpose(1, 2).contiguous().transpose(1, 2),
        "sliced": lambda t: torch.cat([t, t], dim=2)[:, :, ::2],
        "expanded": lambda t: t[:1].expand_as(t),
    }
    weights = torch.randn(3, 8, 13, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def grads(backend, layout):
        base = leaf(inputs)
        u, delta, A, B, C, D, z, bias = base
        out, last = selective_scan(layout(u), layout(delta), A, B, C, D, layout(z), bias, True, True, backend=backend)
        loss = (out * layout(weights)).sum() + last.square().sum()
        return [out, last, *torch.autograd.grad(loss, base)]

    for name, layout in layouts.items():
        for got, want in zip(grads("compiled", layout), grads("reference", layout)):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"{name}: {m}")
    u, delta, A, B, C, D, z, bias = inputs
    out = selective_scan(u, delta, A, B, C, D, z, bias, True, backend="compiled")
    assert out.shape == u.shape and out.stride() == (8 * 13, 1, 8)  # a (B, D, L) view of (B, L, D) memory


def test_compiled_is_deterministic_across_thread_counts():
    """Items and their order of summation do not depend on the thread count: bitwise equal results."""
    args = leaf(make_inputs(8, 32, 29, 4, "bgnl", groups=2, dtype=torch.float32, seed=22))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(run(args, "compiled"))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_fast_picks_the_kernel_for_input_dependent_b_and_c(monkeypatch):
    if not compiled.available():
        pytest.skip(compiled.status())
    calls = []
    for name in ("kernel_scan", "selective_scan_blocked"):
        real = getattr(fast, name)
        monkeypatch.setattr(fast, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    for bc in ("bnl", "bgnl", "dn"):
        selective_scan(*make_inputs(2, 4, 9, 3, bc, seed=24), backend="fast")
    assert calls == ["kernel_scan", "kernel_scan", "selective_scan_blocked"]


def test_compiled_refuses_input_independent_b_and_c():
    """`compiled` by name never runs `blocked` under its name: (D, N) B/C get one line that says what to use."""
    if not compiled.available():
        pytest.skip(compiled.status())
    with pytest.raises(ConfigError) as err:
        selective_scan(*make_inputs(2, 4, 9, 3, "dn", seed=25), backend="compiled")
    message = str(err.value)
    assert message == ("selective_scan: scan backend 'compiled' takes input-dependent B and C, (B, N, L) or "
                       "(B, G, N, L), got B (4, 3) and C (4, 3); use 'fast' (which runs 'blocked' there) or 'blocked'")


def test_without_the_kernel_fast_runs_blocked(monkeypatch):
    monkeypatch.setattr(compiled, "_build", lambda: (None, "no C compiler found (set $CC)"))
    assert not compiled.available() and "compiled" not in available_backends("cpu")
    assert describe_backend("fast") == "fast:blocked"
    with pytest.raises(ConfigError, match=r"scan backend 'compiled' .* not available here: no C compiler found"):
        resolve_backend("compiled", "cpu")
    args = make_inputs(2, 4, 23, 3, seed=23)
    for got, want in zip(run(args, "fast"), run(args, "reference")):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_kernel_build_is_cached_and_a_failed_build_says_why(tmp_path, monkeypatch):
    if compiled._compiler() is None:
        pytest.skip("no C compiler here")
    monkeypatch.setenv("HYBRIDLAB_CACHE_DIR", str(tmp_path))
    compiled._build.cache_clear()
    try:
        dll, how = compiled._build()
        assert dll is not None and str(tmp_path / "scan") in how, how
        built = list((tmp_path / "scan").glob("scan-*.so"))
        assert len(built) == 1 and not list((tmp_path / "scan").glob("*.so.tmp*"))
        compiled._build.cache_clear()
        assert compiled._build()[0] is not None and list((tmp_path / "scan").glob("scan-*.so")) == built  # reused
        compiled._build.cache_clear()
        monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
        monkeypatch.setattr(compiled, "_compiler", lambda: "/bin/false")
        monkeypatch.setattr(compiled, "FLAGS", [*compiled.FLAGS, "-DNEW_KEY"])  # not the cached build
        dll, how = compiled._build()
        assert dll is None and how.startswith("building kernel.c with /bin/false failed"), how
    finally:
        compiled._build.cache_clear()


# ---------------------------------------------------------------- gradients


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
    want = run(args, "reference", softplus=True)
    for dtype in (torch.float32, torch.float64):
        cast = [t.to(dtype) for t in args]
        got = run(cast, backend, softplus=True)
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
