"""The `compiled` backend, and the core of `fast`: `kernel.c`, built once per machine with the system C compiler.

Why: in PyTorch ops the scan is bound by passes over the (B, L, N, D) state volume (see `blocked_core`); a
loop over time that keeps the state in L1 runs at the speed of its arithmetic instead, 3-4x faster than
`blocked` forward and backward (`python -m blocks.bench_scan`). The kernel is plain C (no Python or torch
headers), so it builds in about a second; it is cached under $HYBRIDLAB_CACHE_DIR (default
~/.cache/hybridlab/scan) keyed by the source, the compiler, the flags and the CPU, and called through
ctypes. Work items (batch row, chunk of channels) run on torch's intra-op thread count, on torch's own
OpenMP threads (see THREADING). The kernel reads and writes strided (B, D, L) views, so the mixer's
transposed delta costs no copy, and outputs come back as (B, D, L) views of (B, L, D) memory.
Where no compiler works, `available()` is False, `status()` says why, and `fast` runs `blocked`.
The kernel takes input-dependent B and C only (see `supports`): `backend="compiled"` refuses (D, N) B/C
with one line, while `fast` sends them to `blocked`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from blocks.scan._common import WHERE, compute_dtype, explicit_scan
from hybridlab.errors import ConfigError

SOURCE = Path(__file__).with_name("kernel.c")
SOURCES = (SOURCE, SOURCE.with_name("scan_kernel.inc"))
FLAGS = ["-O3", "-ffast-math", "-march=native", "-fPIC"]  # compiling only
# Linking runs without -ffast-math: with it, gcc links crtfastmath.o into the library, whose constructor sets
# flush-to-zero / denormals-are-zero for the whole process on load (every later torch and numpy op would then
# lose subnormals). The kernel itself never produces subnormals (its exp returns 0 below -87).
LINK_FLAGS = ["-shared", "-fPIC"]
# -fopenmp first: the kernel then runs its items on the process's OpenMP runtime, which is torch's own
# libgomp (the loader reuses the already loaded libgomp.so.1), so its threads are the ones torch's ops
# just used and are still spinning on; separate threads would fight them for the cores. Where OpenMP
# cannot be linked, the kernel is built with -fopenmp-simd and called from a Python thread pool.
THREADING = (["-fopenmp"], ["-fopenmp-simd"])
# Steps per backward block: the block's states and decays (2 x STEPS x N x chunk values) stay in L2;
# the forward saves the state entering each block, so the backward's recomputation is one forward.
STEPS = 16
# State values per work item at most (N x chunk): the item's state stays in L1.
SLAB = 4096

Grads = tuple[Optional[Tensor], ...]


def cache_dir() -> Path:
    """Where built kernels are kept: $HYBRIDLAB_CACHE_DIR/scan, else $XDG_CACHE_HOME or ~/.cache, /hybridlab/scan."""
    root = os.environ.get("HYBRIDLAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hybridlab"
    )
    return Path(root) / "scan"


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _compiler() -> Optional[str]:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


@functools.lru_cache(maxsize=1)
def _build() -> tuple[Optional[ctypes.CDLL], str]:
    """(the loaded library, how it was obtained) or (None, why not)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        return None, f"no compiled scan for {platform.system()}/{platform.machine()}"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set $CC)"
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        parts = [*[p.read_text() for p in SOURCES], cc, version, *FLAGS, *LINK_FLAGS, repr(THREADING),
                 _cpu_signature()]
        key = hashlib.sha256("\0".join(parts).encode())
        lib = cache_dir() / f"scan-{key.hexdigest()[:16]}.so"
        if not lib.exists():
            lib.parent.mkdir(parents=True, exist_ok=True)
            errors = []
            for threading_flags in THREADING:
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
                os.close(fd)
                obj = tmp[:-3] + ".o"
                compile_cmd = [cc, *FLAGS, *threading_flags, "-c", "-o", obj, str(SOURCE)]
                link_cmd = [cc, *LINK_FLAGS, *threading_flags, "-o", tmp, obj, "-lm"]
                done = subprocess.run(compile_cmd, capture_output=True, text=True, timeout=300, check=False)
                if done.returncode == 0:
                    done = subprocess.run(link_cmd, capture_output=True, text=True, timeout=300, check=False)
                with contextlib.suppress(OSError):
                    os.unlink(obj)
                if done.returncode == 0:
                    os.replace(tmp, lib)  # atomic: concurrent workers never load a half-written file
                    break
                os.unlink(tmp)
                errors.append((done.stderr.strip().splitlines() or ["no output"])[0])
            else:
                return None, f"building {SOURCE.name} with {cc} failed: {errors[-1]}"
        dll = ctypes.CDLL(str(lib))
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"compiled scan unavailable: {err}"
    for name in ("scan_fwd_f32", "scan_fwd_f64", "scan_bwd_f32", "scan_bwd_f64", "scan_openmp"):
        getattr(dll, name).restype = ctypes.c_int
    dll.openmp = bool(dll.scan_openmp())  # asked once: `_run` reads it on every call
    threads = "OpenMP" if dll.openmp else "a Python thread pool"
    return dll, f"compiled ({lib}; threads: {threads})"


