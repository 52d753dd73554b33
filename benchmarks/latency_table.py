"""How well does a latency table predict a layout's throughput? Predicted against measured, side by side.

Builds the latency table (`hybridlab.measure.latency_table.LatencyTable`) of the narrow MambaVision-T-shaped
model of studies/pattern_search.yaml (its model settings; every block of stages 3-4 searchable with the
choices M and A: 2^12 = 4,096 layouts), then measures at least ten of those layouts whole, side by side
(`measure_side_by_side`: interleaved rounds, shuffled order per round): the six MambaVision Table 5 families
applied to both stages, plus seeded random layouts. For every layout it prints the predicted and the measured
img/s and the error, in wall-clock time and in CPU time of the measuring process (steadier on a busy machine,
with one thread), the Spearman rank correlation, and the same after calibrating the table's per-layout
constant overhead on a few of the random layouts (the error then counts only the other layouts).

    python benchmarks/latency_table.py                     # about 5-10 minutes on 2 shared cores
    python benchmarks/latency_table.py --rounds 3 --random 4 --table-json table.json

Nothing is asserted: the output is the evidence (docs/benchmarks/latency_table.md).
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blocks.spec import ModelSpec  # noqa: E402
from hybridlab.measure.env import cpu_model  # noqa: E402
from hybridlab.measure.latency_table import LatencyTable  # noqa: E402
from hybridlab.measure.record import MeasureProfile  # noqa: E402
from hybridlab.measure.side_by_side import measure_side_by_side  # noqa: E402
from search_space.families import TABLE5, stage_layout  # noqa: E402

CHOICES = ["M", "A"]


def base_spec(path: Path) -> ModelSpec:
    model = dict(yaml.safe_load(path.read_text())["model"])
    return ModelSpec.create(model.pop("pattern"), num_classes=10, **model)


def layouts(depths: list[int], n_random: int, seed: int, avoid: tuple = ()) -> dict[str, tuple[str, ...]]:
    """{label: per-position choices}: the Table 5 families on both searched stages, all-M and all-A, then
    `n_random` seeded random layouts different from those and from `avoid`."""
    out = {}
    for family in [*TABLE5, "mixer_only", "attn_only"]:
        out[family] = tuple(c for d in depths for c in stage_layout(family, d))
    rng = random.Random(seed)
    fixed = len(out)
    while len(out) < fixed + n_random:
        lay = tuple(rng.choice(CHOICES) for _ in range(sum(depths)))
        if lay not in out.values() and lay not in avoid:
            out[f"random_{len(out) - fixed + 1}"] = lay
    return out


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / den if den else float("nan")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def summary(name: str, predicted: dict[str, float], measured: dict[str, float]) -> str:
    errors = [abs(predicted[k] / measured[k] - 1) for k in measured]
    rho = spearman([predicted[k] for k in measured], list(measured.values()))
    return f"- {name}: median |error| {statistics.median(errors):.1%}, max {max(errors):.1%}; Spearman rho {rho:+.3f}"


def report(table: LatencyTable, labels: dict[str, tuple[str, ...]], rows: dict[str, dict], basis: str, reference: str) -> None:
    """Print one basis' comparison: predictions against the layouts timed whole in the table's own rounds,
    against the separate side-by-side session, and as ratios to the reference layout."""
    key, rel_key = ("throughput_img_s", "throughput_rel") if basis == "wall" else ("throughput_cpu_img_s", "throughput_cpu_rel")
    batch = table.batch_size
    same = {k: batch / table.whole(lay).median(basis) for k, lay in labels.items()}
    side = {k: rows[k][key] for k in labels}
    side_rel = {k: rows[k][rel_key] for k in labels}
    pred = {k: table.predict(lay, basis).img_s for k, lay in labels.items()}
    overhead = table.overhead_s[basis]
    table.overhead_s[basis] = 0.0
    raw = {k: table.predict(lay, basis).img_s for k, lay in labels.items()}
    table.overhead_s[basis] = overhead
    pred_rel = {k: pred[k] / pred[reference] for k in labels}
    n3 = len(table.stages[min(table.stages)])
    print("| layout | stage 3 | stage 4 | predicted | measured, table's rounds | error | measured, side by side | error "
          "| predicted / ref. | measured / ref. (side by side) | error |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, lay in labels.items():
        print(f"| {k} | {''.join(lay[:n3])} | {''.join(lay[n3:])} | {pred[k]:,.1f} | {same[k]:,.1f} | "
              f"{pred[k] / same[k] - 1:+.1%} | {side[k]:,.1f} | {pred[k] / side[k] - 1:+.1%} | {pred_rel[k]:.3f} | "
              f"{side_rel[k]:.3f} | {pred_rel[k] / side_rel[k] - 1:+.1%} |")  # fmt: skip
    print()
    print(f"Predicted = sum of entries + overhead ({overhead * 1e3:+.1f} ms per batch, fitted on the calibration layouts).")
    print()
    print(summary("against the same layouts timed whole in the table's rounds", pred, same))
    print(summary("same, plain sum without the overhead", raw, same))
    print(summary("against the separate side-by-side session", pred, side))
    print(summary(f"ratios to {reference} against the side-by-side ratios", pred_rel, side_rel))
    for name, values in (("table's rounds", same), ("side by side", side)):
        print(f"- measured spread across layouts ({name}): fastest / slowest = {max(values.values()) / min(values.values()):.3f}")
    if basis == "wall":
        iqr = [(rows[k]["throughput_hi"] - rows[k]["throughput_lo"]) / rows[k]["throughput_img_s"] for k in labels]
        print(f"- median IQR of one layout's side-by-side rounds: {statistics.median(iqr):.1%} of its median")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "pattern_search.yaml"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, for the table and for the layouts")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--window-s", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--random", type=int, default=4, help="random layouts besides the Table 5 families, all-M, all-A")
    parser.add_argument("--calibrate", type=int, default=2, help="other random layouts, timed whole in the table's "
                        "rounds, that the overhead is fitted on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table-json", help="also save the latency table here")
    parser.add_argument("--json", help="also write the side-by-side rows here")
    args = parser.parse_args()

    spec = base_spec(Path(args.study))
    profile = MeasureProfile(device="cpu", batch_size=args.batch, img_size=32, in_chans=3, num_classes=10,
                             warmup_iters=2, warmup_s=0.2, window_s=args.window_s, threads=args.threads,
                             figures=("throughput",))  # fmt: skip
    depths = [len(st) for st in spec.parsed.stages if any(b.block_type.is_token for b in st)]
    rng = random.Random(f"calibration-{args.seed}")
    calibration = [tuple(rng.choice(CHOICES) for _ in range(sum(depths))) for _ in range(args.calibrate)]
    labels = layouts(depths, args.random, args.seed, avoid=tuple(calibration))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = uptime()
    t0 = time.perf_counter()
    table = LatencyTable.measure(spec, None, CHOICES, profile, rounds=args.rounds, seed=args.seed,
                                 calibrate_on=calibration, check_on=list(labels.values()))  # fmt: skip
    table_s = time.perf_counter() - t0
    load_mid = uptime()
    print(f"table: {len(table.entries)} entries in {table_s:.0f} s; {load_mid}", file=sys.stderr, flush=True)
    if args.table_json:
        table.save(args.table_json)
    specs = {label: spec.with_settings(pattern=table.pattern(lay)) for label, lay in labels.items()}
    t0 = time.perf_counter()
    side = measure_side_by_side(specs, profile, rounds=args.rounds, reference="attn_last_half", seed=args.seed)
    side_s = time.perf_counter() - t0
    load_after = uptime()
    rows = {row["label"]: row for row in side.rows()}

    print(f"# Latency-table prediction against side-by-side measurement ({len(labels)} layouts)")
    print()
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; torch threads {args.threads}; {started}")
    print(f"Model: {spec.pattern} (dim {spec.dim}, in_dim {spec.in_dim}, heads {list(spec.num_heads)}, windows "
          f"{list(spec.window_size)}, stem stride {spec.stem_stride}); searchable: {len(table.positions)} blocks of "
          f"stages 3-4, choices {', '.join(table.choices)}")  # fmt: skip
    print(f"Profile: inference, fp32, batch {args.batch}, 32 px, {args.rounds} interleaved rounds, windows of "
          f"~{args.window_s} s; table: {len(table.entries)} entries in {table_s:.0f} s; layouts side by side: {side_s:.0f} s")
    print("Calibration layouts (timed whole in the table's rounds, not among the layouts below): "
          + ", ".join(f"`{table.pattern(c)}`" for c in calibration))
    print(f"Load: before the table `{load_before}`; after it `{load_mid}`; after the layouts `{load_after}`")
    print()
    for basis, title in (("wall", "Wall-clock img/s"), ("cpu", "Images per CPU-second of the measuring process")):
        print(f"## {title}")
        print()
        report(table, labels, rows, basis, "attn_last_half")
    print("## Table entries (median ms per batch; wall / CPU)")
    print()
    print("| part | input | wall ms | CPU ms | flagged |")
    print("|---|---|---:|---:|---|")
    for e in table.entries.values():
        print(f"| {e.key} | {'x'.join(map(str, e.input_shape))} | {e.median() * 1e3:.3f} | {e.median('cpu') * 1e3:.3f} | "
              f"{'yes' if e.noisy else ''} |")  # fmt: skip
    print()
    flagged = len(table.warnings)
    print(f"Contention guard: {flagged} of {len(table.entries)} table entries and {len(side.warnings)} of {len(labels)} "
          f"layouts had windows that stayed contended.")  # fmt: skip
    if args.json:
        meta = {"started": started, "load": [load_before, load_mid, load_after], "table_s": table_s, "side_s": side_s,
                "layouts": {k: list(v) for k, v in labels.items()}, "calibration": [list(c) for c in calibration]}
        Path(args.json).write_text(json.dumps({"meta": meta, "side_by_side": side.to_dict()}, indent=1, default=str))
    if args.table_json:
        table.save(args.table_json)  # with the fitted overheads
    return 0


if __name__ == "__main__":
    sys.exit(main())
