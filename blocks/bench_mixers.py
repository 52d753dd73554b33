"""Benchmark of the token mixers (not a test): `python -m blocks.bench_mixers [--threads 2] [--rounds 7]`.

Times forward+backward of every registered mixer at the MambaVision-T stage-3 shape (dim 320, 196 tokens,
batch 8 windows, 8 heads, one 14x14 window) on the CPU, each against a plain PyTorch reference of the same
mixer in the same process: the `reference` selective scan (a sequential loop) for the selective-scan
mixers, the sequential recurrence for `Md`. Calls are interleaved round by round and the median is kept,
so the ratios hold on a shared, noisy machine even when absolute times do not. `A` and `G` have no scan
and are timed for context only. Mixers not registered in this checkout are skipped with a note.

The `path` column says what ran, and a mixer on a slower fallback says so (for instance the blocked PyTorch
scan when the compiled C kernel does not build here). `mixer`-kind blocks are timed without the standard
block around them; `token`-kind blocks (`G`) are timed whole.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

import blocks.scan as scan_pkg
from blocks.registry import BlockContext, block_types, build_block
from blocks.scan import scan_backend
from blocks.scan.backends import describe_backend

SYMBOLS = ("M", "V", "S", "Md", "H", "A", "G")
GOAL = 10.0


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@contextlib.contextmanager
def reference_mode(module: nn.Module) -> Iterator[None]:
    """Run `module` on its plain references: the sequential selective scan, the sequential SSD."""
    ssd_modules = [m for m in module.modules() if hasattr(m, "chunk") and hasattr(m, "backend")]
    saved = [m.backend for m in ssd_modules]
    try:
        for m in ssd_modules:
            m.backend = "sequential"
        with scan_backend("reference"):
            yield
    finally:
        for m, backend in zip(ssd_modules, saved):
            m.backend = backend


class Recorded:
    """The selective-scan and SSD calls one forward pass makes: backends resolved, arguments kept for replay."""

    def __init__(self) -> None:
        self.scans: set[str] = set()
        self.scan_calls: list[tuple] = []
        self.ssd_calls: list[tuple[tuple, dict]] = []

    @property
    def has_ssd(self) -> bool:
        return bool(self.ssd_calls)


def record(module: nn.Module, x: torch.Tensor) -> Recorded:
    """Run one forward pass and note every `blocks.scan.selective_scan` and `blocks.ssd_scan.ssd` call."""
    import blocks.ssd as ssd_module

    rec = Recorded()
    real_resolve, real_impl, real_ssd = scan_pkg.resolve_backend, scan_pkg.backend_impl, ssd_module.ssd

    def resolve(backend: str, device: torch.device) -> str:
        name = real_resolve(backend, device)
        rec.scans.add(name)
        return name

    def impl(name: str) -> Callable:
        fn = real_impl(name)

        def call(*args):
            rec.scan_calls.append(tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args[:9]))
            return fn(*args)

        return call

    def ssd(*args, **kwargs):
        rec.ssd_calls.append((tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args), dict(kwargs)))
        return real_ssd(*args, **kwargs)

    scan_pkg.resolve_backend, scan_pkg.backend_impl, ssd_module.ssd = resolve, impl, ssd
    try:
        with torch.no_grad():
            module(x)
    finally:
        scan_pkg.resolve_backend, scan_pkg.backend_impl, ssd_module.ssd = real_resolve, real_impl, real_ssd
    return rec


def scan_only(rec: Recorded, reference: bool) -> Callable[[], None]:
    """Forward+backward of just the recorded scans (fast or plain reference), on copies of their inputs."""
    from blocks.ssd_scan import ssd

    def grad_copies(args: tuple) -> tuple:
        return tuple(
            a.clone().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a for a in args
        )

    scans = [grad_copies(args) for args in rec.scan_calls]
    ssds = [(grad_copies(args), kwargs) for args, kwargs in rec.ssd_calls]

    def run() -> None:
        total = 0.0
        with scan_backend("reference" if reference else "auto"):
            for args in scans:
                total = total + scan_pkg.selective_scan(*args).sum()
        for args, kwargs in ssds:
            total = total + ssd(*args, **{**kwargs, "backend": "sequential" if reference else "auto"}).sum()
        total.backward()

    return run


def describe_path(rec: Recorded) -> tuple[str, str]:
    """(what runs, a fallback warning or ""), for the table."""
    parts, warning = [], ""
    for name in sorted(rec.scans):
        label = describe_backend(name)
        parts.append(f"scan {label}")
        if label in ("fast:blocked", "blocked", "reference"):
            warning = f"SLOW PATH: scan {label} (the compiled C kernel is not available here)"
    if rec.has_ssd:
        from blocks.ssd_scan import ssd_path

        parts.append(f"ssd {ssd_path('cpu')}")
    return (", ".join(parts) or "no scan"), warning


def build_mixer(symbol: str, dim: int, heads: int, window: int) -> nn.Module:
    """The symbol's module with default options: the mixer alone for `mixer` kinds, else the whole block."""
    block_type = block_types()[symbol]
    block = build_block(symbol, block_type.defaults(), BlockContext(dim=dim, num_heads=heads, window_size=window))
    return block.mixer if block_type.kind == "mixer" else block


