"""Selective scan: the compiled CPU kernel (groups, chunks, strided views, threads, dispatch, build cache)."""

from __future__ import annotations

import pytest
import torch
from conftest import leaf, make_inputs, run_scan

import blocks.scan.compiled as compiled
import blocks.scan.fast as fast
from blocks.scan import available_backends, resolve_backend, selective_scan
from blocks.scan.backends import describe_backend
from hybridlab.errors import ConfigError

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
                for got, want in zip(run_scan(args, "compiled", softplus=options),
                                     run_scan(args, "reference", softplus=options)):
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
            results.append(run_scan(args, "compiled"))
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
    for got, want in zip(run_scan(args, "fast"), run_scan(args, "reference")):
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




@pytest.mark.subprocess
def test_loading_the_kernel_keeps_subnormals_for_the_rest_of_the_process() -> None:
    """Linked with -ffast-math, a library flushes subnormals to zero in the whole process when loaded."""
    import subprocess
    import sys

    script = ("import numpy as np, torch\nimport blocks.scan.compiled as c\nassert c.available(), c.status()\n"
              "print(float(np.array([1e-310])[0] * 1.0), float(torch.tensor([1e-310], dtype=torch.float64)[0] * 1.0))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["1e-310", "1e-310"], out.stdout + out.stderr
