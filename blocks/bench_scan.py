"""Benchmark of the selective-scan backends (not a test): `python -m blocks.bench_scan [--threads 2] [--model]`.

Runs `reference`, `blocked` (pure PyTorch) and `fast` (the compiled kernel when it builds here, else
`blocked`; the first line says which) side by side in one process, on the MambaVision call (delta_bias
given, delta_softplus=True, D given, z=None, B/C of shape (B, N, L)), and prints milliseconds and the
ratios reference/fast and blocked/fast. Ratios from one process are the figures to quote: the machines are shared and noisy, so
absolute times move by several x between runs. The last line is
`fwd+bwd speedup: X (L=196), Y (L=49)` (X = the smaller ratio of the two L=196 shapes).

Each shape also gets a `passes` row: blocked's and fast's fwd+bwd times divided by the time of one
elementwise pass over the B*L*N*D state volume, made the way the blocked core makes its passes (one
`mul` into a reused cache-sized block buffer per block of time steps). The blocked core needs about 5
such passes forward and 14 backward plus per-op overhead, which bounds any PyTorch-op formulation; the
compiled loop makes no passes (the state stays in L1) and is bound by the vector exp instead.

`--indexing-ref` adds the loop indexed step by step as mamba-ssm's `selective_scan_ref` writes it (same
values, O(L^2) backward) for comparison with figures quoted against that function. `--grid` times the small
test-grid shapes, where per-call overhead decides. `--model` times whole models (training and inference
img/s) once per backend.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from blocks.scan import scan_backend, selective_scan
from blocks.scan.backends import describe_backend
from blocks.scan.blocked_core import Blocks, plan

# (name, batch*windows, dim, length, state)
SHAPES = [
    ("MambaVision-T stage 3", 64, 160, 196, 8),
    ("MambaVision-T stage 4", 64, 320, 49, 8),
    ("B=8 D=256 L=196 N=16", 8, 256, 196, 16),
]


def median_ms(fn: Callable[[], object], repeat: int, warmup: int) -> float:
    """Median wall time of `fn` in ms after `warmup` untimed calls."""
    return interleaved_ms({"fn": fn}, repeat, warmup)["fn"]


def interleaved_ms(fns: dict[str, Callable[[], object]], repeat: int, warmup: int) -> dict[str, float]:
    """Median wall time in ms of each function, timed in turns (A B A B ...) so that a burst of load
    from other processes falls on all of them rather than on whichever happened to run then."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def indexing_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """For comparison only: the loop written the way mamba-ssm's `selective_scan_ref` indexes it (B, C of
    shape (B, N, L)). Each `dA[:, :, i]` has a backward that builds a full-size (B, D, L, N) gradient, so
    its backward costs O(L^2) memory traffic; `reference` (unbind) computes the same values in O(L)."""
    delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    dBu = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    x = u.new_zeros((u.shape[0], u.shape[1], A.shape[1]))
    ys = []
    for i in range(u.shape[2]):
        x = dA[:, :, i] * x + dBu[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    out = torch.stack(ys, dim=2)
    return out if D is None else out + u * D[:, None]


def scan_inputs(batch: int, dim: int, length: int, state: int, seed: int = 0) -> list[torch.Tensor]:
    """MambaVision-like inputs: A = -exp(log(1..N)), D = 1, a small random delta bias, all requiring grad.
    Laid out as the mixer passes them: u (the conv1d output) contiguous (B, D, L), delta a (B, D, L) view
    of the dt projection's (B, L, D) output."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=g)
    delta = (torch.randn(batch, length, dim, generator=g) * 0.5).transpose(1, 2)
    A = -torch.arange(1, state + 1, dtype=torch.float32).repeat(dim, 1)
    B = torch.randn(batch, state, length, generator=g)
    C = torch.randn(batch, state, length, generator=g)
    D = torch.ones(dim)
    bias = torch.randn(dim, generator=g) * 0.1 - 2.0
    return [t.requires_grad_() for t in (u, delta, A, B, C, D, bias)]


def one_pass(batch: int, dim: int, length: int, state: int) -> Callable[[], None]:
    """One elementwise pass over the (B, L, N, D) state volume as the blocked core makes them: delta (x) A
    written into a reused (B, T, N, D) block buffer, block after block."""
    T = plan(batch, dim, length, state)
    g = torch.Generator().manual_seed(0)
    dl = torch.rand(Blocks(batch, length, T).nb, batch, T, dim, generator=g)
    At = -torch.rand(state, dim, generator=g)
    buf = torch.empty(batch, T, state, dim)

    def run() -> None:
        for blk in dl:
            torch.mul(blk.unsqueeze(2), At, out=buf)

    return run