def available() -> bool:
    return _build()[0] is not None


def status() -> str:
    """One line: where the compiled kernel lives, or why `fast` falls back to `blocked`."""
    return _build()[1]


def supports(B: Tensor, C: Tensor, device: torch.device) -> bool:
    """The kernel takes input-dependent B and C ((B, N, L) or (B, G, N, L)) on CPU; the rest runs `blocked`."""
    return device.type == "cpu" and B.dim() >= 3 and C.dim() >= 3 and available()


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="hybridlab-scan")


def _arg(t: Optional[Tensor] | int):
    if isinstance(t, int):
        return ctypes.c_int(t)
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def _run(fn_name: str, dtype: torch.dtype, tensors: list, dims: tuple[int, ...], items: int) -> None:
    """Call the kernel over items [0, items) on torch's intra-op thread count."""
    dll = _build()[0]
    assert dll is not None
    fn = getattr(dll, f"{fn_name}_{'f64' if dtype == torch.float64 else 'f32'}")
    args = [_arg(t) for t in tensors] + [ctypes.c_int64(v) for v in dims]
    workers = max(1, min(torch.get_num_threads(), items))
    if dll.openmp or workers == 1:
        codes = [fn(*args, ctypes.c_int64(0), ctypes.c_int64(items), ctypes.c_int(workers))]
    else:
        cuts = [items * k // workers for k in range(workers + 1)]
        one = ctypes.c_int(1)
        futures = [
            _pool().submit(fn, *args, ctypes.c_int64(cuts[k]), ctypes.c_int64(cuts[k + 1]), one) for k in range(workers)
        ]
        codes = [f.result() for f in futures]
    if any(codes):
        raise MemoryError(f"selective_scan: the compiled kernel could not allocate its scratch ({fn_name})")


def _geometry(batch: int, dim: int, groups: int, state: int) -> tuple[int, int, int]:
    """(channels per item, chunks per batch row, work items).

    Wide chunks amortise the per-step work on B_t and C_t and keep the state slab (state x chunk values)
    in L1; they are narrowed when that would leave threads without items (small batches).
    """
    per_group = dim // groups
    chunk = min(per_group, max(16, SLAB // state))
    threads = torch.get_num_threads()
    while chunk > 16 and batch * groups * -(-per_group // chunk) < 2 * threads:
        chunk = max(16, chunk // 2)
    nchunk = groups * -(-per_group // chunk)
    return chunk, nchunk, batch * nchunk


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    """Compute dtype; u, delta, z in it with their strides (the kernel reads strided views); D and
    delta_bias contiguous; A as (N, D); B and C as (B, G, L, N)."""
    ct = compute_dtype(u, delta, A, B, C, D, z, delta_bias)

    def cast(t: Optional[Tensor], contiguous: bool = False) -> Optional[Tensor]:
        if t is None:
            return None
        return t.to(ct).contiguous() if contiguous else t.to(ct)

    Bc = B.to(ct) if B.dim() == 4 else B.to(ct).unsqueeze(1)
    Cc = C.to(ct) if C.dim() == 4 else C.to(ct).unsqueeze(1)
    return (
        ct,
        cast(u),
        cast(delta),
        A.to(ct).t().contiguous(),
        Bc.transpose(2, 3).contiguous(),
        Cc.transpose(2, 3).contiguous(),
        cast(D, True),
        cast(z),
        cast(delta_bias, True),
    )


VIEWS = ("delta", "u", "z", "o1", "out", "gout", "d_delta", "d_u", "g_z")  # kernel.c's order


def _strides(**views: Optional[Tensor]) -> Tensor:
    """The (batch, channel, step) strides of each (B, D, L) view, in kernel.c's order (zeros where absent)."""
    unknown = set(views) - set(VIEWS)
    assert not unknown, unknown
    rows = [list(views[k].stride()) if views.get(k) is not None else [0, 0, 0] for k in VIEWS]
    return torch.tensor(rows, dtype=torch.int64)


def _new_view(like: Tensor) -> Tensor:
    """A (B, D, L) output whose memory is (B, L, D): the kernel writes it in whole rows, and the mixer's
    next step (channels last, for the output projection) reads it without a transpose."""
    batch, dim, length = like.shape
    return like.new_empty(batch, length, dim).transpose(1, 2)


def compiled_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, need_saved: bool):
    """(out in u's dtype, last state (B, D, N) in the compute dtype, (saved, meta) for the backward or None)."""
    ct, uc, dc, At, Bt, Ct, Dc, zc, bc = _prepare(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    state, groups = At.shape[0], Bt.shape[1]
    chunk, _, items = _geometry(batch, dim, groups, state)
    out = _new_view(uc)
    o1 = _new_view(uc) if need_saved and zc is not None else None
    last = uc.new_empty(batch, state, dim)
    ckpt = uc.new_empty(batch, -(-length // STEPS), state, dim) if need_saved else None
    st = _strides(delta=dc, u=uc, z=zc, o1=o1, out=out)
    tensors = [dc, bc, int(delta_softplus), uc, At, Bt, Ct, Dc, zc, out, o1, last, ckpt, st]
    _run("scan_fwd", ct, tensors, (batch, length, dim, state, groups, STEPS, chunk), items)
    last = last.transpose(1, 2).contiguous()
    if not need_saved:
        return out.to(u.dtype), last, None
    return out.to(u.dtype), last, ([ckpt] + ([o1] if o1 is not None else []), (delta_softplus, o1 is not None))


def compiled_backward(inputs, saved, meta, g_out: Optional[Tensor], g_last: Optional[Tensor]) -> Grads:
    """Gradients for (u, delta, A, B, C, D, z, delta_bias) in their dtypes (None where an input is None)."""
    u, delta, A, B, C, D, z, delta_bias = inputs
    softplus, gated = meta
    ct, uc, dc, At, Bt, Ct, Dc, zc, bc = _prepare(*inputs)
    ckpt, o1 = saved[0], (saved[1] if gated else None)
    batch, dim, length = u.shape
    state, groups = At.shape[0], Bt.shape[1]
    chunk, nchunk, items = _geometry(batch, dim, groups, state)
    gout = None if g_out is None else g_out.to(ct)
    dlast = None if g_last is None else g_last.to(ct).transpose(1, 2).contiguous()
    d_delta, d_u = _new_view(uc), _new_view(uc)
    g_z = _new_view(uc) if zc is not None else None
    dA_part = uc.new_empty(batch, state, dim)
    dB_part = uc.new_empty(batch, nchunk, length, state)
    dC_part = torch.empty_like(dB_part)
    gD_part = uc.new_empty(batch, dim) if Dc is not None else None
    gbias_part = uc.new_empty(batch, dim) if bc is not None else None
    st = _strides(delta=dc, u=uc, z=zc, o1=o1, gout=gout, d_delta=d_delta, d_u=d_u, g_z=g_z)
    tensors = [dc, bc, int(softplus), uc, At, Bt, Ct, Dc, zc, o1, ckpt, gout, dlast]
    tensors += [d_delta, d_u, g_z, dA_part, dB_part, dC_part, gD_part, gbias_part, st]
    _run("scan_bwd", ct, tensors, (batch, length, dim, state, groups, STEPS, chunk), items)

    def per_group(part: Tensor, like: Tensor) -> Tensor:
        grad = part.view(batch, groups, nchunk // groups, length, state).sum(2).transpose(2, 3)
        return grad.squeeze(1) if like.dim() == 3 else grad

    def total(part: Optional[Tensor]) -> Optional[Tensor]:
        return None if part is None else part.sum(0)

    grads = (d_u, d_delta, dA_part.sum(0).t(), per_group(dB_part, B), per_group(dC_part, C), total(gD_part), g_z,
             total(gbias_part))
    return tuple(None if gr is None else gr.to(x.dtype) for gr, x in zip(grads, inputs))


# The bare kernel, for inputs `supports` accepts: `fast` (blocks.scan.fast) calls it after asking.
kernel_scan = explicit_scan("compiled", compiled_forward, compiled_backward)


def selective_scan_compiled(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    z: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """The `compiled` backend: the kernel, or a one-line ConfigError for inputs it cannot take.

    Refusing (rather than running `blocked` under the name `compiled`) keeps measurement records honest.
    """
    if not supports(B, C, u.device):
        if u.device.type != "cpu":
            why = f"CPU tensors, got {u.device.type}"
        else:
            why = f"input-dependent B and C, (B, N, L) or (B, G, N, L), got B {tuple(B.shape)} and C {tuple(C.shape)}"
        raise ConfigError(f"scan backend 'compiled' takes {why}; use 'fast' (which runs 'blocked' there) or 'blocked'", WHERE)
    return kernel_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