def fwd_bwd(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()

    return run


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def bench(batch: int, tokens: int, dim: int, heads: int, rounds: int, only: list[str] | None) -> list[str]:
    """Print and return the table lines."""
    window = round(tokens**0.5)
    registered = block_types()
    lines: list[str] = []

    def out(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    calls: dict[tuple[str, str], Callable[[], None]] = {}
    info: dict[str, tuple[str, str]] = {}
    for symbol in only or SYMBOLS:
        if symbol not in registered:
            out(f"note: {symbol} is not registered in this checkout; skipped")
            continue
        torch.manual_seed(0)
        module = build_mixer(symbol, dim, heads, window)
        x = torch.randn(batch, tokens, dim, requires_grad=True)
        rec = record(module, x)
        info[symbol] = describe_path(rec)
        calls[(symbol, "fast")] = fwd_bwd(module, x)
        if rec.scan_calls or rec.has_ssd:
            calls[(symbol, "scan")] = scan_only(rec, reference=False)
            calls[(symbol, "scan reference")] = scan_only(rec, reference=True)
            run_ref = fwd_bwd(module, x)

            def reference(run_ref: Callable[[], None] = run_ref, module: nn.Module = module) -> None:
                with reference_mode(module):
                    run_ref()

            calls[(symbol, "reference")] = reference
    times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for key, fn in calls.items():  # warm-up: builds kernels, fills caches
        fn()
    for _ in range(rounds):
        for key, fn in calls.items():
            times[key].append(timed(fn))
    out(f"{'':<6}{'whole mixer, fwd+bwd':^34}{'its scans alone, fwd+bwd':^34}")
    out(f"{'mixer':<6}{'ms':>10}{'reference ms':>14}{'ratio':>10}{'ms':>10}{'reference ms':>14}{'ratio':>10}  path")
    for symbol, (path, warning) in info.items():
        med = {mode: statistics.median(ts) for (sym, mode), ts in times.items() if sym == symbol}
        if "reference" not in med:
            out(f"{symbol:<6}{med['fast']:>10.1f}{'-':>14}{'-':>10}{'-':>10}{'-':>14}{'-':>10}  {path} (context only)")
        else:
            whole = med["reference"] / med["fast"]
            alone = med["scan reference"] / med["scan"]
            verdict = "" if alone >= GOAL else f"  (scan below the {GOAL:.0f}x goal)"
            out(
                f"{symbol:<6}{med['fast']:>10.1f}{med['reference']:>14.1f}{whole:>9.1f}x"
                f"{med['scan']:>10.1f}{med['scan reference']:>14.1f}{alone:>9.1f}x  {path}{verdict}"
            )
        if warning:
            out(f"       {warning}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds (default 7)")
    parser.add_argument("--batch", type=int, default=8, help="batch * windows (default 8)")
    parser.add_argument("--tokens", type=int, default=196, help="tokens per window, a square (default 196)")
    parser.add_argument("--dim", type=int, default=320, help="width (default 320)")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (default 8)")
    parser.add_argument("--only", default="", help="comma-separated symbols (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {now}")
    print(
        f"shape: batch {args.batch}, {args.tokens} tokens, dim {args.dim}, {args.heads} heads; "
        f"median of {args.rounds} interleaved rounds; default scan = {describe_backend('fast')}",
        flush=True,
    )
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    bench(args.batch, args.tokens, args.dim, args.heads, args.rounds, only)


if __name__ == "__main__":
    main()