def bench_scan(repeat: int, warmup: int, with_indexing: bool = False) -> None:
    ratios: dict[str, float] = {}
    print(f"{'shape':<26}{'backend':<11}{'fwd ms':>10}{'fwd+bwd ms':>13}")
    rows = ("reference", "blocked", "fast") + (("indexing",) if with_indexing else ())
    for name, batch, dim, length, state in SHAPES:
        inputs = scan_inputs(batch, dim, length, state)
        u, delta, A, B, C, D, bias = inputs
        fns: dict[str, Callable[[], object]] = {}
        for backend in rows:

            def call(backend: str = backend) -> torch.Tensor:
                if backend == "indexing":
                    return indexing_reference(u, delta, A, B, C, D, None, bias, True)
                return selective_scan(u, delta, A, B, C, D, None, bias, True, backend=backend)

            def fwd(call: Callable[[], torch.Tensor] = call) -> None:
                with torch.no_grad():
                    call()

            def fwd_bwd(call: Callable[[], torch.Tensor] = call) -> None:
                torch.autograd.grad(call().sum(), inputs)

            fns[f"{backend} fwd"] = fwd
            fns[f"{backend} fwd+bwd"] = fwd_bwd
        fns["pass"] = one_pass(batch, dim, length, state)
        ms = interleaved_ms(fns, repeat, warmup)
        for backend in rows:
            print(f"{name:<26}{backend:<11}{ms[backend + ' fwd']:>10.1f}{ms[backend + ' fwd+bwd']:>13.1f}")
        for base in (r for r in rows if r != "fast"):
            r_fwd = ms[f"{base} fwd"] / ms["fast fwd"]
            r_fb = ms[f"{base} fwd+bwd"] / ms["fast fwd+bwd"]
            label = {"reference": "ref/fast", "blocked": "blk/fast", "indexing": "idx/fast"}[base]
            print(f"{name:<26}{label:<11}{r_fwd:>9.1f}x{r_fb:>12.1f}x", flush=True)
        p_blk, p_fast = ms["blocked fwd+bwd"] / ms["pass"], ms["fast fwd+bwd"] / ms["pass"]
        print(f"{name:<26}{'passes':<11}{'':>10}{p_fast:>13.1f}   (fwd+bwd in passes of {ms['pass']:.2f} ms; "
              f"blocked {p_blk:.1f})", flush=True)
        ratios[name] = ms["reference fwd+bwd"] / ms["fast fwd+bwd"]
    x = min(ratios[n] for n, _, _, length, _ in SHAPES if length == 196)
    y = min(ratios[n] for n, _, _, length, _ in SHAPES if length == 49)
    print(f"fwd+bwd speedup: {x:.1f} (L=196), {y:.1f} (L=49)")


# The shapes of tests/test_scan.py's parity grid: (batch, dim, length, state, B/C form)
GRID = [
    (2, 4, 1, 1, "bnl"),
    (2, 4, 4, 16, "dn"),
    (3, 6, 7, 3, "bgnl"),
    (2, 4, 23, 16, "bnl"),
    (1, 8, 33, 1, "dn"),
    (2, 6, 37, 5, "bgnl"),
    (2, 8, 50, 16, "bnl"),
]


