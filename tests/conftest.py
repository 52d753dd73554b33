"""Helpers shared by the study, worker, recovery and CLI tests: a tiny study, a way to run it in this
process or in a subprocess, and a throwaway PostgreSQL server."""

from __future__ import annotations

import gc
import glob
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import blocks.scan.blocked as blocked
import blocks.scan.blocked_core as blocked_core
import blocks.scan.compiled as compiled
from blocks.scan import selective_scan
from hybridlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# One torch thread in the tests and in the Python processes they start, whatever the order the tests run
# in (some measurement tests leave one thread behind) and however many pytest workers (`-n`) share the
# cores: threads of a tiny model gain nothing, and OpenMP threads spin-wait for each other when the cores
# are busy with another worker.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

PASSWORD = "s3cret-pw"
CLI = "import sys; from hybridlab.cli import main; sys.exit(main(sys.argv[1:]))"


def tiny_raw(**changes) -> dict:
    """Three tiny candidates on synthetic data: seconds per trial on one CPU core."""
    raw = {
        "name": "tiny",
        "data": {"name": "synthetic", "num_train": 64, "num_val": 32, "num_classes": 4, "img_size": 16, "batch_size": 16},
        "model": {
            "pattern": "C | M A", "dim": 8, "in_dim": 8, "num_heads": [1, 2], "window_size": [4, 4],
            "stem_stride": 2, "drop_path_rate": 0.0,
        },
        "search_space": {"layout": {"stages": [2], "family": ["attn_last_half", "attn_first_half", "mixer_only"]}},
        "train": {"epochs": 1, "lr": 0.01, "warmup_epochs": 0},
        "measure": {
            "device": "cpu", "batch_size": 4, "repeats": 1, "warmup_iters": 1, "warmup_s": 0, "iters": 2,
            "figures": ["compute", "throughput", "latency"],
        },
        "sampler": "grid",
        "seeds": [0],
    }
    for key, value in changes.items():
        node = raw
        *path, last = key.split("__")
        for part in path:
            node = node[part]
        node[last] = value
    return raw


def run(raw: dict, results: Path, **options):
    """Run the study `raw` in this process; returns the study and the lines it printed."""
    from studies.config import load_study_config
    from studies.runner import RunOptions, run_study

    lines: list[str] = []
    config = load_study_config("tiny.yaml", raw=raw)
    study = run_study(config, RunOptions(results_dir=results, echo=lines.append, **options)).study
    return study, lines


def states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def fake_train(model, datamodule, recipe, root_dir, seed, **kwargs) -> dict:
    """Stands in for training where a test is about the study, not the model: instant, fixed figures."""
    return {"top1": 50.0, "top5": 90.0, "val_loss": 1.0, "epochs": 1, "train_time_s": 0.0}


def write_study(tmp_path: Path, name: str = "tiny", **changes) -> Path:
    raw = tiny_raw(**changes)
    raw["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def lock_env(tmp_path: Path) -> dict[str, str]:
    return {"HYBRIDLAB_LOCK_DIR": str(tmp_path / "locks")}


# A study run that kills itself (SIGKILL) when training reaches epoch KILL_AT_EPOCH.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import lightning as L
    import studies.training
    from hybridlab.cli import main

    real = studies.training.train_and_evaluate

    class Kill(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == KILL_AT_EPOCH:
                os.kill(os.getpid(), signal.SIGKILL)

    def train(*args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), Kill()]
        return real(*args, **kwargs)

    studies.training.train_and_evaluate = train
    sys.exit(main(sys.argv[1:]))
    """
)


def python(script: str, *args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    """Start `python -c script args...` with output captured (one thread, so workers do not contend)."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=cwd, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path, monkeypatch):
    """Every test gets its own device-lock folder, so tests running side by side never wait on each other."""
    monkeypatch.setenv("HYBRIDLAB_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("HYBRIDLAB_STORAGE", raising=False)


@pytest.fixture(autouse=True)
def _freeze_survivors():
    """After each test, move what outlives it (modules imported on first use: Lightning, timm, Optuna,
    pandas) out of the cyclic collector's sight. The study runner does a full `gc.collect()` after every
    trial, and a full pass over a process with all of them loaded costs about a second; frozen objects
    are still freed by reference counting, and the test's own cyclic garbage is collected first."""
    yield
    gc.collect()
    gc.freeze()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on a free local port (Debian's `postgresql` package)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found or not found[-1]:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install -y postgresql)")
    bindir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="hybridlab-pg-"))
    os.chmod(base, 0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
       "--auth-host=scram-sha-256", "-E", "UTF8")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
       f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=60", "start")
    try:
        for sql in (f"CREATE USER hl WITH PASSWORD '{PASSWORD}'", "CREATE DATABASE hl OWNER hl"):
            pg(str(bindir / "psql"), "-h", str(base), "-p", str(port), "-U", "postgres", "-c", sql)
        yield f"postgresql://hl:{PASSWORD}@127.0.0.1:{port}/hl"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- selective-scan test helpers

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


def run_scan(args, backend, softplus=True, last=True, weights_seed=7):
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


