"""Plain-text and markdown tables of measured records (one column per model, ratio columns per baseline)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hybridlab.measure.record import MeasureRecord


def _num(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:,.{digits}f}"


def _spread(value: float | None, iqr: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" + (f" [IQR {iqr:,.{digits}f}]" if iqr is not None else "")


def _batch_note(rec: MeasureRecord, phase: str) -> str:
    back = rec.oom_backoff.get(phase)
    return f" (OOM: bs {back[0]}->{back[1]})" if back else ""


ROWS: list[tuple[str, Callable[[MeasureRecord], str], str | None]] = [
    ("params (M)", lambda r: _num(r.params, 1e6), "params"),
    ("MACs (G, Conv2d+Linear)", lambda r: _num(r.macs, 1e9), "macs"),
    ("FLOPs (G, all matmul/conv+attn+scan)", lambda r: _num(r.flops, 1e9), "flops"),
    ("  of which attention (G)", lambda r: _num(r.flops_breakdown.get("attention") if r.flops is not None else None, 1e9), None),
    ("  of which selective scan (G)", lambda r: _num(r.flops_breakdown.get("scan") if r.flops is not None else None, 1e9), None),
    ("inference (img/s)", lambda r: _spread(r.throughput_img_s, r.throughput_iqr_img_s) + _batch_note(r, "inference"), "throughput_img_s"),
    ("latency bs1 (ms, median)", lambda r: _spread(r.latency_ms, r.latency_iqr_ms, 2), "latency_ms"),
    ("train fwd+bwd+AdamW (img/s)", lambda r: _spread(r.train_throughput_img_s, r.train_throughput_iqr_img_s) + _batch_note(r, "train"), "train_throughput_img_s"),
    ("peak memory, inference (MB)", lambda r: _num(r.peak_mem_mb, 1, 1), "peak_mem_mb"),
    ("peak memory, train (MB)", lambda r: _num(r.train_peak_mem_mb, 1, 1), None),
]


def env_line(env: Mapping[str, Any]) -> str:
    """One line naming everything that changes the figures."""
    if env.get("device") == "cuda":
        where = f"cuda: {env.get('device_name')} (sm {env.get('cuda_capability')}, driver {env.get('driver')}, CUDA {env.get('cuda')})"
    else:
        where = f"cpu: {env.get('cpu_model')}, {env.get('threads')} threads"
        start, end = env.get("load_avg"), env.get("load_avg_end")
        if start:
            where += f", load {start[0]:g}" + (f" -> {end[0]:g}" if end else "") + f" on {env.get('cpu_count')} cores"
    tf32 = f"tf32 matmul {'on' if env.get('tf32_matmul') else 'off'}/cudnn {'on' if env.get('tf32_cudnn') else 'off'}"
    return (
        f"{where}; torch {env.get('torch')}, timm {env.get('timm')}, hybridlab {env.get('hybridlab')}; "
        f"{env.get('precision')}, {tf32}, channels_last {'on' if env.get('channels_last') else 'off'}, "
        f"compile {env.get('compile')}, scan {env.get('scan_backend')}"
        + (f", ssd {env['ssd_path']}" if env.get("ssd_path") not in (None, "none") else "")
        + (f"; SLOW PATHS: {'; '.join(env['slow_paths'])}" if env.get("slow_paths") else "")
    )


def format_table(
    records: Sequence[MeasureRecord], ratio_sets: Mapping[str, Mapping[str, float | None]] | None = None, markdown: bool = False
) -> str:
    """Rows are figures, columns are models; with `ratio_sets` ({baseline: {figure: ratio}}) a
    'first / baseline' column per baseline."""
    ratio_sets = ratio_sets or {}
    header = ["figure", *[r.model for r in records], *[f"{records[0].model} / {b}" for b in ratio_sets]]
    rows = [header]
    for title, fmt, key in ROWS:
        cells = [fmt(r) for r in records]
        if all(c == "-" for c in cells):
            continue
        ratio_cells = []
        for ratios in ratio_sets.values():
            value = ratios.get(key) if key else None
            ratio_cells.append("" if value is None else f"{value:.2f}x")
        rows.append([title, *cells, *ratio_cells])
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_report(records: Sequence[MeasureRecord], ratio_sets: Mapping[str, Mapping[str, float | None]] | None = None) -> str:
    """The table plus the settings and environment lines a reader needs to trust it."""
    first = records[0]
    prof = first.profile
    timing = first.timing.get("inference", {})
    unit = "interleaved rounds (side by side), one window" if timing.get("side_by_side") else "timed windows"
    lines = [
        f"batch {first.batch_size}, {first.img_size} px, {prof.get('repeats')} {unit}"
        + (f" of {timing.get('iters_per_window')} iterations" if timing else "")
        + f" (median [IQR]); warm-up >= {prof.get('warmup_iters')} iterations and >= {prof.get('warmup_s')} s",
        env_line(first.env) if first.env else "",
        "",
        format_table(records, ratio_sets),
    ]
    if first.peak_mem_method:
        lines.append(f"memory: {first.peak_mem_method}")
    noisy = [r for r in records if r.noisy]
    if noisy:
        lines.append("NOISY (measured under contention, not cached): " + "; ".join(f"{r.model}: {r.noisy_reason}" for r in noisy))
    if any(r.cached for r in records):
        lines.append("cached: " + ", ".join(r.model for r in records if r.cached))
    return "\n".join(line for line in lines if line is not None)


__all__ = ["env_line", "format_report", "format_table"]