def bench_grid(repeat: int, warmup: int) -> None:
    """fwd+bwd of the backends on the small test-grid shapes (all options on): where per-call overhead,
    not arithmetic, decides."""
    slower = 0
    print(f"{'batch,dim,length,state,form':<30}{'reference ms':>14}{'blocked ms':>12}{'fast ms':>10}{'ref/fast':>10}")
    for batch, dim, length, state, form in GRID:
        g = torch.Generator().manual_seed(length)
        shapes = {"dn": (dim, state), "bnl": (batch, state, length), "bgnl": (batch, 2, state, length)}
        u, delta, z = (torch.randn(batch, dim, length, generator=g) for _ in range(3))
        A = -torch.rand(dim, state, generator=g) - 0.5
        B, C = (torch.randn(*shapes[form], generator=g) for _ in range(2))
        D, bias = torch.randn(dim, generator=g), torch.randn(dim, generator=g)
        inputs = [t.requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
        fns = {}
        for backend in ("reference", "blocked", "fast"):

            def fwd_bwd(backend: str = backend) -> None:
                out, last = selective_scan(*inputs, True, True, backend=backend)
                torch.autograd.grad(out.sum() + last.sum(), inputs)

            fns[backend] = fwd_bwd
        ms = interleaved_ms(fns, repeat, warmup)
        ratio = ms["reference"] / ms["fast"]
        slower += ratio < 0.95  # a 5% margin: identical code (L <= blocked.SHORT_LENGTH) reads 0.97x-1.03x
        label = f"{batch},{dim},{length},{state},{form}"
        print(f"{label:<30}{ms['reference']:>14.2f}{ms['blocked']:>12.2f}{ms['fast']:>10.2f}{ratio:>9.1f}x", flush=True)
    print(f"grid: fast more than 5% slower than reference on {slower} of {len(GRID)} shapes")


def _model_builders() -> dict[str, tuple[Callable[[], torch.nn.Module], int, int, int]]:
    """name -> (build, batch, image size, classes); fails with one line if the model code is missing."""
    try:
        import timm

        from blocks.spec import ModelSpec

    except Exception as err:  # the model code is another engineer's and may be missing or broken
        raise SystemExit(f"bench_scan --model: cannot build the models ({type(err).__name__}: {err})") from None
    if not timm.is_model("mambavision_t"):  # registered with timm by `import blocks` (blocks/presets.py)
        raise SystemExit("bench_scan --model: timm has no 'mambavision_t'; blocks/presets.py did not register it")

    def hybrid() -> torch.nn.Module:
        spec = ModelSpec.create(
            "C | C | M*2 A*2 | M A",
            dim=32,
            in_dim=16,
            num_heads=[1, 2, 4, 8],
            window_size=[8, 8, 8, 4],
            stem_stride=1,
            num_classes=10,
        )
        return spec.build()

    return {
        "mambavision_t 224px bs8": (lambda: timm.create_model("mambavision_t", num_classes=1000), 8, 224, 1000),
        "hybrid C|C|M*2 A*2|M A 32px bs64": (hybrid, 64, 32, 10),
    }


MODEL_BACKENDS = ("reference", "blocked", "fast")


def bench_models(repeat: int, warmup: int) -> None:
    """Training and inference img/s of mambavision_t (224 px, batch 8) and a small hybrid (32 px, batch 64),
    once per scan backend (switched with `scan_backend`), timed in turns."""
    print(f"{'model':<34}{'backend':<11}{'train img/s':>12}{'infer img/s':>12}")
    for name, (build, batch, px, classes) in _model_builders().items():
        try:
            model = build()
        except Exception as err:
            raise SystemExit(f"bench_scan --model: cannot build {name} ({type(err).__name__}: {err})") from None
        x = torch.randn(batch, 3, px, px, generator=torch.Generator().manual_seed(0))
        target = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(1))
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        fns: dict[str, Callable[[], object]] = {}
        for backend in MODEL_BACKENDS:

            def train_step(backend: str = backend) -> None:
                model.train()
                with scan_backend(backend):
                    opt.zero_grad(set_to_none=True)
                    torch.nn.functional.cross_entropy(model(x), target).backward()
                    opt.step()

            def infer(backend: str = backend) -> None:
                model.eval()
                with scan_backend(backend), torch.inference_mode():
                    model(x)

            fns[f"{backend} train"] = train_step
            fns[f"{backend} infer"] = infer
        ms = interleaved_ms(fns, repeat, warmup)
        for backend in MODEL_BACKENDS:
            train, infer_ = batch / ms[f"{backend} train"] * 1e3, batch / ms[f"{backend} infer"] * 1e3
            print(f"{name:<34}{backend:<11}{train:>12.1f}{infer_:>12.1f}")
        r_train = ms["reference train"] / ms["fast train"]
        r_infer = ms["reference infer"] / ms["fast infer"]
        print(f"{name:<34}{'ref/fast':<11}{r_train:>11.2f}x{r_infer:>11.2f}x", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m blocks.bench_scan", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument(
        "--repeat", type=int, default=None, help="timed repeats per measurement (median; default 5, 2 with --model)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--model", action="store_true", help="time whole models instead of the bare scan")
    parser.add_argument("--grid", action="store_true", help="time the small shapes of the test grid instead")
    parser.add_argument(
        "--indexing-ref",
        action="store_true",
        help="also time the loop indexed step by step as mamba-ssm's selective_scan_ref does (slow: O(L^2) backward)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fast = {describe_backend('fast')}")
    if args.model:
        bench_models(args.repeat or 2, args.warmup)
    elif args.grid:
        bench_grid(args.repeat or 20, max(args.warmup, 3))
    else:
        bench_scan(args.repeat or 5, args.warmup, args.indexing_ref)


if __name__ == "__main__":
    main()
