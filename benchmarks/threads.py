"""How many intra-op threads should a CPU throughput measurement use on a small, shared machine?

Measures one small hybrid's inference throughput (the quickstart's default layout, 32 px) with
torch intra-op threads 1 and 2, with OpenMP's default wait policy and with OMP_WAIT_POLICY=PASSIVE,
on an idle machine and while one or two busy-loop processes run. The wait policy must be set
before torch starts, so each setting lives in its own persistent worker process; the workers are
driven one at a time, interleaved in a shuffled order per round, so a slow period hits every
setting alike and the ratios between settings mean something even when absolute figures drift.

    python benchmarks/threads.py                  # 3 rounds, about 3 minutes on 2 cores
    python benchmarks/threads.py --rounds 2 --json out.json

Prints per setting and load: median img/s over rounds, its range, the process's CPU time as a
share of wall time x threads (what the contention guard watches), and the ratio to threads=1,
default policy, idle. No figure here is asserted anywhere: this is evidence for a default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERN = "C*2 | M*2 A*2"
SETTINGS = dict(dim=32, in_dim=16, num_heads=[1, 4], window_size=[8, 8], stem_stride=2, num_classes=10)
CONFIGS = [(1, "default"), (1, "PASSIVE"), (2, "default"), (2, "PASSIVE")]
LOADS = (0, 1, 2)


def worker(threads: int, batch: int, img: int, window_s: float, repeats: int) -> None:
    """Build the model once, then answer each 'go' on stdin with one JSON line of figures."""
    import torch

    sys.path.insert(0, str(ROOT))
    from blocks.spec import ModelSpec
    from hybridlab.measure.timing import time_windows

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ModelSpec.create(PATTERN, **SETTINGS).build().eval()
    x = torch.randn(batch, 3, img, img)

    def step() -> None:
        model(x)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        with torch.inference_mode():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            timing = time_windows(step, torch.device("cpu"), repeats=repeats, warmup_iters=2, warmup_s=0.2,
                                  window_s=window_s, iters=None, max_iters=200)  # fmt: skip
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        rates = timing.rates(batch)
        print(json.dumps({"img_s": statistics.median(rates), "cpu_share": cpu / (wall * threads),
                          "load1": os.getloadavg()[0]}), flush=True)  # fmt: skip


def start_worker(threads: int, policy: str, args: argparse.Namespace) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--worker", str(threads), "--batch", str(args.batch), "--img", str(args.img),
           "--window-s", str(args.window_s), "--repeats", str(args.repeats)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())  # wait until the model is built
    return proc


def ask(proc: subprocess.Popen) -> dict[str, float]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--img", type=int, default=32)
    parser.add_argument("--window-s", type=float, default=0.4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle-s", type=float, default=1.0, help="pause after starting busy loops / between runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write every sample here")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.batch, args.img, args.window_s, args.repeats)
        return 0

    from hybridlab.measure.env import cpu_model

    rng = random.Random(args.seed)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    workers = {cfg: start_worker(*cfg, args) for cfg in CONFIGS}
    samples: dict[tuple[int, str, int], list[dict[str, float]]] = {}
    try:
        for r in range(args.rounds):
            for load in rng.sample(LOADS, len(LOADS)):
                hogs = busy_loops(load)
                try:
                    time.sleep(args.settle_s)
                    for cfg in rng.sample(CONFIGS, len(CONFIGS)):
                        time.sleep(0.3)  # let the previous worker's spinning threads go to sleep
                        out = ask(workers[cfg])
                        samples.setdefault((*cfg, load), []).append(out)
                        print(f"round {r} load {load} threads {cfg[0]} {cfg[1]:>7}: {out['img_s']:8.1f} img/s, "
                              f"cpu {out['cpu_share']:.0%}, load1 {out['load1']:.1f}", file=sys.stderr, flush=True)  # fmt: skip
                finally:
                    stop(hogs)
    finally:
        for proc in workers.values():
            assert proc.stdin is not None
            proc.stdin.write("quit\n")
            proc.stdin.close()
            proc.wait(timeout=30)

    base = statistics.median(s["img_s"] for s in samples[(1, "default", 0)])
    print(f"# threads x OMP wait policy x busy loops: {PATTERN} {SETTINGS}, batch {args.batch}, {args.img} px")
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; {started}; {args.rounds} interleaved rounds")
    print()
    print("| threads | OMP_WAIT_POLICY | busy loops | img/s (median) | min-max | CPU share | vs 1 thread idle |")
    print("|---:|---|---:|---:|---|---:|---:|")
    for load in LOADS:
        for cfg in CONFIGS:
            got = samples[(*cfg, load)]
            rates = [s["img_s"] for s in got]
            share = statistics.median(s["cpu_share"] for s in got)
            med = statistics.median(rates)
            print(f"| {cfg[0]} | {cfg[1]} | {load} | {med:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | "
                  f"{share:.0%} | {med / base:.2f} |")  # fmt: skip
    if args.json:
        rows = [dict(threads=k[0], policy=k[1], busy=k[2], **s) for k, v in samples.items() for s in v]
        Path(args.json).write_text(json.dumps({"started": started, "samples": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
