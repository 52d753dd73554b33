"""`hybridlab bench MODEL_OR_PATTERN`: params, MACs, FLOPs, throughput, latency, training throughput, memory.

    hybridlab bench mambavision_t --batch-size 8 --device cpu --repeats 3 --vs convnext_tiny --json out.json

`--vs` measures baselines (timm names, presets or patterns) in the same run and prints
candidate / baseline ratios; their throughput is timed side by side, in `--repeats` interleaved
rounds, so a busy period slows every model alike. Bad input ends in one line (HybridlabError), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hybridlab.atomic import atomic_write
from hybridlab.errors import ConfigError
from hybridlab.measure.record import FIGURES, PRECISIONS, MeasureProfile


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="measure params, MACs, FLOPs, throughput, latency, training throughput and peak memory",
        description="Measure a preset, timm model or pattern (synthetic input on the device, warm-up, "
        "synchronised timed windows, median and IQR over repeats); --vs adds baselines and ratios.",
    )
    parser.add_argument("target", metavar="MODEL_OR_PATTERN", help="preset or timm name, or a pattern in quotes")
    d = MeasureProfile()
    parser.add_argument("--batch-size", default=str(d.batch_size), metavar="N", help=f"inference/train batch (default {d.batch_size})")
    parser.add_argument("--img-size", default=str(d.img_size), metavar="PX", help=f"input side (default {d.img_size})")
    parser.add_argument("--device", default="auto", metavar="cpu|cuda", help="default: cuda when available, else cpu")
    parser.add_argument("--precision", default=d.precision, metavar="|".join(PRECISIONS), help="default fp32")
    parser.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    parser.add_argument(
        "--compile", nargs="?", const="default", default=None, metavar="MODE", help="torch.compile (mode: default, max-autotune, ...)"
    )
    parser.add_argument("--repeats", default=str(d.repeats), metavar="N", help=f"timed windows (default {d.repeats})")
    parser.add_argument("--warmup-iters", default=str(d.warmup_iters), metavar="N", help=f"at least N warm-up calls (default {d.warmup_iters})")
    parser.add_argument("--warmup-s", default=str(d.warmup_s), metavar="S", help=f"and at least S seconds (default {d.warmup_s})")
    parser.add_argument("--window-s", default=str(d.window_s), metavar="S", help=f"target length of a timed window (default {d.window_s})")
    parser.add_argument("--iters", default=None, metavar="N", help="fixed iterations per window (default: fill --window-s)")
    parser.add_argument("--figures", default=",".join(FIGURES), metavar="LIST", help=f"subset of {','.join(FIGURES)}")
    parser.add_argument(
        "--threads", default=str(d.threads), metavar="N",
        help=f"torch intra-op threads while timing (default {d.threads}: robust on a shared CPU, see docs/benchmarks/threads.md)",
    )
    parser.add_argument("--tf32", default=None, metavar="on|off", help="set TF32 for fp32 matmul/conv (default: leave as is)")
    parser.add_argument("--vs", action="append", default=[], metavar="NAME,NAME", help="baselines measured in the same run (throughput side by side, in interleaved rounds)")
    parser.add_argument("--json", metavar="PATH", help="write one JSON object with every figure, env, baselines and ratios")
    parser.add_argument("--cache-dir", metavar="DIR", help="reuse figures measured before under the same profile and machine")
    from hybridlab.models import add_model_args  # the model flags are shared with `show`

    add_model_args(parser)
    parser.set_defaults(func=main)


def split_names(values: list[str]) -> list[str]:
    """NAME,NAME lists (repeatable); commas inside [...] options of a pattern do not split."""
    names: list[str] = []
    for value in values:
        depth, current = 0, []
        for ch in value:
            depth += ch == "["
            depth -= ch == "]"
            if ch == "," and depth <= 0:
                names.append("".join(current).strip())
                current = []
            else:
                current.append(ch)
        names.append("".join(current).strip())
    if any(not n for n in names):
        raise ConfigError(f"empty name in {', '.join(values)!r}", "--vs")
    return names


def _int(raw: Any, flag: str) -> int | None:
    if raw is None:
        return None
    try:
        return int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"expected an integer, got {raw!r}", flag) from None


def _float(raw: Any, flag: str) -> float:
    """A number; inf and nan parse here and are refused by the profile's range check, under this flag."""
    try:
        return float(str(raw).strip())
    except ValueError:
        raise ConfigError(f"expected a number, got {raw!r}", flag) from None


def profile_from_args(args: argparse.Namespace) -> MeasureProfile:
    tf32 = {None: None, "on": True, "off": False}
    if args.tf32 not in tf32:
        raise ConfigError(f"expected on or off, got {args.tf32!r}", "--tf32")
    profile = MeasureProfile(
        batch_size=_int(args.batch_size, "--batch-size"),
        img_size=_int(args.img_size, "--img-size"),
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        repeats=_int(args.repeats, "--repeats"),
        warmup_iters=_int(args.warmup_iters, "--warmup-iters"),
        warmup_s=_float(args.warmup_s, "--warmup-s"),
        window_s=_float(args.window_s, "--window-s"),
        iters=_int(args.iters, "--iters"),
        figures=tuple(f.strip() for f in args.figures.split(",") if f.strip()),
        threads=_int(args.threads, "--threads"),
        tf32=tf32[args.tf32],
    )
    try:
        return profile.resolved()
    except ConfigError as exc:  # name the flag, not the profile field
        raise ConfigError(exc.reason, exc.where.replace("measure.", "--").replace("_", "-")) from None


def write_json(path: str, data: dict[str, Any]) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, json.dumps(data, indent=2, default=str))
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}", "--json") from None


def main(args: argparse.Namespace) -> int:
    from hybridlab.measure.compare import compare
    from hybridlab.measure.table import format_report
    from hybridlab.models import settings_from_args

    profile = profile_from_args(args)
    settings = settings_from_args(args)
    baselines = split_names(args.vs)
    result = compare(
        args.target,
        baselines,
        profile,
        cache=args.cache_dir,
        progress=lambda msg: print(f"hybridlab bench: {msg} ...", file=sys.stderr, flush=True),
        model_kwargs=settings,
        side_by_side=True,  # with baselines, throughput is timed in interleaved rounds
    )
    records = [result.record, *result.baselines]
    print(format_report(records, result.ratios))
    warnings = result.warnings
    if warnings:
        print(f"hybridlab bench: warning: measured under contention, figures may be low and were not cached: "
              f"{'; '.join(warnings)}", file=sys.stderr)  # fmt: skip
    if args.json:
        write_json(args.json, result.to_dict())
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
