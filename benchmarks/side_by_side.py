"""Do throughput ratios measured side by side survive a busy machine? The quickstart's eight candidates.

Builds the quickstart study's seven layouts and its conv-only baseline (patterns, model settings and the
reference row from studies/quickstart.yaml), then measures their inference throughput side by side
(`hybridlab.measure.side_by_side.measure_side_by_side`: interleaved rounds, shuffled order per round)
three times: once with no load of ours, and twice while two busy-loop processes run. For every candidate
it prints the throughput relative to the reference row in each run (wall-clock img/s, and images per
CPU-second of the measuring process), whether the three runs agree within +-10% of their median, the
absolute figures, and which candidates had windows that the contention guard flagged.

    python benchmarks/side_by_side.py                       # about 3-6 minutes on 2 shared cores
    python benchmarks/side_by_side.py --rounds 3 --batch 32 --json out.json

Nothing is asserted: the output is the evidence (docs/benchmarks/side_by_side.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blocks.spec import ModelSpec  # noqa: E402
from hybridlab.measure.env import cpu_model  # noqa: E402
from hybridlab.measure.record import MeasureProfile  # noqa: E402
from hybridlab.measure.side_by_side import measure_side_by_side  # noqa: E402
from search_space.families import stage_layout  # noqa: E402

TOLERANCE = 0.10


def quickstart_candidates(path: Path) -> tuple[dict[str, ModelSpec], str, dict]:
    """{label: spec} for the quickstart's layouts and baselines, its reference label, and its measure section."""
    study = yaml.safe_load(path.read_text())
    model = dict(study["model"])
    stages = [s.strip() for s in model.pop("pattern").split("|")]
    depth = sum(int(tok.partition("*")[2] or 1) for tok in stages[-1].split())  # "M*2 A*2" -> 4 blocks
    specs = {}
    for family in study["search_space"]["layout"]["family"]:
        layout = " ".join(stage_layout(family, depth))
        specs[family] = ModelSpec.create(" | ".join([*stages[:-1], layout]), **model)
    for label, base in study["baselines"].items():
        specs[label] = ModelSpec.create(base["pattern"], **model)
    return specs, study["ablation"]["default_label"], study.get("measure", {})


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "quickstart.yaml"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per run")
    parser.add_argument("--batch", type=int, default=64, help="batch size (the quickstart measures at 128)")
    parser.add_argument("--window-s", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes in the loaded runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write every run's rows here")
    args = parser.parse_args()

    specs, reference, _ = quickstart_candidates(Path(args.study))
    profile = MeasureProfile(device="cpu", batch_size=args.batch, img_size=32, in_chans=3, num_classes=10,
                             warmup_iters=2, warmup_s=0.2, window_s=args.window_s, threads=args.threads,
                             figures=("throughput",))  # fmt: skip
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs = [("idle", 0), (f"{args.busy} busy loops (a)", args.busy), (f"{args.busy} busy loops (b)", args.busy)]
    results = []
    for n, (name, busy) in enumerate(runs):
        hogs = busy_loops(busy)
        try:
            time.sleep(1.0 if busy else 0.0)
            t0 = time.perf_counter()
            res = measure_side_by_side(specs, profile, rounds=args.rounds, reference=reference, seed=args.seed + n)
            wall = time.perf_counter() - t0
        finally:
            stop(hogs)
        load = os.getloadavg()[0]
        results.append((name, res, wall, load))
        print(f"{name}: {wall:.0f} s, load1 at end {load:.1f}, warnings: {len(res.warnings)}", file=sys.stderr, flush=True)

    labels = list(specs)
    print(f"# Side-by-side throughput of the quickstart's {len(labels)} candidates, idle and under load")
    print()
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; torch threads {args.threads}; {started}")
    print(f"Profile: batch {args.batch}, 32 px, fp32, {args.rounds} interleaved rounds per run, one window of "
          f"~{args.window_s} s per candidate per round; reference row: {reference}")  # fmt: skip
    print("Runs: " + "; ".join(f"{name} ({wall:.0f} s, load1 at end {load:.1f})" for name, _, wall, load in results))
    print()
    for key, title, absolute in (
        ("throughput_rel", "wall-clock throughput (img/s) relative to the reference", "throughput_img_s"),
        ("throughput_cpu_rel", "throughput per CPU-second of the measuring process, relative to the reference",
         "throughput_cpu_img_s"),
    ):  # fmt: skip
        print(f"## {title}")
        print()
        head = " | ".join(f"rel. {name}" for name, *_ in results)
        print(f"| candidate | {head} | spread | within +-10% | " + " | ".join(f"abs. {name}" for name, *_ in results) + " |")
        print("|---|" + "---:|" * len(results) + "---:|---|" + "---:|" * len(results))
        agree_all = True
        for label in labels:
            rows = [res.candidates[label].to_dict() for _, res, _, _ in results]
            rels = [row[key] for row in rows]
            mid = statistics.median(rels)
            ok = all(abs(r / mid - 1) <= TOLERANCE for r in rels)
            agree_all &= ok
            spread = max(rels) / min(rels) - 1
            cells = []
            for row in rows:
                if absolute == "throughput_img_s":
                    cells.append(f"{row[absolute]:,.0f} [{row['throughput_lo']:,.0f}-{row['throughput_hi']:,.0f}]")
                else:
                    cells.append(f"{row[absolute]:,.0f}")
            print(f"| {label} | " + " | ".join(f"{r:.3f}" for r in rels) + f" | {spread:.1%} | {'yes' if ok else 'NO'} | "
                  + " | ".join(cells) + " |")  # fmt: skip
        print()
        print(f"All candidates agree within +-10% across the three runs: {'yes' if agree_all else 'no'}")
        print()
    print("Windows the contention guard flagged (candidate: reason), per run:")
    for name, res, _, _ in results:
        print(f"- {name}: " + ("; ".join(res.warnings) if res.warnings else "none"))
    if args.json:
        Path(args.json).write_text(json.dumps([{"run": name, "wall_s": wall, "load1_end": load, **res.to_dict()}
                                               for name, res, wall, load in results], indent=1, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
