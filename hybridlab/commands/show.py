"""`hybridlab show PATTERN_OR_PRESET`: canonical pattern, per-stage table and parameter count."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import torch

from blocks.spec import ModelSpec
from hybridlab.models import add_model_args, resolve_spec, settings_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("show", help="describe a pattern or preset: canonical form, stages, parameters")
    parser.add_argument("target", metavar="PATTERN_OR_PRESET")
    parser.add_argument("--img-size", type=int, default=224, help="input side for the feature-map sizes (default 224)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_args(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from hybridlab.errors import ConfigError

    if args.img_size < 1:
        raise ConfigError(f"must be at least 1, got {args.img_size}", "--img-size")
    spec = resolve_spec(args.target, **settings_from_args(args))
    info = describe(spec, args.img_size)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(render(info))
    return 0


def describe(spec: ModelSpec, img_size: int) -> dict[str, Any]:
    """Everything `show` prints, as data: canonical, hash, params, and one entry per stage."""
    with torch.device("meta"):  # no memory, no init: counting the largest preset takes a moment
        model = spec.build()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stage_params = [0] * spec.parsed.num_stages
    for name, p in model.named_parameters():
        if name.startswith("levels.") and p.requires_grad:
            stage_params[int(name.split(".")[1])] += p.numel()
    side = img_size
    for _ in range(int(math.log2(spec.stem_stride))):
        side = (side + 1) // 2
    stages = []
    for i, stage in enumerate(spec.parsed.stages):
        token = any(b.block_type.is_token for b in stage)
        windows = sorted({b.option("window") or spec.window_size[i] for b in stage if b.block_type.is_token})
        entry: dict[str, Any] = {
            "stage": i + 1,
            "pattern": spec.parsed.stage_canonical(i),
            "depth": len(stage),
            "width": spec.stage_dims[i],
            "map": [side, side],
            "window": windows[0] if len(windows) == 1 else (windows or None),
            "params": stage_params[i],
        }
        if token:
            w = windows[0] if len(windows) == 1 else max(windows)
            padded = math.ceil(side / w) * w
            entry["tokens_per_window"] = w * w
            entry["windows_per_image"] = (padded // w) ** 2
            entry["padded_tokens"] = padded * padded - side * side
        stages.append(entry)
        if i < spec.parsed.num_stages - 1:
            side = (side + 1) // 2
    return {
        "canonical": spec.pattern,
        "hash": spec.arch_hash(),
        "params": params,
        "img_size": img_size,
        "stages": stages,
        "model": spec.to_dict(),
    }


def render(info: dict[str, Any]) -> str:
    lines = [
        f"canonical  {info['canonical']}",
        f"hash       {info['hash']}",
        f"params     {info['params']:,} ({info['params'] / 1e6:.2f} M) at {info['img_size']} px",
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
    return "\n".join(lines)
