"""`hybridlab show PATTERN_OR_PRESET`: canonical pattern, per-stage table, parameters and memory estimate.

torch and blocks are imported inside the functions: the CLI parser imports this module.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from hybridlab.models import add_model_args, resolve_spec, settings_from_args

if TYPE_CHECKING:
    from blocks.spec import ModelSpec


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("show", help="describe a pattern or preset: canonical form, stages, parameters")
    parser.add_argument("target", metavar="PATTERN_OR_PRESET")
    parser.add_argument("--img-size", type=int, default=224, help="input side for the feature-map sizes (default 224)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size for the memory estimate (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_args(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from hybridlab.errors import ConfigError

    if args.img_size < 1:
        raise ConfigError(f"must be at least 1, got {args.img_size}", "--img-size")
    if args.batch_size < 1:
        raise ConfigError(f"must be at least 1, got {args.batch_size}", "--batch-size")
    spec = resolve_spec(args.target, **settings_from_args(args))
    info = describe(spec, args.img_size, args.batch_size)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(render(info))
    return 0


def describe(spec: ModelSpec, img_size: int, batch_size: int = 1) -> dict[str, Any]:
    """Everything `show` prints, as data: canonical, hash, params, memory, and one entry per stage."""
    from blocks.preflight import available_bytes, estimate

    footprint = estimate(spec, img_size, batch_size)  # counts each distinct block once: no model is built
    block_notes = blocks_used(spec)
    sides = spec.feature_map_sides(img_size)
    stages = []
    for i, stage in enumerate(spec.parsed.stages):
        side = sides[i]
        token = any(b.block_type.is_token for b in stage)
        windows = sorted({b.option("window") or spec.window_size[i] for b in stage if b.block_type.is_token})
        entry: dict[str, Any] = {
            "stage": i + 1,
            "pattern": spec.parsed.stage_canonical(i),
            "depth": len(stage),
            "width": spec.stage_dims[i],
            "map": [side, side],
            "window": windows[0] if len(windows) == 1 else (windows or None),
            "params": footprint.stage_params[i],
        }
        if token:
            w = windows[0] if len(windows) == 1 else max(windows)
            padded = math.ceil(side / w) * w
            entry["tokens_per_window"] = w * w
            entry["windows_per_image"] = (padded // w) ** 2
            entry["padded_tokens"] = padded * padded - side * side
        stages.append(entry)
    memory = {
        "batch_size": batch_size,
        "param_bytes": footprint.param_bytes,
        "largest_activation_bytes": footprint.largest_activation_bytes,
        "inference_bytes": footprint.total(),
        "training_bytes": footprint.total(training=True),
        "available_bytes": available_bytes(),
        "summary": footprint.describe(),
    }
    return {
        "canonical": spec.pattern,
        "hash": spec.arch_hash(),
        "params": footprint.params,
        "img_size": img_size,
        "memory": memory,
        "stages": stages,
        "blocks": block_notes,
        "model": spec.to_dict(),
    }


# Blocks whose mixing runs on the selective scan, and those that run Mamba-2's SSD: `show` names the
# implementation this machine would use, so a slow fallback is never silent.
_SCAN_BLOCKS = ("M", "V", "S", "H")
_SSD_BLOCKS = ("Md",)


def blocks_used(spec: ModelSpec, device: str = "cpu") -> list[dict[str, str]]:
    """One entry per block symbol in the pattern: its help text and, for scan mixers, what runs here."""
    from blocks.registry import get_block_type

    symbols = sorted({b.block_type.symbol for stage in spec.parsed.stages for b in stage})
    out = []
    for symbol in symbols:
        entry = {"symbol": symbol, "help": get_block_type(symbol).help}
        if symbol in _SCAN_BLOCKS:
            from blocks.scan import resolve_backend
            from blocks.scan.backends import describe_backend

            runs = describe_backend(resolve_backend("auto", device))
            entry["runs"] = f"selective scan {runs}" + (" (slow fallback: no C compiler)" if runs == "fast:blocked" else "")
        elif symbol in _SSD_BLOCKS:
            from blocks.ssd_scan import ssd_path

            entry["runs"] = f"SSD {ssd_path(device)}"
        out.append(entry)
    return out


def render(info: dict[str, Any]) -> str:
    lines = [
        f"canonical  {info['canonical']}",
        f"hash       {info['hash']}",
        f"params     {info['params']:,} ({info['params'] / 1e6:.2f} M) at {info['img_size']} px",
        f"memory     {_memory_line(info['memory'])}",
        "",
    ]
    header = ("stage", "blocks", "width", "map", "window", "tokens", "windows", "params")
    rows = []
    for s in info["stages"]:
        window = s["window"]
        rows.append((
            str(s["stage"]),
            s["pattern"],
            str(s["width"]),
            f"{s['map'][0]}x{s['map'][1]}",
            "-" if window is None else (str(window) if not isinstance(window, list) else ",".join(map(str, window))),
            str(s.get("tokens_per_window", "-")),
            str(s.get("windows_per_image", "-")),
            f"{s['params'] / 1e6:.2f} M",
        ))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    if info.get("blocks"):
        lines.append("")
        width = max(len(b["symbol"]) for b in info["blocks"])
        for b in info["blocks"]:
            runs = f" [on cpu: {b['runs']}]" if b.get("runs") else ""
            lines.append(f"{b['symbol'].ljust(width)}  {b['help']}{runs}")
    return "\n".join(lines)


def _memory_line(memory: dict[str, Any]) -> str:
    from blocks.preflight import format_bytes

    line = memory["summary"]
    available = memory["available_bytes"]
    if available is not None and memory["inference_bytes"] > available:
        line += f"; more than the {format_bytes(available)} available here"
    return line
